"""torch `F.interpolate(mode="bilinear" | "bicubic", align_corners=False, antialias=False)` on channels-last
arrays, as two small matrix products.

Needed where a reference resizes with torch rather than PIL: ViT position-embedding interpolation
(transformers/DINO) and VBench's frame transforms. `jax.image.resize` differs from both: its bicubic is the
Keys a = -0.5 kernel (torch uses a = -0.75) and it does not clamp source indices at the borders as torch does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_A = -0.75  # torch's cubic convolution coefficient


def _cubic(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    near = ((_A + 2) * t - (_A + 3)) * t * t + 1
    far = ((_A * t - 5 * _A) * t + 8 * _A) * t - 4 * _A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) float32 matrix M with `out = M @ in` along one axis."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if mode == "bilinear":
        src = np.maximum(src, 0.0)  # torch clamps negative source coordinates for linear modes
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = src - i0
        np.add.at(m, (rows, i0), 1 - w)
        np.add.at(m, (rows, i1), w)
    elif mode == "bicubic":
        i0 = np.floor(src).astype(np.int64)
        t = src - i0
        for k in (-1, 0, 1, 2):
            np.add.at(m, (rows, np.clip(i0 + k, 0, n_in - 1)), _cubic(t - k))
    else:
        raise ValueError(f"interpolation_matrix: unknown mode {mode!r}")
    return m.astype(np.float32)


def resize(x: jax.Array, size: tuple[int, int], mode: str) -> jax.Array:
    """Resize `(..., H, W, C)` to `size = (h, w)` in float32, as torch does on (N, C, H, W)."""
    h, w = x.shape[-3], x.shape[-2]
    mh = jnp.asarray(interpolation_matrix(h, size[0], mode))
    mw = jnp.asarray(interpolation_matrix(w, size[1], mode))
    hp = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ih,...hwc->...iwc", mh, x.astype(jnp.float32), precision=hp)
    return jnp.einsum("jw,...iwc->...ijc", mw, y, precision=hp)
