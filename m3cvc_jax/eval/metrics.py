"""Frame-quality metrics in JAX: PSNR, MS-SSIM, LPIPS, CLIP-sim. Jittable and batched over frames.

Inputs are channels-last RGB frames `(..., H, W, 3)` (any leading batch/time axes), either `uint8`
(0..255) or floating point in [-1, 1] (the networks' range); the dtype decides which. Every metric returns
one value per frame, shape `(...)`; a video's score is the mean over its frames (what the runner reports).

- `psnr`: 10·log10(255² / MSE) over all pixels and the three channels of a frame.
- `ms_ssim`: Wang et al. 2003, 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), Gaussian
  window 11 / σ 1.5, valid filtering, K1 = 0.01, K2 = 0.03, data range 255, 2×2 average pooling between
  scales (odd sizes padded by one zero, as pytorch_msssim does); computed per channel, then averaged over
  channels. Needs frames whose shorter side exceeds 160 pixels.
- `lpips_distance`: the `nn.lpips.LPIPS` port (load converted weights with `load_lpips`).
- `dists_distance`: the `nn.dists.DISTS` port (load converted weights with `load_dists`).
- `clip_similarity`: per-frame cosine of image embeddings from any `embed_fn` (the CLIP port
  through `clip_embedder`), so the metric itself depends on no particular network.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel
from m3cvc_jax.nn.dists import DISTS, DISTSConfig
from m3cvc_jax.nn.lpips import LPIPS, LPIPSConfig
from m3cvc_jax.weights import load_module

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_K1, _K2 = 0.01, 0.03


def to_unit255(x: jax.Array) -> jax.Array:
    """Frames as float32 in [0, 255]: uint8 as is, floats read as [-1, 1]."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32)
    return (jnp.clip(x.astype(jnp.float32), -1.0, 1.0) + 1.0) * 127.5


def to_signed(x: jax.Array) -> jax.Array:
    """Frames as float32 in [-1, 1] (what the networks take)."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 127.5 - 1.0
    return x.astype(jnp.float32)


def psnr(a: jax.Array, b: jax.Array, *, max_db: float = 100.0) -> jax.Array:
    """Per-frame PSNR in dB; identical frames give `max_db` instead of infinity."""
    mse = jnp.mean((to_unit255(a) - to_unit255(b)) ** 2, axis=(-3, -2, -1))
    return jnp.minimum(10.0 * jnp.log10(255.0**2 / jnp.maximum(mse, 1e-12)), max_db)


def mean_colour_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest per-channel error of the frame-mean colour, averaged over frames, in 8-bit levels (N, H, W, 3):
    a picture coming back in the wrong colours (issue 22) shows here while PSNR only drops."""
    ma = np.asarray(a, np.float64).mean(axis=(1, 2))
    mb = np.asarray(b, np.float64).mean(axis=(1, 2))
    return float(np.abs(ma - mb).mean(axis=0).max())


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _band(n: int, win: np.ndarray) -> np.ndarray:
    """(n - k + 1, n) matrix whose product with a signal is its valid correlation with `win`."""
    k = win.size
    m = np.zeros((n - k + 1, n), np.float32)
    for i in range(n - k + 1):
        m[i, i : i + k] = win
    return m


def _blur(x: jax.Array, win: np.ndarray) -> jax.Array:
    """Separable valid Gaussian filtering of `(N, H, W, C)`, as two banded matmuls (XLA CPU runs these far
    faster than single-channel convolutions)."""
    hp = jax.lax.Precision.HIGHEST
    kh = jnp.asarray(_band(x.shape[1], win))
    kw = jnp.asarray(_band(x.shape[2], win))
    y = jnp.einsum("ih,nhwc->niwc", kh, x, precision=hp)
    return jnp.einsum("jw,niwc->nijc", kw, y, precision=hp)


def _ssim_terms(x, y, win):
    """Per-image, per-channel mean SSIM and contrast-structure term `(N, C)` at one scale."""
    c1, c2 = (_K1 * 255.0) ** 2, (_K2 * 255.0) ** 2
    mx, my = _blur(x, win), _blur(y, win)
    sxx = _blur(x * x, win) - mx * mx
    syy = _blur(y * y, win) - my * my
    sxy = _blur(x * y, win) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return jnp.mean(ssim, axis=(1, 2)), jnp.mean(cs, axis=(1, 2))


