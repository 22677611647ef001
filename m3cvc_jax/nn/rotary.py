"""Rotary position embeddings, in the two pairings the references use.

Qwen2-VL (and most LLMs) rotate the two halves of a head (`rotate_half`); SEINE's temporal attention uses
`rotary-embedding-torch`, which rotates interleaved pairs `(x0, x1), (x2, x3), ...`. Both are the same
rotation on a different pairing, so one function serves both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inverse_frequencies(dim: int, theta: float = 10000.0) -> jax.Array:
    """`1 / theta^(2i/dim)` for `i < dim/2`, float32."""
    return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def rotary_angles(positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Angles `positions[..., None] * inv_freq`, shape `(..., dim/2)`, float32."""
    return positions.astype(jnp.float32)[..., None] * inv_freq


def apply_rotary(x: jax.Array, angles: jax.Array, *, interleaved: bool) -> jax.Array:
    """Rotate the first `2 * angles.shape[-1]` features of `x` by `angles`; the rest pass unchanged.

    x: `(..., D)`; angles: `(..., R)` broadcastable against `x[..., :2R]`'s leading dims.
    interleaved=False pairs feature i with i + R (rotate_half); True pairs 2i with 2i + 1.
    Computed in float32 and cast back, as both references do.
    """
    rot = 2 * angles.shape[-1]
    x_rot, x_pass = x[..., :rot].astype(jnp.float32), x[..., rot:]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x_rot.shape)
    else:
        x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([out.astype(x.dtype), x_pass], axis=-1)
