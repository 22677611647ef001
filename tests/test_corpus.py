"""The demo corpus: built deterministically with a complete manifest, held-out files never in the
training split, smooth camera-path clips of the right size, and the TFDS builder reading it.
Everything runs on a tiny corpus made here (two generated pictures and one short clip)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io.video import read_video
from tests.corpus_fixtures import SETTINGS, make_sources
from train.data import camera_paths, corpus_build, corpus_manifest, loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(str(tmp_path_factory.mktemp("sources")))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sources):
    dest = tmp_path_factory.mktemp("c") / "corpus"
    rows = corpus_build.build(str(dest), sources, SETTINGS, log=lambda *_: None)
    return str(dest), rows


def test_manifest_lists_every_file_with_origin_licence_and_checksum(corpus):
    dest, rows = corpus
    on_disk = {os.path.relpath(os.path.join(r, f), dest) for r, _, fs in os.walk(dest) for f in fs}
    assert on_disk - {p for p in on_disk if p.startswith("manifest.")} == {r["path"] for r in rows}
    for r in rows:
        assert all(r[f] for f in corpus_manifest.FIELDS), r
        assert r["sha256"] == corpus_manifest.sha256_file(os.path.join(dest, r["path"]))
        assert r["path"].startswith(r["split"] + "/")
    kinds = sorted((r["kind"], r["package"]) for r in rows)
    assert kinds.count(("camera", "test-backgrounds")) == 4 and kinds.count(("photo", "test-backgrounds")) == 2
    meta, read_back = corpus_manifest.read(dest)
    assert read_back == rows and meta["settings"]["seed"] == 3
    # The script prints the same rows.
    out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build_corpus.py"), dest, "--print-manifest"],
                         capture_output=True, text=True, check=True).stdout
    assert out == corpus_manifest.to_csv(rows)


def test_build_is_deterministic(corpus, sources, tmp_path):
    _, rows = corpus
    again = corpus_build.build(str(tmp_path / "again"), sources, SETTINGS, log=lambda *_: None)
    assert [(r["path"], r["sha256"]) for r in again] == [(r["path"], r["sha256"]) for r in rows]
    other = corpus_build.build(str(tmp_path / "seed4"), sources, corpus_build.Settings(**{**SETTINGS.__dict__, "seed": 4}),
                               log=lambda *_: None)
    cams = {r["path"]: r["sha256"] for r in rows if r["kind"] == "camera"}
    assert all(cams[r["path"]] != r["sha256"] for r in other if r["kind"] == "camera")


def test_heldout_photos_and_their_clips_stay_out_of_training(corpus, tmp_path):
    dest, rows = corpus
    held = [r for r in rows if r["split"] == "heldout"]
    assert {r["kind"] for r in held} == {"photo", "camera"}  # the rule held one of the two photos out
    held_photo = next(r for r in held if r["kind"] == "photo")
    stem = os.path.splitext(os.path.basename(held_photo["path"]))[0]
    assert all(r["split"] == "heldout" for r in rows if stem in r["path"])
    b = loader.prepare("corpus", manual_dir=dest, data_dir=str(tmp_path / "tfds"), width=32, height=24, fps=8.0,
                       keyframes="interval", interval=1)
    train = b.as_data_source(split="train")
    seen = {train[i]["video"].decode() if isinstance(train[i]["video"], bytes) else train[i]["video"]
            for i in range(len(train))}
    assert seen and not any(s.startswith("heldout/") for s in seen) and held_photo["path"] not in seen
    heldout = b.as_data_source(split="heldout")
    assert len(heldout) == 16  # the held-out photo's views


def test_builder_reads_views_and_clip_frames(corpus, tmp_path):
    dest, rows = corpus
    b = loader.prepare("corpus", manual_dir=dest, data_dir=str(tmp_path / "tfds"), width=32, height=24, fps=8.0,
                       keyframes="interval", interval=1)
    train = b.as_data_source(split="train")
    assert len(train) == 16 + 12  # one training photo x 16 views + the clip's 12 frames at 8 fps
    images = np.stack([train[i]["image"] for i in range(len(train))])
    assert images.shape == (28, 24, 32, 3) and images.dtype == np.uint8
    assert len({im.tobytes() for im in images}) == 28  # views differ
    batches = loader.Batches(train, batch_size=4, seed=0, fn=loader.image_to_model)
    assert batches[0]["image"].shape == (4, 24, 32, 3) and -1 <= batches[0]["image"].min()


def test_camera_clips_are_smooth_and_the_right_size(corpus):
    dest, rows = corpus
    for r in (r for r in rows if r["kind"] == "camera"):
        v = read_video(os.path.join(dest, r["path"]))
        assert v.frames.shape == (9, 40, 64, 3) and v.fps == 8
        f = v.frames.astype(np.float32)
        steps = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
        # A smooth move: every step is a small part of the whole move, and steps are largest mid-path.
        assert steps.max() < np.abs(f[-1] - f[0]).mean(), (r["path"], steps)
        assert steps[len(steps) // 2] >= steps[0]


def test_camera_path_stays_in_the_picture_and_eases_in_and_out():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = camera_paths.random_path(rng, 500, 300, 1.6)
        views = camera_paths.interpolate(a, b, 17, 1.6, 500, 300)
        for v in views:
            c, s = abs(np.cos(v.angle)), abs(np.sin(v.angle))
            hw = (v.height * 1.6 * c + v.height * s) / 2
            hh = (v.height * 1.6 * s + v.height * c) / 2
            assert hw <= v.cx + 1e-6 and v.cx + hw <= 500 + 1e-6 and hh <= v.cy + 1e-6 and v.cy + hh <= 300 + 1e-6
        cx = np.array([v.cx for v in views])
        speed = np.abs(np.diff(cx))
        assert speed[0] <= speed[len(speed) // 2] + 1e-9 and speed[-1] <= speed[len(speed) // 2] + 1e-9


def test_a_corpus_with_nothing_held_out_has_only_a_train_split(sources, tmp_path):
    settings = corpus_build.Settings(**{**SETTINGS.__dict__, "heldout_fraction": 0.0, "clips_per_photo": 0})
    dest = str(tmp_path / "c")
    corpus_build.build(dest, sources, settings, log=lambda *_: None)
    b = loader.prepare("corpus", manual_dir=dest, data_dir=str(tmp_path / "tfds"), width=32, height=24, fps=8.0,
                       keyframes="interval", interval=1)
    assert set(b.info.splits) == {"train"} and len(b.as_data_source(split="train")) == 2 * 16 + 12


def test_excluded_packages_are_refused(sources, tmp_path):
    bad = corpus_build.Source(sources[2].path, "vtest.avi", "clip", "opencv-doc", "4.6", "BSD", "x", split="train")
    with pytest.raises(ConfigError, match="opencv-doc.*generalisation"):
        corpus_build.build(str(tmp_path / "c"), sources + [bad], SETTINGS, log=lambda *_: None)
    with pytest.raises(ConfigError, match="kivy-examples"):
        corpus_build.debian_sources(str(tmp_path / "cache"), ["kivy-examples"])


def test_refuses_to_replace_a_folder_that_is_not_a_corpus(sources, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a corpus"):
        corpus_build.build(str(tmp_path / "mine"), sources, SETTINGS, log=lambda *_: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-2+

Files: 16.04/Bridge_by_Someone.jpg
Copyright: 2016 Someone
License: CC-BY-SA-4.0

Files: art/Stripes-*.png
License: CC0-1.0

Files: debian/*
License: Expat
"""


