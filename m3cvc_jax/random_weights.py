"""Deterministic random weights for models without a checkpoint (the `tiny` preset, tests, trainers).

Drawn on the host with integer arithmetic only (numpy PCG64 bits scaled by exactly representable
factors), so every machine builds the same bytes and the same fingerprint — a `tiny` bitstream decodes
anywhere from the seed in its header. The module is traced abstractly (`weights.abstract_module`) and filled from numpy: eager JAX
initialisers compile one program per parameter shape, which costs far more than a tiny model's forward.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.weights import abstract_module, path_key


def _uniform(rng: np.random.Generator, shape, bound: float) -> np.ndarray:
    # 24 random bits -> a float64 in (-1, 1) exactly, one IEEE multiply, one rounding to float32: the same
    # bytes on every platform (no libm, no platform-specific normal sampler).
    bits = rng.integers(0, 1 << 24, size=shape, dtype=np.int64)
    return (((bits - (1 << 23)) + 0.5) / float(1 << 23) * bound).astype(np.float32)


def init_value(key: str, shape: tuple[int, ...], rng: np.random.Generator, std: float | None = None) -> np.ndarray:
    """Zeros for biases and running means, ones for norm scales and variances; otherwise uniform with
    PyTorch's default bound 1/sqrt(fan_in), or with standard deviation `std` if given (transformers'
    `initializer_range` style). Embeddings have std 0.02; a VQ codebook is uniform in (-1, 1)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf in ("bias", "mean", "running_mean") or not shape:
        return np.zeros(shape, np.float32)
    if leaf in ("scale", "var", "running_var"):
        return np.ones(shape, np.float32)
    if std is not None:
        return _uniform(rng, shape, std * 3**0.5)
    if key == "embedding" or key.endswith("codebook.embedding"):
        return _uniform(rng, shape, 1.0)  # codewords on the scale of post-encoder outputs
    if leaf == "embedding":
        return _uniform(rng, shape, 0.02 * 3**0.5)
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
    return _uniform(rng, shape, 1.0 / max(fan_in, 1) ** 0.5)


def fill_random(modules: dict[str, Any], seed: int, name: str, *, std: float | None = None) -> None:
    """Overwrite every variable of `modules` ({key prefix: module}) with deterministic values for
    (seed, component name), drawn in the sorted order of their flat keys."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, zlib.crc32(name.encode())])
    flat = []
    for prefix, module in modules.items():
        flat += [(prefix + path_key(p), v) for p, v in nnx.to_flat_state(nnx.state(module))]
    for key, var in sorted(flat, key=lambda kv: kv[0]):
        abstract = var.get_value()
        var.set_value(jnp.asarray(init_value(key, tuple(abstract.shape), rng, std), dtype=abstract.dtype))


def random_module(build: Callable[[Any], Any], seed: int, name: str, *, std: float | None = None):
    """`build(rngs)` (an NNX module constructor) with deterministic random weights for (seed, name)."""
    model = abstract_module(build)
    fill_random({"": model}, seed, name, std=std)
    return model
