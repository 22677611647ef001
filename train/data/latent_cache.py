"""Batches whose images are replaced by a frozen encoder's latents, computed once per example.

The image stages after the VAE see a fixed set of examples (the corpus's views are drawn when the
dataset is built), and the VAE is frozen, so encoding every example once equals encoding every batch:
the cached batches are the uncached ones with `image` replaced by `latent`, in the same order (the same
grain shuffle of the same seed).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from train.data.loader import Batches


def cached(batches: Batches, encode: Callable[[Any, np.ndarray], Any], params: Any, *, seed: int,
           chunk: int = 32) -> Batches:
    """`batches` (whose map gives `image`) with `image` -> `latent = encode(params, images)`."""
    source, fn = batches.source, batches.fn
    items: list[dict] = []
    for start in range(0, len(source), chunk):
        examples = [fn(source[i]) if fn else source[i] for i in range(start, min(start + chunk, len(source)))]
        images = np.stack([e["image"] for e in examples])
        # Padded to whole chunks: one compiled shape.
        padded = np.concatenate([images, np.zeros((chunk - len(images), *images.shape[1:]), images.dtype)])
        latents = np.asarray(encode(params, padded))[:len(images)]
        items += [{**{k: v for k, v in e.items() if k != "image"}, "latent": z} for e, z in zip(examples, latents)]
    return Batches(items, batch_size=batches.batch_size, seed=seed)
