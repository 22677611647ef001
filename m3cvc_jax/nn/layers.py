"""Building blocks shared by the SD VAE, the SD UNet, SEINE's video UNet and the post-encoder.

Names mirror diffusers so that converters are a plain `map_onto`; everything is channels-last.

  linear, conv2d        nnx.Linear / nnx.Conv with PyTorch padding (explicit, never 'SAME')
  Identity              placeholder for parameter-free list slots (dropout in `ff.net.1`)
  GroupNorm, LayerNorm  float32 statistics whatever the compute dtype; GroupNorm can fuse a SiLU
  ResnetBlock2D         norm1, conv1, time_emb_proj (optional), norm2, conv2, conv_shortcut
  Downsample2D          conv stride 2 (pad 1, or the VAE's (0,1,0,1) with padding=0) or average pooling
  Upsample2D            nearest x2 (or to a given size) + conv
  Attention             to_q, to_k, to_v, to_out.0 (+ group_norm for the VAE variant); self or cross;
                        `qkv` / `attend` / `output` usable on their own (rotary, relative bias, ...);
                        long sequences take `attention.blocked_attention` automatically
  GEGLU, GELU, FeedForward   ff.net.0.proj, ff.net.2
  BasicTransformerBlock norm1/attn1, norm2/attn2, norm3/ff; `self_attention`, `cross_attention`,
                        `feed_forward` as separate steps so a subclass can insert temporal attention
  Transformer2DModel    norm, proj_in, transformer_blocks, proj_out; `block_factory` builds other blocks
  timestep_embedding, Timesteps, TimestepEmbedding (linear_1, linear_2)

1x1 convolutions (`proj_in`/`proj_out` with conv projection, `conv_shortcut`) are `nnx.Linear` here: in
channels-last they are the same matmul, and the converter maps a reference (O, I, 1, 1) weight onto an
(I, O) kernel automatically.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.nn.attention import dot_product_attention

Dtype = Any
F32 = jnp.float32


def linear(in_features: int, out_features: int, *, use_bias: bool = True, dtype: Dtype = F32,
           param_dtype: Dtype = F32, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      rngs=rngs)


def conv2d(in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
           padding: int | tuple[tuple[int, int], tuple[int, int]] = 1, use_bias: bool = True,
           dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs) -> nnx.Conv:
    """Conv2d on (B, H, W, C) with PyTorch's symmetric integer padding (or explicit per-side pairs)."""
    pad = ((padding, padding), (padding, padding)) if isinstance(padding, int) else padding
    return nnx.Conv(in_channels, out_channels, (kernel_size, kernel_size), strides=stride, padding=pad,
                    use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class Identity(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class GroupNorm(nnx.Module):
    """torch.nn.GroupNorm on channels-last input `(B, ..., C)`: statistics over every axis but batch,
    per group of channels, in float32. `act="silu"` fuses the activation most callers apply next."""

    def __init__(self, num_groups: int, num_channels: int, *, eps: float = 1e-5, affine: bool = True,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs | None = None):
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels do not split into {num_groups} groups")
        self.num_groups, self.eps, self.dtype = num_groups, eps, dtype
        self.scale = nnx.Param(jnp.ones((num_channels,), param_dtype)) if affine else None
        self.bias = nnx.Param(jnp.zeros((num_channels,), param_dtype)) if affine else None

    def __call__(self, x: jax.Array, act: str | None = None) -> jax.Array:
        shape = x.shape
        g = x.astype(F32).reshape(shape[0], -1, self.num_groups, shape[-1] // self.num_groups)
        mean = jnp.mean(g, axis=(1, 3), keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=(1, 3), keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + self.eps)).reshape(shape)
        if self.scale is not None:
            y = y * self.scale[...].astype(F32) + self.bias[...].astype(F32)
        if act == "silu":
            y = jax.nn.silu(y)
        elif act is not None:
            raise ValueError(f"GroupNorm: unknown activation {act!r}")
        return y.astype(self.dtype)


class LayerNorm(nnx.Module):
    """torch.nn.LayerNorm over the last axis, float32 statistics."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, elementwise_affine: bool = True,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs | None = None):
        self.eps, self.dtype = eps, dtype
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype)) if elementwise_affine else None
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype)) if elementwise_affine else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(F32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        if self.scale is not None:
            y = y * self.scale[...].astype(F32) + self.bias[...].astype(F32)
        return y.astype(self.dtype)


class ResnetBlock2D(nnx.Module):
    """diffusers ResnetBlock2D (time_embedding_norm='default'); `temb_channels=None` for the VAE."""

    def __init__(self, in_channels: int, out_channels: int | None = None, *, temb_channels: int | None = 512,
                 groups: int = 32, groups_out: int | None = None, eps: float = 1e-6,
                 output_scale_factor: float = 1.0, use_in_shortcut: bool | None = None,
                 conv_shortcut: bool = False, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        out_channels = out_channels or in_channels
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.output_scale_factor = output_scale_factor
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, **kw)
        self.conv1 = conv2d(in_channels, out_channels, 3, padding=1, **kw)
        self.time_emb_proj = linear(temb_channels, out_channels, **kw) if temb_channels else None
        self.norm2 = GroupNorm(groups_out or groups, out_channels, eps=eps, **kw)
        self.conv2 = conv2d(out_channels, out_channels, 3, padding=1, **kw)
        if use_in_shortcut is None:
            use_in_shortcut = in_channels != out_channels
        if not use_in_shortcut:
            self.conv_shortcut = None
        elif conv_shortcut:
            self.conv_shortcut = conv2d(in_channels, out_channels, 3, padding=1, **kw)
        else:
            self.conv_shortcut = linear(in_channels, out_channels, **kw)

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        h = self.conv1(self.norm1(x, act="silu"))
        if temb is not None and self.time_emb_proj is not None:
            t = self.time_emb_proj(jax.nn.silu(temb))
            h = h + t.reshape(t.shape[0], *(1,) * (h.ndim - 2), t.shape[-1])
        h = self.conv2(self.norm2(h, act="silu"))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Downsample2D(nnx.Module):
    """Stride-2 conv (`padding=1`; `padding=0` is the VAE's asymmetric right/bottom pad) or 2x2 average."""

    def __init__(self, channels: int, *, use_conv: bool = True, out_channels: int | None = None,
                 padding: int = 1, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        out_channels = out_channels or channels
        if use_conv:
            # torch pads (0, 1, 0, 1) before an unpadded conv when padding == 0: fold it into the conv.
            pad = ((0, 1), (0, 1)) if padding == 0 else padding
            self.conv = conv2d(channels, out_channels, 3, stride=2, padding=pad, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
        else:
            if out_channels != channels:
                raise ValueError("Downsample2D: average pooling cannot change the channel count")
            self.conv = None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.conv is not None:
            return self.conv(x)
        b, h, w, c = x.shape
        return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_nearest(x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    """torch `interpolate(mode='nearest')` on (B, H, W, C): x2, or to `size` (source index floor(i*in/out))."""
    b, h, w, c = x.shape
    if size is None or tuple(size) == (2 * h, 2 * w):
        return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    oh, ow = size
    rows = jnp.floor(jnp.arange(oh) * (h / oh)).astype(jnp.int32)
    cols = jnp.floor(jnp.arange(ow) * (w / ow)).astype(jnp.int32)
    return x[:, rows][:, :, cols]


class Upsample2D(nnx.Module):
    """Nearest-neighbour x2 (or to `output_size`) then a 3x3 conv."""

    def __init__(self, channels: int, *, use_conv: bool = True, out_channels: int | None = None,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        out_channels = out_channels or channels
        self.conv = conv2d(channels, out_channels, 3, padding=1, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs) if use_conv else None

    def __call__(self, x: jax.Array, output_size: tuple[int, int] | None = None) -> jax.Array:
        x = upsample_nearest(x, output_size)
        return self.conv(x) if self.conv is not None else x


class Attention(nnx.Module):
    """diffusers `Attention` with the default processor.

    Input `(B, L, C)` or spatial `(B, H, W, C)` (flattened, as the VAE mid-block does). `norm_num_groups`
    adds the VAE's `group_norm` before the projections; `residual_connection` and
    `rescale_output_factor` are the VAE options. `upcast_attention` is accepted for config fidelity only:
    logits and softmax are always float32 here (`dot_product_attention`).
    """

    def __init__(self, query_dim: int, cross_attention_dim: int | None = None, *, heads: int = 8,
                 dim_head: int = 64, bias: bool = False, out_bias: bool = True, upcast_attention: bool = False,
                 norm_num_groups: int | None = None, eps: float = 1e-5, residual_connection: bool = False,
                 rescale_output_factor: float = 1.0, dtype: Dtype = F32, param_dtype: Dtype = F32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = heads * dim_head
        self.heads, self.dim_head, self.upcast_attention = heads, dim_head, upcast_attention
        self.residual_connection, self.rescale_output_factor = residual_connection, rescale_output_factor
        self.group_norm = GroupNorm(norm_num_groups, query_dim, eps=eps, **kw) if norm_num_groups else None
        kv_dim = cross_attention_dim or query_dim
        self.to_q = linear(query_dim, inner, use_bias=bias, **kw)
        self.to_k = linear(kv_dim, inner, use_bias=bias, **kw)
        self.to_v = linear(kv_dim, inner, use_bias=bias, **kw)
        self.to_out = nnx.List([linear(inner, query_dim, use_bias=out_bias, **kw)])

    def qkv(self, x: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Projected queries `(B, L, N, D)` and keys/values `(B, S, N, D)` of a sequence input."""
        context = x if context is None else context
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.dim_head)
        return split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))

    def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, *, bias: jax.Array | None = None,
               mask: jax.Array | None = None, scale: float | None = None) -> jax.Array:
        out = dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)
        return out.reshape(*out.shape[:-2], self.heads * self.dim_head)

    def output(self, o: jax.Array) -> jax.Array:
        return self.to_out[0](o)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, bias: jax.Array | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        residual, shape = x, x.shape
        if self.group_norm is not None:
            x = self.group_norm(x)
        if x.ndim == 4:
            x = x.reshape(shape[0], shape[1] * shape[2], shape[3])
        q, k, v = self.qkv(x, context)
        out = self.output(self.attend(q, k, v, bias=bias, mask=mask)).reshape(shape)
        if self.residual_connection:
            out = out + residual
        return out if self.rescale_output_factor == 1.0 else out / self.rescale_output_factor


class GEGLU(nnx.Module):
    def __init__(self, dim_in: int, dim_out: int, *, bias: bool = True, dtype: Dtype = F32,
                 param_dtype: Dtype = F32, rngs: nnx.Rngs):
        self.proj = linear(dim_in, dim_out * 2, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h, gate = jnp.split(self.proj(x), 2, axis=-1)
        return h * jax.nn.gelu(gate, approximate=False)


class GELU(nnx.Module):
    def __init__(self, dim_in: int, dim_out: int, *, approximate: str = "none", bias: bool = True,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        self.approximate = approximate == "tanh"
        self.proj = linear(dim_in, dim_out, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nnx.Module):
    """`net.0` activation projection (geglu | gelu | gelu-approximate), `net.1` dropout slot, `net.2` out."""

    def __init__(self, dim: int, dim_out: int | None = None, *, mult: int = 4, activation_fn: str = "geglu",
                 inner_dim: int | None = None, bias: bool = True, dtype: Dtype = F32, param_dtype: Dtype = F32,
                 rngs: nnx.Rngs):
        kw = dict(bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner_dim = inner_dim or dim * mult
        if activation_fn == "geglu":
            act = GEGLU(dim, inner_dim, **kw)
        elif activation_fn in ("gelu", "gelu-approximate"):
            act = GELU(dim, inner_dim, approximate="tanh" if activation_fn.endswith("approximate") else "none", **kw)
        else:
            raise ValueError(f"FeedForward: unsupported activation {activation_fn!r}")
        out = linear(inner_dim, dim_out or dim, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.net = nnx.List([act, Identity(), out])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nnx.Module):
    """Self-attention, cross-attention (absent when `cross_attention_dim` is None), GEGLU feed-forward,
    each pre-LayerNorm with a residual (diffusers `norm_type='layer_norm'`)."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, *,
                 cross_attention_dim: int | None = None, activation_fn: str = "geglu",
                 attention_bias: bool = False, only_cross_attention: bool = False,
                 upcast_attention: bool = False, norm_eps: float = 1e-5, ff_inner_dim: int | None = None,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        attn = dict(heads=num_attention_heads, dim_head=attention_head_dim, bias=attention_bias,
                    upcast_attention=upcast_attention, **kw)
        self.only_cross_attention = only_cross_attention
        self.norm1 = LayerNorm(dim, eps=norm_eps, **kw)
        self.attn1 = Attention(dim, cross_attention_dim if only_cross_attention else None, **attn)
        if cross_attention_dim is not None:
            self.norm2 = LayerNorm(dim, eps=norm_eps, **kw)
            self.attn2 = Attention(dim, cross_attention_dim, **attn)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = LayerNorm(dim, eps=norm_eps, **kw)
        self.ff = FeedForward(dim, activation_fn=activation_fn, inner_dim=ff_inner_dim, **kw)

    def self_attention(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        ctx = context if self.only_cross_attention else None
        return x + self.attn1(self.norm1(x), ctx)

    def cross_attention(self, x: jax.Array, context: jax.Array | None) -> jax.Array:
        if self.attn2 is None:
            return x
        return x + self.attn2(self.norm2(x), context)

    def feed_forward(self, x: jax.Array) -> jax.Array:
        return x + self.ff(self.norm3(x))

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.feed_forward(self.cross_attention(self.self_attention(x, context), context))


class Transformer2DModel(nnx.Module):
    """GroupNorm, `proj_in`, `transformer_blocks`, `proj_out`, residual; on (B, H, W, C).

    Conv (SD1) and linear (SD2) projections are the same matmul in channels-last; both are Linear here.
    `block_factory(index) -> module` replaces the BasicTransformerBlock (SEINE adds temporal attention);
    extra keyword arguments of `__call__` are passed to every block.
    """

    def __init__(self, num_attention_heads: int, attention_head_dim: int, in_channels: int, *,
                 num_layers: int = 1, cross_attention_dim: int | None = None, norm_num_groups: int = 32,
                 use_linear_projection: bool = False, upcast_attention: bool = False,
                 attention_bias: bool = False, only_cross_attention: bool = False, norm_eps: float = 1e-5,
                 block_factory: Callable[[int], nnx.Module] | None = None,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = num_attention_heads * attention_head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = GroupNorm(norm_num_groups, in_channels, eps=1e-6, **kw)
        self.proj_in = linear(in_channels, inner, **kw)
        if block_factory is None:
            def block_factory(_: int) -> nnx.Module:
                return BasicTransformerBlock(
                    inner, num_attention_heads, attention_head_dim, cross_attention_dim=cross_attention_dim,
                    attention_bias=attention_bias, only_cross_attention=only_cross_attention,
                    upcast_attention=upcast_attention, norm_eps=norm_eps, **kw)
        self.transformer_blocks = nnx.List([block_factory(i) for i in range(num_layers)])
        self.proj_out = linear(inner, in_channels, **kw)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, **block_kwargs: Any) -> jax.Array:
        b, h, w, c = x.shape
        y = self.proj_in(self.norm(x).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            y = block(y, context, **block_kwargs)
        return self.proj_out(y).reshape(b, h, w, c) + x


def timestep_embedding(timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool = False,
                       downscale_freq_shift: float = 1.0, scale: float = 1.0,
                       max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding `(N,) -> (N, dim)` in float32, as diffusers' get_timestep_embedding."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=F32) / (half - downscale_freq_shift)
    args = jnp.asarray(timesteps, F32)[:, None] * jnp.exp(exponent)[None] * scale
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class Timesteps(nnx.Module):
    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float, scale: float = 1.0):
        self.num_channels, self.flip_sin_to_cos = num_channels, flip_sin_to_cos
        self.downscale_freq_shift, self.scale = downscale_freq_shift, scale

    def __call__(self, timesteps: jax.Array) -> jax.Array:
        return timestep_embedding(timesteps, self.num_channels, flip_sin_to_cos=self.flip_sin_to_cos,
                                  downscale_freq_shift=self.downscale_freq_shift, scale=self.scale)


class TimestepEmbedding(nnx.Module):
    """linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_channels: int, time_embed_dim: int, *, out_dim: int | None = None,
                 dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_1 = linear(in_channels, time_embed_dim, **kw)
        self.linear_2 = linear(time_embed_dim, out_dim or time_embed_dim, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))
