"""RAFT's all-pairs correlation pyramid, its windowed lookup, and the flow upsamplers (channels-last).

The lookup reproduces torchvision's `grid_sample(..., mode="bilinear", align_corners=True)` on absolute
pixel coordinates with zero padding. Every sample of a window shares the centroid's fractional offset, so
one gather of a (2r+2)^2 integer window per centroid and level, blended bilinearly, gives the (2r+1)^2
samples. Output channel order is torchvision's: level-major, then the x offset, then the y offset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def correlation_pyramid(fmap1: jax.Array, fmap2: jax.Array, num_levels: int) -> list[jax.Array]:
    """All-pairs dot products `(B*h*w, h_l, w_l)` per level, /sqrt(C), avg-pooled 2x2 (floor) per level.

    `fmap1` of batch 1 is correlated with each of the B maps of `fmap2` (one matrix product)."""
    b, h, w, c = fmap2.shape
    f1, f2 = fmap1.astype(F32), fmap2.astype(F32)
    if fmap1.shape[0] == b:
        corr = jnp.einsum("bijc,bklc->bijkl", f1, f2)
    elif fmap1.shape[0] == 1:
        corr = jnp.einsum("ijc,bklc->bijkl", f1[0], f2)
    else:
        raise ValueError(f"correlation of batches {fmap1.shape[0]} and {b}: the first must be 1 or {b}")
    corr = corr / jnp.sqrt(jnp.asarray(c, F32))
    vol = corr.reshape(b * h * w, h, w)
    pyramid = [vol]
    for _ in range(num_levels - 1):
        n, hh, ww = vol.shape
        vol = vol[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2).mean(axis=(2, 4))
        pyramid.append(vol)
    return pyramid


def lookup(pyramid: list[jax.Array], coords: jax.Array, radius: int) -> jax.Array:
    """Correlation features `(B, h, w, levels*(2r+1)^2)` around `coords` `(B, h, w, 2)` (x, y in level-0 px)."""
    b, h, w, _ = coords.shape
    n = b * h * w
    side = 2 * radius + 1
    offsets = jnp.arange(-radius, radius + 2)
    centre = coords.reshape(n, 2).astype(F32)
    features = []
    for level, vol in enumerate(pyramid):
        hl, wl = vol.shape[1:]
        c = centre / (2.0 ** level)
        x0, y0 = jnp.floor(c[:, 0]), jnp.floor(c[:, 1])
        fx, fy = (c[:, 0] - x0)[:, None, None], (c[:, 1] - y0)[:, None, None]
        xs = x0.astype(jnp.int32)[:, None] + offsets[None]
        ys = y0.astype(jnp.int32)[:, None] + offsets[None]
        valid = ((ys >= 0) & (ys < hl))[:, :, None] & ((xs >= 0) & (xs < wl))[:, None, :]
        index = jnp.clip(ys, 0, hl - 1)[:, :, None] * wl + jnp.clip(xs, 0, wl - 1)[:, None, :]
        window = jnp.take_along_axis(vol.reshape(n, hl * wl), index.reshape(n, -1), axis=1)
        window = jnp.where(valid, window.reshape(n, side + 1, side + 1), 0.0)  # [y offset, x offset]
        rows = window[:, :-1] * (1 - fy) + window[:, 1:] * fy
        samples = rows[:, :, :-1] * (1 - fx) + rows[:, :, 1:] * fx  # [y, x]
        features.append(samples.transpose(0, 2, 1).reshape(b, h, w, side * side))
    return jnp.concatenate(features, axis=-1)


def coords_grid(b: int, h: int, w: int) -> jax.Array:
    """(B, h, w, 2) pixel coordinates, x then y."""
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=F32), jnp.arange(w, dtype=F32), indexing="ij")
    return jnp.broadcast_to(jnp.stack([xs, ys], axis=-1), (b, h, w, 2))


def upsample_convex(flow: jax.Array, mask: jax.Array, factor: int = 8) -> jax.Array:
    """Convex upsampling: each fine pixel is a softmax-weighted mix of the 3x3 coarse neighbours of 8*flow.

    mask `(B, h, w, 9*factor*factor)` in torchvision's channel order (neighbour, row, column)."""
    b, h, w, c = flow.shape
    weights = jax.nn.softmax(mask.astype(F32).reshape(b, h, w, 9, factor, factor), axis=3)
    padded = jnp.pad(factor * flow.astype(F32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    neighbours = jnp.stack([padded[:, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], axis=3)
    up = jnp.einsum("bhwkij,bhwkc->bhiwjc", weights, neighbours)
    return up.reshape(b, h * factor, w * factor, c)


def _align_corners_matrix(n_in: int, n_out: int) -> jax.Array:
    src = jnp.arange(n_out, dtype=F32) * ((n_in - 1) / max(n_out - 1, 1))
    lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, n_in - 1)
    hi = jnp.clip(lo + 1, 0, n_in - 1)
    frac = src - lo
    return jax.nn.one_hot(lo, n_in) * (1 - frac)[:, None] + jax.nn.one_hot(hi, n_in) * frac[:, None]


def upsample_bilinear(flow: jax.Array, factor: int = 8) -> jax.Array:
    """factor * interpolate(flow, scale=factor, bilinear, align_corners=True) (RAFT-small)."""
    b, h, w, c = flow.shape
    my, mx = _align_corners_matrix(h, h * factor), _align_corners_matrix(w, w * factor)
    return factor * jnp.einsum("yh,xw,bhwc->byxc", my, mx, flow.astype(F32))
