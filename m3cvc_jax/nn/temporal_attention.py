"""SEINE's temporal attention: self-attention over the frames of each pixel, with rotary embedding and a
T5-style relative position bias.

Read from Vchitect/SEINE `models/attention.py` (`TemporalAttention`, `RelativePositionBias`) and
`models/unet.py` (one `RotaryEmbedding(32)` shared by every block):
- queries are multiplied by `dim_head**-0.5` before the rotary embedding (rotation commutes with the
  scale, so the order only matters at rounding level; we keep the reference's order);
- rotary-embedding-torch rotates the first 32 features of every head in interleaved pairs, positions
  0..T-1, frequencies `1/10000^(2i/32)`;
- the bias has 32 buckets, max distance 32, one value per head, bucketed on `i - j` (query - key);
- logits have no further scaling; softmax over keys.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.nn.layers import Attention
from m3cvc_jax.nn.rotary import apply_rotary, inverse_frequencies, rotary_angles

Dtype = Any
F32 = jnp.float32


def relative_position_buckets(num_frames: int, num_buckets: int = 32, max_distance: int = 32) -> np.ndarray:
    """(T, T) int bucket of query i and key j, as SEINE's `_relative_position_bucket(k - q)` (host numpy).

    Half the buckets are for keys before the query, half after; within a half, exact distances up to
    `num_buckets // 4`, then logarithmic up to `max_distance`. float32 logs as torch computes them.
    """
    pos = np.arange(num_frames)
    n = pos[:, None] - pos[None, :]  # -(k - q)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = np.log(n.astype(np.float32) / np.float32(max_exact)) / np.float32(math.log(max_distance / max_exact))
        large = max_exact + np.trunc(np.nan_to_num(scaled * np.float32(half - max_exact), neginf=0.0)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(n < max_exact, n, large)


class RelativePositionBias(nnx.Module):
    """`relative_attention_bias`: an embedding of (num_buckets, heads); returns the (heads, T, T) bias."""

    def __init__(self, heads: int, *, num_buckets: int = 32, max_distance: int = 32, dtype: Dtype = F32,
                 param_dtype: Dtype = F32, rngs: nnx.Rngs):
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nnx.Embed(num_buckets, heads, dtype=dtype, param_dtype=param_dtype,
                                                 rngs=rngs)

    def __call__(self, num_frames: int) -> jax.Array:
        buckets = relative_position_buckets(num_frames, self.num_buckets, self.max_distance)
        values = self.relative_attention_bias(jnp.asarray(buckets, jnp.int32))  # (T, T, heads)
        return jnp.moveaxis(values, -1, 0)


class TemporalAttention(Attention):
    """Attention over axis 1 of `(N, T, C)` (N = batch x pixels): `to_q/to_k/to_v/to_out.0` as the
    shared `Attention`, plus `time_rel_pos_bias`; the rotary embedding has no parameters here (SEINE
    stores its fixed `freqs` under every block; the converter checks and drops them)."""

    def __init__(self, query_dim: int, *, heads: int, dim_head: int, rotary_dim: int = 32,
                 rotary_theta: float = 10000.0, num_buckets: int = 32, max_distance: int = 32,
                 bias: bool = False, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        if dim_head < rotary_dim:
            raise ValueError(f"TemporalAttention: head dim {dim_head} is smaller than the rotary dim {rotary_dim}")
        super().__init__(query_dim, None, heads=heads, dim_head=dim_head, bias=bias, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
        self.rotary_dim, self.rotary_theta = rotary_dim, rotary_theta
        self.time_rel_pos_bias = RelativePositionBias(heads, num_buckets=num_buckets, max_distance=max_distance,
                                                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        num_frames = x.shape[1]
        q, k, v = self.qkv(x)  # (N, T, heads, D)
        q = q * jnp.asarray(self.dim_head**-0.5, q.dtype)
        angles = rotary_angles(jnp.arange(num_frames), inverse_frequencies(self.rotary_dim, self.rotary_theta))
        angles = angles[:, None, :]  # (T, 1, rotary_dim/2): broadcast over heads
        q = apply_rotary(q, angles, interleaved=True)
        k = apply_rotary(k, angles, interleaved=True)
        bias = self.time_rel_pos_bias(num_frames)[None]
        return self.output(self.attend(q, k, v, bias=bias, scale=1.0))
