"""SEINE's video UNet (`UNet3DConditionModel` of Vchitect/SEINE) in Flax NNX, on `(B, T, H, W, C)`.

The network is Stable Diffusion 1.4's UNet applied per frame (2-D convolutions, resnets, spatial self-
and cross-attention with frames folded into the batch), with one addition in every transformer block:
after the cross-attention, a temporal self-attention over the frames of each pixel (`norm_temp`,
`attn_temp`; see `temporal_attention.py`). Input channels are 9 = noisy latent 4 + mask 1 + masked-video
latent 4. Parameter names mirror SEINE's state dict (diffusers-0.15 naming), so `seine.pt`'s `ema`
entry maps on by name; SEINE's per-block rotary `freqs` are recomputed instead of stored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.layers import (
    BasicTransformerBlock,
    Downsample2D,
    GroupNorm,
    LayerNorm,
    ResnetBlock2D,
    TimestepEmbedding,
    Timesteps,
    Transformer2DModel,
    Upsample2D,
    conv2d,
)
from m3cvc_jax.nn.temporal_attention import TemporalAttention

Dtype = Any
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class VideoUNetConfig:
    """SEINE's UNet config. `num_heads` is what SEINE calls `attention_head_dim` (a head COUNT)."""

    in_channels: int = 9
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    layers_per_block: int = 2
    num_heads: tuple[int, ...] = (8, 8, 8, 8)
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    rotary_dim: int = 32
    rel_pos_buckets: int = 32
    rel_pos_max_distance: int = 32

    def __post_init__(self):
        # JSON round trips turn tuples into lists.
        for f in ("block_out_channels", "down_block_types", "up_block_types", "num_heads"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n or len(self.num_heads) != n:
            raise ConfigError("VideoUNetConfig: block_out_channels, block types and num_heads differ in length")
        for ch, heads in zip(self.block_out_channels, self.num_heads):
            if ch % heads or ch // heads < self.rotary_dim:
                raise ConfigError(f"VideoUNetConfig: {ch} channels in {heads} heads leave less than "
                                  f"{self.rotary_dim} dims per head (SEINE's rotary needs {self.rotary_dim})")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def seine(cls) -> "VideoUNetConfig":
        """The released SEINE model (SD-1.4 UNet + temporal attention, 9 input channels)."""
        return cls()

    @classmethod
    def tiny(cls) -> "VideoUNetConfig":
        """Tests: two levels, one layer each, 1 and 2 heads of 32 dims."""
        return cls(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                   up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1, num_heads=(1, 2),
                   cross_attention_dim=32, norm_num_groups=8)

    @classmethod
    def reduced(cls) -> "VideoUNetConfig":
        """SEINE's layout at a fifth of the width (benchmarks): 64/128/256/256 channels, heads of 32-64
        dims; text width kept at 768."""
        return cls(block_out_channels=(64, 128, 256, 256), num_heads=(2, 4, 4, 4))


PRESETS = {"seine": VideoUNetConfig.seine, "tiny": VideoUNetConfig.tiny, "reduced": VideoUNetConfig.reduced}


def fold(x: jax.Array) -> jax.Array:
    """(B, T, ...) -> (B*T, ...)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold(x: jax.Array, batch: int) -> jax.Array:
    """(B*T, ...) -> (B, T, ...)."""
    return x.reshape(batch, x.shape[0] // batch, *x.shape[1:])


class VideoTransformerBlock(BasicTransformerBlock):
    """SEINE's BasicTransformerBlock: self-attn, cross-attn, temporal attn (`norm_temp`, `attn_temp`), FF.

    Works on `(B*T, H*W, C)` like the 2-D block; `num_frames` says how to regroup for the temporal step.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, *, cross_attention_dim: int, rotary_dim: int,
                 num_buckets: int, max_distance: int, dtype: Dtype = F32, param_dtype: Dtype = F32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        super().__init__(dim, heads, dim_head, cross_attention_dim=cross_attention_dim, **kw)
        self.attn_temp = TemporalAttention(dim, heads=heads, dim_head=dim_head, rotary_dim=rotary_dim,
                                           num_buckets=num_buckets, max_distance=max_distance, **kw)
        self.norm_temp = LayerNorm(dim, **kw)

    def temporal_attention(self, x: jax.Array, num_frames: int) -> jax.Array:
        bt, hw, c = x.shape
        b = bt // num_frames
        # (B*T, HW, C) -> (B*HW, T, C): every pixel attends over its own frames.
        y = x.reshape(b, num_frames, hw, c).transpose(0, 2, 1, 3).reshape(b * hw, num_frames, c)
        y = y + self.attn_temp(self.norm_temp(y))
        return y.reshape(b, hw, num_frames, c).transpose(0, 2, 1, 3).reshape(bt, hw, c)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, num_frames: int) -> jax.Array:
        x = self.cross_attention(self.self_attention(x), context)
        return self.feed_forward(self.temporal_attention(x, num_frames))


