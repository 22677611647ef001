"""Build (once) and read a keyframe dataset: `tfds.data_source` + grain, random access by step.

Batch `s` is the items `[s*B, (s+1)*B)` of a grain shuffle (reshuffled every epoch from the seed), so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import grain
import numpy as np
import tensorflow_datasets as tfds

from m3cvc_jax.errors import ConfigError
from train.data.common import KeyframeConfig
from train.data.corpus import Corpus, CorpusConfig
from train.data.msrvtt import Msrvtt
from train.data.video_folder import VideoFolder

BUILDERS = ("video_folder", "msrvtt", "corpus")


def builder(name: str, *, data_dir: str, **config) -> tfds.core.DatasetBuilder:
    if name == "video_folder":
        cls = VideoFolder
    elif name == "msrvtt":
        cls = Msrvtt
    elif name == "corpus":
        return Corpus(config=CorpusConfig(**config), data_dir=data_dir)
    else:
        raise ConfigError(f"unknown dataset {name!r}; one of {', '.join(BUILDERS)}")
    return cls(config=KeyframeConfig(**config), data_dir=data_dir)


def prepare(name: str, *, manual_dir: str, data_dir: str, **config) -> tfds.core.DatasetBuilder:
    if not manual_dir or not os.path.isdir(manual_dir):
        raise ConfigError(f"dataset {name}: manual dir {manual_dir!r} does not exist")
    b = builder(name, data_dir=data_dir, **config)
    b.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir)),
    )
    return b


class Batches:
    """`batches[step]` -> dict of stacked numpy arrays; `fn` maps one example (after decoding)."""

    def __init__(self, source, *, batch_size: int, seed: int, fn: Callable[[dict], dict] | None = None):
        if len(source) == 0:
            raise ConfigError("the training dataset is empty")
        self.source = source  # unshuffled, unmapped: what a cache of derived features is built from
        ds = grain.MapDataset.source(source).shuffle(seed=seed % 2**32)
        self.fn = fn
        self.dataset = ds.map(fn) if fn is not None else ds
        self.batch_size, self.num_examples = batch_size, len(source)

    def __getitem__(self, step: int) -> dict[str, Any]:
        items = [self.dataset[j] for j in range(step * self.batch_size, (step + 1) * self.batch_size)]
        return {k: np.stack([it[k] for it in items]) for k in items[0]}


def image_to_model(example: dict) -> dict:
    """uint8 HWC -> float32 in [-1, 1] (the networks' range)."""
    return {**example, "image": example["image"].astype(np.float32) / 127.5 - 1.0}
