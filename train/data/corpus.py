"""TFDS builder `corpus`: a corpus built by scripts/build_corpus.py (the manual dir) -> training images.

Splits `train` and `heldout` (the corpus manifest's; trainers read `train` only). Each photograph gives
`views_per_photo` images at the configured size: view 0 is the whole picture (centre crop to the aspect),
the others are crops of 30-100% of the largest crop, anywhere in the picture, mirrored half the time,
drawn from (the photo's path, view) so a rebuild gives the same images. Each real clip gives its frames
at `fps`, every `interval`-th (the keyframe rule `interval`). The camera-path clips are for the video
model (train.data.windows reads `<corpus>/train/videos`), not repeated here: they are views of the same
photographs. Texts are empty (the demo has no describer).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from m3cvc_jax.errors import ConfigError
from train.data import camera_paths, common, corpus_manifest
from train.data.common import KeyframeConfig

MIN_VIEW_SCALE = 0.3


class CorpusConfig(KeyframeConfig):
    def __init__(self, *, views_per_photo: int = 16, **kw):
        if not isinstance(views_per_photo, int) or views_per_photo < 1:
            raise ConfigError(f"views_per_photo must be an integer >= 1, got {views_per_photo!r}")
        super().__init__(**kw)
        # The parent's name covers its settings; this one is added so other view counts rebuild.
        self.name = f"{self.name}_v{views_per_photo}"
        self.views_per_photo = views_per_photo


def photo_views(path: str, key: str, *, width: int, height: int, count: int) -> list[np.ndarray]:
    """`count` uint8 `(height, width, 3)` views of the photo at `path`; `key` seeds them."""
    image = camera_paths.working_copy(path, side=max(4 * height, 2 * width))
    largest = min(image.height, image.width * height / width)
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    views = []
    for v in range(count):
        rng = np.random.default_rng([seed, v])
        h = largest if v == 0 else largest * rng.uniform(MIN_VIEW_SCALE, 1.0)
        w = h * width / height
        cx = image.width / 2 if v == 0 else rng.uniform(w / 2, image.width - w / 2)
        cy = image.height / 2 if v == 0 else rng.uniform(h / 2, image.height - h / 2)
        view = camera_paths.render(image, camera_paths.View(cx, cy, h, 0.0), width, height)
        views.append(np.ascontiguousarray(view[:, ::-1]) if v and rng.integers(2) else view)
    return views


def examples(cfg: CorpusConfig, root: str, split: str):
    _, rows = corpus_manifest.read(root)
    for r in corpus_manifest.select(rows, split=split, kinds=("photo",)):
        path = os.path.join(root, r["path"])
        for v, image in enumerate(photo_views(path, r["path"], width=cfg.width, height=cfg.height,
                                              count=cfg.views_per_photo)):
            yield f"{r['path']}#{v}", {"image": image, "text": "", "video": r["path"], "frame": v}
    clips = [os.path.join(root, r["path"]) for r in corpus_manifest.select(rows, split=split, kinds=("clip",))]
    yield from common.examples(cfg, clips, root, lambda path, frame: "")


class Corpus(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    # tfds looks for checksum files next to the code through importlib_resources, a package it does not
    # install; a builder with no downloads has no checksums.
    code_path = None
    BUILDER_CONFIGS = [CorpusConfig()]
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Build the corpus with scripts/build_corpus.py and pass its folder."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=common.features(self.builder_config),
            description="Views of the demo corpus's photographs and frames of its real clips (scripts/build_corpus.py).",
        )

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        _, rows = corpus_manifest.read(root)
        # tfds refuses an empty split: a corpus built with nothing held out has only `train`.
        splits = [s for s in corpus_manifest.SPLITS if corpus_manifest.select(rows, split=s, kinds=("photo", "clip"))]
        if "train" not in splits:
            raise ConfigError(f"corpus {root} has no training photo or clip")
        return {split: examples(self.builder_config, root, split) for split in splits}

    def _generate_examples(self):  # pragma: no cover - _split_generators returns generators directly
        raise NotImplementedError