@pytest.mark.parametrize("path, licence", [
    ("/usr/share/backgrounds/Bridge_by_Someone.jpg", "CC-BY-SA-4.0"),  # source folder not installed
    ("/usr/share/backgrounds/art/Stripes-Dark.png", "CC0-1.0"),
    ("/usr/share/backgrounds/Other.jpg", "GPL-2+"),  # `debian/*` does not cover the package's files
])
def test_licence_comes_from_the_matching_copyright_stanza(path, licence):
    assert corpus_build.deb_licence(DEP5, path) == licence


def test_licence_of_an_unstructured_copyright_file():
    text = "Image Authors:\n - a.jpg:\n   Copyright 2011 X\n   Licensed under Creative Commons Attribution-ShareAlike 3.0 License.\n"
    assert corpus_build.deb_licence(text, "/usr/share/backgrounds/a.jpg") == \
        "Licensed under Creative Commons Attribution-ShareAlike 3.0 License"
    with pytest.raises(ConfigError, match="no licence"):
        corpus_build.deb_licence("nothing here", "/x.jpg")


def test_rebuild_replaces_only_what_the_old_manifest_listed(sources, tmp_path):
    dest = tmp_path / "c"
    corpus_build.build(str(dest), sources, SETTINGS, log=lambda *_: None)
    (dest / "notes.txt").write_text("mine")
    notes = []
    rows = corpus_build.build(str(dest), sources, SETTINGS, log=notes.append)
    assert all((dest / r["path"]).is_file() for r in rows) and not (dest / "notes.txt").exists()
    assert (tmp_path / "c.old" / "notes.txt").read_text() == "mine"  # kept, with nothing else beside it
    assert [p.name for p in (tmp_path / "c.old").iterdir()] == ["notes.txt"]
    assert any("not deleted" in n for n in notes)
    assert not (tmp_path / "c.building").exists()
