"""A classical dense optical flow (pyramidal iterative Lucas–Kanade) in jnp: the motion term's fallback
when no RAFT weights are present.

Honest limits: brightness constancy, a local translation per `window` neighbourhood, no occlusion
handling; it recovers smooth motion of textured content up to about 2**levels pixels per level-0 pixel
step and returns ~0 on flat regions. Good enough for a motion *magnitude*, not a flow benchmark.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32
_LUMA = (0.299, 0.587, 0.114)
_RIDGE = 1e-4  # in units of (intensity / std)^2 per pixel^2


def _gray(image: jax.Array) -> jax.Array:
    """(H, W, 3) any range -> (H, W) float32 luma."""
    return jnp.tensordot(image.astype(F32), jnp.asarray(_LUMA, F32), axes=([-1], [0]))


def _down2(x):
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _box(x, size):
    """Mean over a size x size window (edge-replicated)."""
    r = size // 2
    p = jnp.pad(x, ((r, r), (r, r)), mode="edge")
    total = jax.lax.reduce_window(p, 0.0, jax.lax.add, (size, size), (1, 1), "VALID")
    return total / (size * size)


def _warp(image, flow):
    """image sampled at (x + u, y + v), bilinear, edge-clamped."""
    h, w = image.shape
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=F32), jnp.arange(w, dtype=F32), indexing="ij")
    return jax.scipy.ndimage.map_coordinates(image, [ys + flow[..., 1], xs + flow[..., 0]], order=1, mode="nearest")


def _resize_flow(flow, shape):
    h, w = shape
    scale = jnp.asarray([w / flow.shape[1], h / flow.shape[0]], F32)
    return jax.image.resize(flow, (h, w, 2), method="linear") * scale


def _lk_step(a, b, flow, window):
    warped = _warp(b, flow)
    iy, ix = jnp.gradient(0.5 * (a + warped))
    it = warped - a
    sxx, syy, sxy = _box(ix * ix, window), _box(iy * iy, window), _box(ix * iy, window)
    sxt, syt = _box(ix * it, window), _box(iy * it, window)
    # A small ridge keeps flat or edge-only windows (singular systems) near zero update.
    sxx, syy = sxx + _RIDGE, syy + _RIDGE
    det = sxx * syy - sxy * sxy
    du = -(syy * sxt - sxy * syt) / det
    dv = -(sxx * syt - sxy * sxt) / det
    return flow + jnp.clip(jnp.stack([du, dv], -1), -1.0, 1.0)  # damped: LK is linear near 0 only


def lucas_kanade(image1: jax.Array, image2: jax.Array, *, levels: int = 4, iterations: int = 3,
                 window: int = 9) -> jax.Array:
    """Flow `(H, W, 2)` (x, y) from image1 to image2 (`(H, W, 3)` or `(H, W)`, any common range)."""
    i1 = _gray(image1) if image1.ndim == 3 else image1.astype(F32)
    i2 = _gray(image2) if image2.ndim == 3 else image2.astype(F32)
    scale = jnp.maximum(jnp.std(i1), 1e-6)
    p1, p2 = [i1 / scale], [i2 / scale]
    for _ in range(levels - 1):
        if min(p1[-1].shape) < 2 * window:
            break
        p1.append(_down2(p1[-1]))
        p2.append(_down2(p2[-1]))
    flow = jnp.zeros((*p1[-1].shape, 2), F32)
    for a, b in zip(reversed(p1), reversed(p2)):
        if flow.shape[:2] != a.shape:
            flow = _resize_flow(flow, a.shape)
        flow = jax.lax.fori_loop(0, iterations, lambda _, f, a=a, b=b: _lk_step(a, b, f, window), flow)
    return flow