def _per_frame_transformer(transformer: Transformer2DModel, x: jax.Array, context: jax.Array) -> jax.Array:
    """Transformer3DModel: GroupNorm and attention per frame (frames folded), text repeated per frame."""
    b, t = x.shape[:2]
    ctx = jnp.repeat(context, t, axis=0)
    return unfold(transformer(fold(x), ctx, num_frames=t), b)


def _transformer(cfg: VideoUNetConfig, channels: int, heads: int, kw: dict) -> Transformer2DModel:
    def block(_: int) -> VideoTransformerBlock:
        return VideoTransformerBlock(channels, heads, channels // heads, cross_attention_dim=cfg.cross_attention_dim,
                                     rotary_dim=cfg.rotary_dim, num_buckets=cfg.rel_pos_buckets,
                                     max_distance=cfg.rel_pos_max_distance, **kw)

    return Transformer2DModel(heads, channels // heads, channels, cross_attention_dim=cfg.cross_attention_dim,
                              norm_num_groups=cfg.norm_num_groups, block_factory=block, **kw)


def _resnet(cfg: VideoUNetConfig, cin: int, cout: int, temb: int, kw: dict) -> ResnetBlock2D:
    return ResnetBlock2D(cin, cout, temb_channels=temb, groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)


class DownBlock3D(nnx.Module):
    """`resnets`, optional `attentions` (CrossAttnDownBlock3D), optional `downsamplers.0`; frames folded."""

    def __init__(self, cfg: VideoUNetConfig, index: int, cin: int, cout: int, temb: int, kw: dict):
        kind = cfg.down_block_types[index]
        if kind not in ("CrossAttnDownBlock3D", "DownBlock3D"):
            raise ConfigError(f"unknown down block type {kind!r}")
        n = cfg.layers_per_block
        self.resnets = nnx.List([_resnet(cfg, cin if i == 0 else cout, cout, temb, kw) for i in range(n)])
        self.attentions = (nnx.List([_transformer(cfg, cout, cfg.num_heads[index], kw) for _ in range(n)])
                           if kind == "CrossAttnDownBlock3D" else None)
        last = index == len(cfg.block_out_channels) - 1
        self.downsamplers = None if last else nnx.List([Downsample2D(cout, out_channels=cout, padding=1, **kw)])

    def __call__(self, x, temb, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = _per_frame_transformer(self.attentions[i], x, context)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock3D(nnx.Module):
    """`resnets` on [x, skip] concatenations, optional `attentions`, optional `upsamplers.0`."""

    def __init__(self, cfg: VideoUNetConfig, index: int, cin: int, cout: int, prev: int, temb: int, kw: dict):
        kind = cfg.up_block_types[index]
        if kind not in ("CrossAttnUpBlock3D", "UpBlock3D"):
            raise ConfigError(f"unknown up block type {kind!r}")
        n = cfg.layers_per_block + 1
        heads = cfg.num_heads[::-1][index]
        self.resnets = nnx.List([
            _resnet(cfg, (prev if i == 0 else cout) + (cin if i == n - 1 else cout), cout, temb, kw)
            for i in range(n)
        ])
        self.attentions = (nnx.List([_transformer(cfg, cout, heads, kw) for _ in range(n)])
                           if kind == "CrossAttnUpBlock3D" else None)
        last = index == len(cfg.block_out_channels) - 1
        self.upsamplers = None if last else nnx.List([Upsample2D(cout, out_channels=cout, **kw)])

    def __call__(self, x, skips, temb, context, upsample_size):
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
            if self.attentions is not None:
                x = _per_frame_transformer(self.attentions[i], x, context)
        if self.upsamplers is not None:
            x = unfold(self.upsamplers[0](fold(x), upsample_size), x.shape[0])
        return x


class UNetMidBlock3DCrossAttn(nnx.Module):
    def __init__(self, cfg: VideoUNetConfig, channels: int, temb: int, kw: dict):
        self.resnets = nnx.List([_resnet(cfg, channels, channels, temb, kw) for _ in range(2)])
        self.attentions = nnx.List([_transformer(cfg, channels, cfg.num_heads[-1], kw)])

    def __call__(self, x, temb, context):
        x = self.resnets[0](x, temb)
        x = _per_frame_transformer(self.attentions[0], x, context)
        return self.resnets[1](x, temb)


class VideoUNet(nnx.Module):
    """`(sample (B,T,H,W,in), timesteps (B,) or scalar, text (B,L,D)) -> (B,T,H,W,out)` epsilon.

    H and W need not be multiples of the down-sampling factor: like the reference, up-sampling then
    targets the size of the matching skip connection.
    """

    def __init__(self, config: VideoUNetConfig, *, dtype: Dtype = F32, param_dtype: Dtype = F32,
                 rngs: nnx.Rngs):
        self.config = cfg = config
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = cfg.block_out_channels
        temb = ch[0] * 4
        self.conv_in = conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw)
        self.time_proj = Timesteps(ch[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], temb, **kw)
        self.down_blocks = nnx.List([
            DownBlock3D(cfg, i, ch[max(i - 1, 0)], ch[i], temb, kw) for i in range(len(ch))
        ])
        self.mid_block = UNetMidBlock3DCrossAttn(cfg, ch[-1], temb, kw)
        rev = ch[::-1]
        self.up_blocks = nnx.List([
            UpBlock3D(cfg, i, rev[min(i + 1, len(ch) - 1)], rev[i], rev[max(i - 1, 0)], temb, kw)
            for i in range(len(ch))
        ])
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps, **kw)
        self.conv_out = conv2d(ch[0], cfg.out_channels, 3, padding=1, **kw)

    def __call__(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array) -> jax.Array:
        b, t, h, w, c = sample.shape
        if c != self.config.in_channels:
            raise ValueError(f"VideoUNet: expected {self.config.in_channels} input channels, got {c}")
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (b,))
        emb = self.time_embedding(self.time_proj(timesteps).astype(self.dtype))
        context = context.astype(self.dtype)
        # Activations stay (B, T, H, W, C): convolutions treat T as a batch axis, while the resnets'
        # GroupNorms (and conv_norm_out) take statistics over all frames of a video, as SEINE's
        # GroupNorm on (B, C, T, H, W) does. Only the transformers see frames folded into the batch.
        x = self.conv_in(sample.astype(self.dtype))
        skips = [x]
        for block in self.down_blocks:
            x, res = block(x, emb, context)
            skips.extend(res)
        x = self.mid_block(x, emb, context)
        for block in self.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[2:4] if skips else None
            x = block(x, res, emb, context, size)
        return self.conv_out(self.conv_norm_out(x, act="silu"))
