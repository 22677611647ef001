"""Qwen2-VL vision encoder: 3-D patch embedding, ViT blocks with 2-D rotary, 2x2 patch merger.

Mirrors transformers' `Qwen2VisionTransformerPretrainedModel`. Patches arrive flattened as the processor
makes them, `(num_patches, C * T * P * P)`, for any number of images/videos; their grids `(t, h, w)` are
static Python ints, so positions and the per-slice attention blocks are laid out on the host.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.nn.attention import dot_product_attention
from m3cvc_jax.nn.rotary import apply_rotary, inverse_frequencies

Grid = tuple[tuple[int, int, int], ...]


@dataclasses.dataclass(frozen=True)
class Qwen2VLVisionConfig:
    depth: int = 32
    embed_dim: int = 1280
    hidden_size: int = 3584  # the text model's width: the merger projects onto it
    hidden_act: str = "quick_gelu"
    mlp_ratio: float = 4.0
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    rope_theta: float = 10000.0


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "silu":
        return jax.nn.silu
    raise ValueError(f"unsupported activation {name!r}")


class LayerNorm(nnx.Module):
    """LayerNorm computed in float32 (PyTorch's `LayerNorm(eps=1e-6)` keys: weight->scale, bias)."""

    def __init__(self, dim: int, *, eps: float = 1e-6, dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


class PatchEmbed(nnx.Module):
    """Conv3d with stride == kernel on pre-cut patches, i.e. one matmul; kernel stored (T, P, P, C, E)."""

    def __init__(self, cfg: Qwen2VLVisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        t, p = cfg.temporal_patch_size, cfg.patch_size
        self.proj = nnx.Conv(
            cfg.in_channels, cfg.embed_dim, kernel_size=(t, p, p), strides=(t, p, p), use_bias=False,
            dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        )
        self.cfg, self.dtype = cfg, dtype

    def __call__(self, patches: jax.Array) -> jax.Array:
        c, t, p = self.cfg.in_channels, self.cfg.temporal_patch_size, self.cfg.patch_size
        # The processor flattens (C, T, P, P); the kernel is channels-last (T, P, P, C).
        x = patches.reshape(-1, c, t, p, p).transpose(0, 2, 3, 4, 1).reshape(patches.shape[0], -1)
        kernel = self.proj.kernel[...].reshape(-1, self.cfg.embed_dim)
        return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class VisionAttention(nnx.Module):
    def __init__(self, cfg: Qwen2VLVisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        d = cfg.embed_dim
        self.qkv = nnx.Linear(d, 3 * d, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj = nnx.Linear(d, d, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads = cfg.num_heads

    def __call__(self, x: jax.Array, angles: jax.Array, grid_thw: Grid) -> jax.Array:
        n = x.shape[0]
        q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, 3, self.num_heads, -1), 1, 0)
        q = apply_rotary(q, angles[:, None, :], interleaved=False)
        k = apply_rotary(k, angles[:, None, :], interleaved=False)
        # The reference's cu_seqlens make attention block-diagonal, one block per temporal slice of each
        # image/video. The blocks of one grid entry have equal size, so each entry is one batched attention
        # over its t slices: the same result as a block-diagonal mask without the (N, N) logits.
        outs, start = [], 0
        for t, h, w in grid_thw:
            size = t * h * w
            sl = lambda a: a[start:start + size].reshape(t, h * w, *a.shape[1:])  # noqa: E731
            outs.append(dot_product_attention(sl(q), sl(k), sl(v)).reshape(size, -1))
            start += size
        return self.proj(jnp.concatenate(outs, 0) if len(outs) > 1 else outs[0])


class VisionMlp(nnx.Module):
    def __init__(self, cfg: Qwen2VLVisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nnx.Linear(cfg.embed_dim, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, cfg.embed_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = _activation(cfg.hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class Qwen2VLVisionBlock(nnx.Module):
    def __init__(self, cfg: Qwen2VLVisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.norm1 = LayerNorm(cfg.embed_dim, **kw)
        self.norm2 = LayerNorm(cfg.embed_dim, **kw)
        self.attn = VisionAttention(cfg, rngs=rngs, **kw)
        self.mlp = VisionMlp(cfg, rngs=rngs, **kw)

    def __call__(self, x: jax.Array, angles: jax.Array, grid_thw: Grid) -> jax.Array:
        x = x + self.attn(self.norm1(x), angles, grid_thw)
        return x + self.mlp(self.norm2(x))


class _GELU(nnx.Module):
    """The parameter-free `nn.GELU()` at index 1 of the merger's `nn.Sequential` (keeps indices aligned)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=False)


class PatchMerger(nnx.Module):
    """LayerNorm, then each 2x2 block of neighbouring patches (contiguous in the sequence) -> one token."""

    def __init__(self, cfg: Qwen2VLVisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        width = cfg.embed_dim * cfg.spatial_merge_size**2
        self.ln_q = LayerNorm(cfg.embed_dim, **kw)
        self.mlp = nnx.List([
            nnx.Linear(width, width, rngs=rngs, **kw),
            _GELU(),
            nnx.Linear(width, cfg.hidden_size, rngs=rngs, **kw),
        ])
        self.width = width

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln_q(x).reshape(-1, self.width)
        for layer in self.mlp:
            x = layer(x)
        return x


def vision_positions(grid_thw: Grid, merge: int) -> np.ndarray:
    """(h, w) patch coordinates, `(num_patches, 2)`, in the processor's merge-block-major order."""
    out = []
    for t, h, w in grid_thw:
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        hh = hh.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        ww = ww.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hh, ww], -1), (t, 1)))
    return np.concatenate(out, 0)


class Qwen2VisionTransformer(nnx.Module):
    def __init__(self, cfg: Qwen2VLVisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        kw = dict(dtype=dtype, param_dtype=param_dtype)
        self.patch_embed = PatchEmbed(cfg, rngs=rngs, **kw)
        self.blocks = nnx.List([Qwen2VLVisionBlock(cfg, rngs=rngs, **kw) for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, rngs=rngs, **kw)
        self.cfg = cfg

    def __call__(self, patches: jax.Array, grid_thw: Grid) -> jax.Array:
        """patches `(N, C*T*P*P)` -> merged tokens `(N / merge^2, hidden_size)`."""
        grid_thw = tuple(tuple(int(v) for v in g) for g in grid_thw)
        head_dim = self.cfg.embed_dim // self.cfg.num_heads
        # Axial rotary: a quarter of the head's frequencies for rows, a quarter for columns (half rotated).
        inv_freq = inverse_frequencies(head_dim // 2, self.cfg.rope_theta)
        pos = jnp.asarray(vision_positions(grid_thw, self.cfg.spatial_merge_size), jnp.float32)
        angles = (pos[:, :, None] * inv_freq).reshape(pos.shape[0], -1)
        if sum(t * h * w for t, h, w in grid_thw) != patches.shape[0]:
            raise ValueError(f"{patches.shape[0]} patches do not match the grids {grid_thw}")
        x = self.patch_embed(patches)
        for block in self.blocks:
            x = block(x, angles, grid_thw)
        return self.merger(x)
