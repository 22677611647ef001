"""Mean-colour correction: decoded frames shifted so each keyframe's per-channel mean is the transmitted one.

The decoder's networks (a small VAE most of all) move a frame's average colour; the stream carries each
keyframe's original mean (`codec/colour_means.py`). Per keyframe and channel the decoder finds the offset o
with mean(clip(x + o, 0, 255)) = transmitted mean (bisection: the clipped mean is continuous and
non-decreasing in o, and covers [0, 255] for o in [-255, 255], so the clipping at saturated pixels is
compensated instead of leaving an error). Every other frame takes the offset interpolated linearly between
its neighbouring keyframes' (the colour drift of a clip rebuilt from its two ends moves smoothly between
them); frames before the first / after the last keyframe take that keyframe's. Offsets are additive in
8-bit pixel space, the result clipped and rounded to uint8.

Pure functions of their arguments (no jit, no I/O); the pipelines call them on the decoded frames.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BISECTION_STEPS = 24  # interval 510 / 2**24 < 1e-4 levels: far below the 0.5 of rounding to uint8


def clipped_mean(frames: jax.Array, offsets: jax.Array) -> jax.Array:
    """Per-channel mean `(N, C)` of `clip(frames + offset, 0, 255)` for frames `(N, H, W, C)`, offsets `(N, C)`."""
    x = frames.astype(jnp.float32) + offsets[:, None, None, :]
    return jnp.mean(jnp.clip(x, 0.0, 255.0), axis=(1, 2))


def keyframe_offsets(keyframes: jax.Array, target_means: jax.Array) -> jax.Array:
    """Offsets `(K, C)` that bring each decoded keyframe `(K, H, W, C)` (0..255) to its target mean `(K, C)`."""
    target = jnp.clip(jnp.asarray(target_means, jnp.float32), 0.0, 255.0)
    shape = target.shape

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        low = clipped_mean(keyframes, mid) < target
        return jnp.where(low, mid, lo), jnp.where(low, hi, mid)

    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, step,
                               (jnp.full(shape, -255.0, jnp.float32), jnp.full(shape, 255.0, jnp.float32)))
    return 0.5 * (lo + hi)


def frame_offsets(positions: jax.Array, offsets: jax.Array, num_frames: int) -> jax.Array:
    """Offsets `(num_frames, C)`: linear between the keyframes at `positions` (increasing), held outside."""
    t = jnp.arange(num_frames, dtype=jnp.float32)
    xp = jnp.asarray(positions, jnp.float32)
    return jax.vmap(lambda fp: jnp.interp(t, xp, fp), in_axes=1, out_axes=1)(jnp.asarray(offsets, jnp.float32))


def correct_mean_colour(frames: jax.Array, positions, target_means: jax.Array) -> jax.Array:
    """Frames `(T, H, W, C)` uint8 with the keyframes at `positions` brought to `target_means` `(K, C)` and the
    others shifted by the interpolated offsets (uint8)."""
    positions = jnp.asarray(positions, jnp.int32)
    offsets = frame_offsets(positions, keyframe_offsets(frames[positions], target_means), frames.shape[0])
    shifted = frames.astype(jnp.float32) + offsets[:, None, None, :]
    return jnp.round(jnp.clip(shifted, 0.0, 255.0)).astype(jnp.uint8)