def _avg_pool2(x):
    # pytorch_msssim pads odd sides by one zero and counts it in the mean.
    ph, pw = x.shape[1] % 2, x.shape[2] % 2
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return s / 4.0


def ssim(a: jax.Array, b: jax.Array, *, win_size: int = 11, sigma: float = 1.5) -> jax.Array:
    """Single-scale per-frame SSIM (mean over channels)."""
    lead = a.shape[:-3]
    x = to_unit255(a).reshape((-1,) + a.shape[-3:])
    y = to_unit255(b).reshape((-1,) + b.shape[-3:])
    s, _ = _ssim_terms(x, y, gaussian_window(win_size, sigma))
    return jnp.mean(s, axis=-1).reshape(lead)


def ms_ssim(a: jax.Array, b: jax.Array, *, weights=MS_SSIM_WEIGHTS, win_size: int = 11, sigma: float = 1.5) -> jax.Array:
    """Per-frame MS-SSIM (see the module docstring for the exact definition)."""
    levels = len(weights)
    if min(a.shape[-3:-1]) <= (win_size - 1) * 2 ** (levels - 1):
        raise ValueError(f"MS-SSIM needs frames larger than {(win_size - 1) * 2 ** (levels - 1)} px, got {a.shape[-3:-1]}")
    lead = a.shape[:-3]
    x = to_unit255(a).reshape((-1,) + a.shape[-3:])
    y = to_unit255(b).reshape((-1,) + b.shape[-3:])
    win = gaussian_window(win_size, sigma)
    w = jnp.asarray(weights, jnp.float32)
    mcs = []
    for level in range(levels):
        s, cs = _ssim_terms(x, y, win)
        if level < levels - 1:
            mcs.append(jax.nn.relu(cs))
            x, y = _avg_pool2(x), _avg_pool2(y)
    stack = jnp.stack(mcs + [jax.nn.relu(s)], axis=0)  # (levels, N, C)
    val = jnp.prod(stack ** w[:, None, None], axis=0)
    return jnp.mean(val, axis=-1).reshape(lead)


def lpips_distance(model, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-frame LPIPS with an `nn.lpips.LPIPS` model (lower is better)."""
    return model(to_signed(a), to_signed(b))


def load_lpips(directory: str, *, dtype=jnp.float32):
    """An LPIPS model from a converted checkpoint (`python -m convert_weights lpips ...`)."""
    return load_module(directory, family="lpips",
                       build=lambda cfg, rngs: LPIPS(LPIPSConfig(**cfg), dtype=dtype, rngs=rngs))


def dists_distance(model, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-frame DISTS with an `nn.dists.DISTS` model (lower is better)."""
    return model(to_signed(a), to_signed(b))


def load_dists(directory: str, *, dtype=jnp.float32):
    """A DISTS model from a converted checkpoint (`python -m convert_weights dists ...`)."""
    return load_module(directory, family="dists",
                       build=lambda cfg, rngs: DISTS(DISTSConfig(**cfg), dtype=dtype, rngs=rngs))


EmbedFn = Callable[[jax.Array], jax.Array]


def clip_similarity(embed_fn: EmbedFn, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-frame cosine between `embed_fn` embeddings of original and decoded frames.

    embed_fn: `(N, H, W, 3)` float frames in [-1, 1] -> `(N, D)` image embeddings (it does its own resizing
    and normalisation, as CLIP's processor would).
    """
    lead = a.shape[:-3]
    x = to_signed(a).reshape((-1,) + a.shape[-3:])
    y = to_signed(b).reshape((-1,) + b.shape[-3:])
    e = embed_fn(jnp.concatenate([x, y], axis=0)).astype(jnp.float32)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    n = x.shape[0]
    return jnp.sum(e[:n] * e[n:], axis=-1).reshape(lead)


def load_clip_model(directory: str, *, dtype=jnp.float32):
    """The full CLIP model (both towers) from a converted checkpoint (`python -m convert_weights clip ...`)."""

    def build(cfg, rngs):
        if cfg.pop("kind", "full") != "full":
            raise WeightsError(f"{directory}: a text-only CLIP checkpoint; CLIP-sim needs the vision tower")
        return CLIPModel(CLIPConfig.from_dict(cfg), dtype=dtype, rngs=rngs)

    return load_module(directory, family="clip", build=build)
