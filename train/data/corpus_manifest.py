"""The corpus manifest: every file of a built corpus with its split, origin, licence and sha256.

`manifest.json` (what the builder and the trainers read) and `manifest.csv` (the same rows, for people)
sit at the corpus root. Paths are relative to it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os

from m3cvc_jax.errors import ConfigError

FIELDS = ("path", "split", "kind", "package", "version", "licence", "source", "sha256")
SPLITS = ("train", "heldout")
KINDS = ("photo", "clip", "camera")  # camera = a clip synthesised from a photo (train.data.camera_paths)
MANIFEST = "manifest.json"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_json(meta: dict, rows: list[dict]) -> str:
    return json.dumps({"meta": meta, "files": rows}, indent=1, sort_keys=True) + "\n"


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def read(root: str) -> tuple[dict, list[dict]]:
    """(meta, rows) of the corpus at `root`."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        meta, rows = data["meta"], data["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{root} is not a built corpus (cannot read {MANIFEST}: {e}); "
                          f"build it with scripts/build_corpus.py") from None
    for r in rows:
        if r.get("split") not in SPLITS or r.get("kind") not in KINDS:
            raise ConfigError(f"{path}: bad row {r.get('path')!r} (split {r.get('split')!r}, kind {r.get('kind')!r})")
    return meta, rows


def select(rows: list[dict], *, split: str, kinds: tuple[str, ...]) -> list[dict]:
    if split not in SPLITS:
        raise ConfigError(f"corpus split must be one of {', '.join(SPLITS)}, got {split!r}")
    return sorted((r for r in rows if r["split"] == split and r["kind"] in kinds), key=lambda r: r["path"])
