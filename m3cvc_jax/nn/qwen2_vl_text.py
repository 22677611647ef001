"""Qwen2-VL text decoder: grouped-query attention with q/k/v bias, RMSNorm, SwiGLU, multimodal rotary.

Mirrors transformers' `Qwen2VLTextModel`. Optional static-shape KV cache for generation: keys/values live
in preallocated `(B, S_max, K, D)` buffers written at a traced offset, so prefill and every decode step
keep one shape.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, struct

from m3cvc_jax.nn.attention import dot_product_attention
from m3cvc_jax.nn.rotary import apply_rotary, inverse_frequencies


@dataclasses.dataclass(frozen=True)
class Qwen2VLTextConfig:
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@struct.dataclass
class KVCache:
    """Per-layer key/value buffers `(B, S_max, K, D)`; `end` = number of filled positions (traced)."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    end: jax.Array

    @classmethod
    def empty(cls, cfg: Qwen2VLTextConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
        zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_hidden_layers))
        return cls(keys=zeros, values=zeros, end=jnp.zeros((), jnp.int32))


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.eps)
        # As the reference: normalise in f32, cast to the compute dtype, then scale.
        return self.scale[...].astype(self.dtype) * y.astype(self.dtype)


def mrope_angles(position_ids: jax.Array, cfg: Qwen2VLTextConfig) -> jax.Array:
    """position_ids `(3, B, L)` (temporal, height, width) -> angles `(B, L, head_dim/2)`.

    Frequency band i of `mrope_section` takes its position from axis i % 3.
    """
    inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta)
    freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # (3, B, L, D/2)
    axis = jnp.concatenate([jnp.full((n,), i % 3) for i, n in enumerate(cfg.mrope_section)])
    return jnp.where(axis == 0, freqs[0], jnp.where(axis == 1, freqs[1], freqs[2]))


class Qwen2VLAttention(nnx.Module):
    def __init__(self, cfg: Qwen2VLTextConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        h, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nnx.Linear(h, cfg.num_attention_heads * d, **kw)
        self.k_proj = nnx.Linear(h, cfg.num_key_value_heads * d, **kw)
        self.v_proj = nnx.Linear(h, cfg.num_key_value_heads * d, **kw)
        self.o_proj = nnx.Linear(cfg.num_attention_heads * d, h, use_bias=False, **kw)
        self.cfg = cfg

    def __call__(self, x, angles, *, mask=None, cache_kv=None, cache_end=None):
        b, l, _ = x.shape
        d = self.cfg.head_dim
        q = self.q_proj(x).reshape(b, l, -1, d)
        k = self.k_proj(x).reshape(b, l, -1, d)
        v = self.v_proj(x).reshape(b, l, -1, d)
        q = apply_rotary(q, angles[:, :, None, :], interleaved=False)
        k = apply_rotary(k, angles[:, :, None, :], interleaved=False)
        if cache_kv is None:
            out = dot_product_attention(q, k, v, mask=mask, is_causal=True)
            new_kv = None
        else:
            ck, cv = cache_kv
            ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, cache_end, 0, 0))
            cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, cache_end, 0, 0))
            out = dot_product_attention(q, ck.astype(q.dtype), cv.astype(q.dtype), mask=mask)
            new_kv = (ck, cv)
        return self.o_proj(out.reshape(b, l, -1)), new_kv


class Qwen2MLP(nnx.Module):
    def __init__(self, cfg: Qwen2VLTextConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.up_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.down_proj = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2VLDecoderLayer(nnx.Module):
    def __init__(self, cfg: Qwen2VLTextConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.self_attn = Qwen2VLAttention(cfg, rngs=rngs, **kw)
        self.mlp = Qwen2MLP(cfg, rngs=rngs, **kw)
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)

    def __call__(self, x, angles, **attn_kw):
        h, new_kv = self.self_attn(self.input_layernorm(x), angles, **attn_kw)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), new_kv


class Qwen2VLTextModel(nnx.Module):
    def __init__(self, cfg: Qwen2VLTextConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs, **kw)
        self.layers = nnx.List([Qwen2VLDecoderLayer(cfg, rngs=rngs, **kw) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
        self.cfg, self.dtype = cfg, dtype

    def __call__(
        self,
        inputs_embeds: jax.Array,
        position_ids: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """inputs_embeds `(B, L, H)`, position_ids `(3, B, L)`.

        attention_mask: `(B, L)` without a cache, `(B, S_max)` with one; True/1 for real tokens (keys only:
        padded queries produce values nobody reads). With a cache, the L new tokens are written at
        `cache.end` and attend causally to everything before them.
        """
        x = inputs_embeds.astype(self.dtype)
        angles = mrope_angles(position_ids, self.cfg)
        b, l = x.shape[:2]
        if cache is None:
            mask = None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]
        else:
            s = cache.keys[0].shape[1]
            q_pos = cache.end + jnp.arange(l)
            allowed = jnp.arange(s)[None, :] <= q_pos[:, None]  # (L, S): causal over the buffer
            mask = allowed[None, None]
            if attention_mask is not None:
                mask = jnp.logical_and(mask, attention_mask.astype(bool)[:, None, None, :])
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.keys[i], cache.values[i])
            x, new_kv = layer(x, angles, mask=mask, cache_kv=kv, cache_end=None if cache is None else cache.end)
            if new_kv is not None:
                keys.append(new_kv[0])
                values.append(new_kv[1])
        x = self.norm(x)
        if cache is not None:
            cache = KVCache(keys=tuple(keys), values=tuple(values), end=cache.end + l)
        return x, cache
