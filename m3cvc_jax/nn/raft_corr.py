"""RAFT's all-pairs correlation pyramid, its windowed lookup, and the flow upsamplers (channels-last).

The lookup reproduces torchvision's `grid_sample(..., mode="bilinear", align_corners=True)` on absolute
pixel coordinates with zero padding. Every sample of a window shares the centroid's fractional offset, so
one (2r+2)^2 integer window per centroid and level, blended bilinearly, gives the (2r+1)^2 samples. The
volumes carry a zero border of 2r+1 (`border`), paid once per pyramid, so every window that touches the
frame is one contiguous slice (a gather of whole windows, not of single elements); windows clamped at the
border's edge touch no pixel of the frame and are masked to zero. Output channel order is torchvision's:
level-major, then the x offset, then the y offset.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _pool_features(f: jax.Array) -> jax.Array:
    """2x2 average pooling (floor) of feature maps `(B, h, w, C)`."""
    h, w = f.shape[1] // 2 * 2, f.shape[2] // 2 * 2
    f = f[:, :h, :w]
    return 0.25 * ((f[:, 0::2, 0::2] + f[:, 1::2, 0::2]) + (f[:, 0::2, 1::2] + f[:, 1::2, 1::2]))


def border(radius: int) -> int:
    """Zeros around each volume: a window of centroid y0 spans y0 − r .. y0 + r + 1 and touches the frame
    for y0 in [−r − 1, h + r − 1], so its start lies in [−2r − 1, h − 1]."""
    return 2 * radius + 1


def pyramid_bytes(h: int, w: int, num_levels: int, radius: int) -> int:
    """Bytes of one second frame's `correlation_pyramid` for feature maps of h x w."""
    p, total, hl, wl = border(radius), 0, h, w
    for level in range(num_levels):
        if level:
            hl, wl = hl // 2, wl // 2
        total += 4 * h * w * (hl + 2 * p) * (wl + 2 * p)
    return total


def correlation_pyramid(fmap1: jax.Array, fmap2: jax.Array, num_levels: int, radius: int) -> list[jax.Array]:
    """All-pairs dot products `(h*w*B, h_l + 2p, w_l + 2p)` per level, /sqrt(C), avg-pooled 2x2 (floor) per
    level, each with a zero border p = `border(radius)` for `lookup` at that radius.

    Rows are ordered (pixel of fmap1, batch): `fmap1` of batch 1 is correlated with each of the B maps of
    `fmap2` in one matrix product whose output is already in that layout. The volume is linear in fmap2,
    so level l correlates with fmap2 pooled l times instead of pooling the (B times h*w times larger)
    volume: the same numbers up to rounding, a fraction of the memory traffic."""
    b, h, w, c = fmap2.shape
    f1 = fmap1.astype(F32) / jnp.sqrt(jnp.asarray(c, F32))
    if fmap1.shape[0] not in (1, b):
        raise ValueError(f"correlation of batches {fmap1.shape[0]} and {b}: the first must be 1 or {b}")
    g = fmap2.astype(F32)
    pyramid = []
    for level in range(num_levels):
        if level:
            g = _pool_features(g)
        hl, wl = g.shape[1:3]
        if fmap1.shape[0] == 1:
            vol = f1[0].reshape(h * w, c) @ g.reshape(b * hl * wl, c).T
        else:
            vol = jnp.einsum("bnc,bmc->nbm", f1.reshape(b, h * w, c), g.reshape(b, hl * wl, c))
        p = border(radius)
        pyramid.append(jnp.pad(vol.reshape(h * w * b, hl, wl), ((0, 0), (p, p), (p, p))))
    return pyramid


def lookup(pyramid: list[jax.Array], coords: jax.Array, radius: int) -> jax.Array:
    """Correlation features `(B, h, w, levels*(2r+1)^2)` around `coords` `(B, h, w, 2)` (x, y in level-0 px),
    from a `correlation_pyramid` of the same radius."""
    b, h, w, _ = coords.shape
    n = b * h * w
    side, p = 2 * radius + 1, border(radius)
    offsets = jnp.arange(-radius, radius + 2)
    centre = coords.transpose(1, 2, 0, 3).reshape(n, 2).astype(F32)  # the pyramid's row order
    features = []
    for level, vol in enumerate(pyramid):
        hl, wl = vol.shape[1] - 2 * p, vol.shape[2] - 2 * p
        c = centre / (2.0 ** level)
        x0, y0 = jnp.floor(c[:, 0]), jnp.floor(c[:, 1])
        fx, fy = (c[:, 0] - x0)[:, None, None], (c[:, 1] - y0)[:, None, None]
        xi, yi = x0.astype(jnp.int32), y0.astype(jnp.int32)
        # dynamic_slice clamps the start into the volume: only windows that miss the frame are moved.
        # The barrier keeps XLA from fusing the gather into each of the blend's four reads (2.3x the time).
        window = jax.lax.optimization_barrier(jax.vmap(
            lambda v, y, x: jax.lax.dynamic_slice(v, (y, x), (side + 1, side + 1)))(vol, yi - radius + p, xi - radius + p))
        ys, xs = yi[:, None] + offsets[None], xi[:, None] + offsets[None]
        valid = ((ys >= 0) & (ys < hl))[:, :, None] & ((xs >= 0) & (xs < wl))[:, None, :]
        window = jnp.where(valid, window, 0.0)  # [y offset, x offset]
        rows = window[:, :-1] * (1 - fy) + window[:, 1:] * fy
        samples = rows[:, :, :-1] * (1 - fx) + rows[:, :, 1:] * fx  # [y, x]
        features.append(samples.transpose(0, 2, 1).reshape(h, w, b, side * side))
    return jnp.concatenate(features, axis=-1).transpose(2, 0, 1, 3)


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
