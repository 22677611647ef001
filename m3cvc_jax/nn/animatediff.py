"""AnimateDiff: the SD UNet with motion modules (temporal transformers) inserted, channels-last.

Mirrors diffusers' `MotionAdapter` (the motion weights alone) and `UNetMotionModel` (SD UNet + adapter).
A motion module (`AnimateDiffTransformer3D`) follows every spatial layer of every down and up block, and
the transformer of the mid block when the adapter has one; it attends over frames only, at every pixel:

  (B*T, H, W, C) -> GroupNorm over (T, H, W) per clip -> proj_in -> transformer_blocks -> proj_out + x

Each temporal block is diffusers' BasicTransformerBlock with `double_self_attention`: two self-attentions
over the T frames (`attn1`, `attn2`), each reading its LayerNorm output plus a sinusoidal position table
(`pos_embed`), then the GEGLU feed-forward. The table is recomputed here, not stored: converters check a
checkpoint's `pe` against it and drop it.

Parameter paths are diffusers' (`down_blocks.0.motion_modules.1.transformer_blocks.0.attn1.to_q.kernel`),
so a converted adapter's flat keys are exactly the motion keys of `UNetMotionModel`, and the SD keys come
from the `sd-unet` converter: `merge_params(unet_params, adapter_params)` gives the whole model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.layers import BasicTransformerBlock, GroupNorm, linear
from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class MotionAdapterConfig:
    """diffusers `MotionAdapter` config (same field names). Per-block tuples follow the down blocks; the
    up blocks use them reversed, with one more layer each, as the UNet does."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    motion_layers_per_block: int | tuple[int, ...] = 2
    motion_transformer_layers_per_block: int | tuple[int, ...] = 1
    motion_mid_block_layers_per_block: int = 1
    motion_transformer_layers_per_mid_block: int | tuple[int, ...] = 1
    motion_num_attention_heads: int | tuple[int, ...] = 8
    motion_norm_num_groups: int = 32
    motion_max_seq_length: int = 32
    use_motion_mid_block: bool = True

    def __post_init__(self):
        n = len(self.block_out_channels)
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        for name in ("motion_layers_per_block", "motion_transformer_layers_per_block", "motion_num_attention_heads"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple)):
                if len(v) != n:
                    raise ConfigError(f"MotionAdapterConfig: {name} has {len(v)} entries for {n} blocks")
                if any(isinstance(e, (list, tuple)) for e in v):
                    raise ConfigError(f"MotionAdapterConfig: per-layer {name} is not supported")
                object.__setattr__(self, name, tuple(v))
        v = self.motion_transformer_layers_per_mid_block
        if isinstance(v, (list, tuple)):
            if len(v) != self.motion_mid_block_layers_per_block:
                raise ConfigError("MotionAdapterConfig: motion_transformer_layers_per_mid_block needs one entry "
                                  f"per mid layer ({self.motion_mid_block_layers_per_block})")
            object.__setattr__(self, "motion_transformer_layers_per_mid_block", tuple(v))
        if self.motion_max_seq_length < 1:
            raise ConfigError(f"MotionAdapterConfig: motion_max_seq_length must be >= 1, got {self.motion_max_seq_length}")
        for c, h in zip(self.block_out_channels, self.per_block("motion_num_attention_heads")):
            if c % h or c % self.motion_norm_num_groups:
                raise ConfigError(f"MotionAdapterConfig: {c} channels do not split into {h} heads and "
                                  f"{self.motion_norm_num_groups} groups")

    def per_block(self, name: str) -> tuple[int, ...]:
        v = getattr(self, name)
        return tuple(v) if isinstance(v, tuple) else (v,) * len(self.block_out_channels)

    def mid_layers(self) -> tuple[int, ...]:
        """Transformer layers of each mid-block motion module (empty without a motion mid block)."""
        if not self.use_motion_mid_block:
            return ()
        v = self.motion_transformer_layers_per_mid_block
        return tuple(v) if isinstance(v, tuple) else (v,) * self.motion_mid_block_layers_per_block

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MotionAdapterConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any]) -> "MotionAdapterConfig":
        """From a MotionAdapter `config.json`; PIA's extra `conv_in` is not supported."""
        if cfg.get("conv_in_channels"):
            raise ConfigError(f"unsupported MotionAdapter config: conv_in_channels={cfg['conv_in_channels']} (PIA)")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in cfg.items() if k in fields})

    @classmethod
    def preset(cls, name: str) -> "MotionAdapterConfig":
        if name not in MOTION_PRESETS:
            raise ConfigError(f"unknown motion adapter preset {name!r}; one of {', '.join(MOTION_PRESETS)}")
        return MOTION_PRESETS[name]


MOTION_PRESETS = {
    # Matches UNetConfig.preset("tiny") (widths 32/64, one layer per block, 8 groups).
    "tiny": MotionAdapterConfig(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                                motion_norm_num_groups=8),
    # The released SD 1.5 motion modules: mm_sd_v15 (24 positions, no mid block), mm_sd_v15_v2 (mid block)
    # and v3_sd15_mm (no mid block), which is how diffusers' single-file loader tells them apart.
    "v1": MotionAdapterConfig(motion_max_seq_length=24, use_motion_mid_block=False),
    "v2": MotionAdapterConfig(),
    "v3": MotionAdapterConfig(use_motion_mid_block=False),
}


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """diffusers' SinusoidalPositionalEmbedding `pe[0]`: sin on even channels, cos on odd, `(length, dim)`."""
    position = np.arange(length, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / dim))
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(position * div)
    pe[:, 1::2] = np.cos(position * div)
    return pe


class TemporalTransformerBlock(BasicTransformerBlock):
    """BasicTransformerBlock with `double_self_attention` and sinusoidal positions on both attentions."""

    def __init__(self, dim: int, heads: int, *, max_seq_length: int, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        # attn2 is a self-attention; building it with a context width of `dim` gives it the right shapes.
        super().__init__(dim, heads, dim // heads, cross_attention_dim=dim, dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)
        self.max_seq_length = max_seq_length

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        frames, dim = x.shape[-2:]
        if frames > self.max_seq_length:
            raise ConfigError(f"motion module: {frames} frames exceed its {self.max_seq_length} positions")
        pe = jnp.asarray(sinusoidal_table(frames, dim))
        h = (self.norm1(x).astype(F32) + pe).astype(x.dtype)
        x = x + self.attn1(h)
        h = (self.norm2(x).astype(F32) + pe).astype(x.dtype)
        x = x + self.attn2(h)
        return self.feed_forward(x)


class AnimateDiffTransformer3D(nnx.Module):
    """One motion module: `norm`, `proj_in`, `transformer_blocks`, `proj_out`, residual; on (B*T, H, W, C)."""

    def __init__(self, channels: int, heads: int, *, num_layers: int = 1, norm_num_groups: int = 32,
                 max_seq_length: int = 32, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = GroupNorm(norm_num_groups, channels, eps=1e-6, **kw)
        self.proj_in = linear(channels, channels, **kw)
        self.transformer_blocks = nnx.List([TemporalTransformerBlock(channels, heads, max_seq_length=max_seq_length, **kw)
                                            for _ in range(num_layers)])
        self.proj_out = linear(channels, channels, **kw)

    def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
        bt, h, w, c = x.shape
        if bt % num_frames:
            raise ConfigError(f"motion module: batch {bt} is not a whole number of {num_frames}-frame clips")
        b = bt // num_frames
        # The norm's statistics span all frames of a clip (torch normalises (B, C, T, H, W)).
        y = self.norm(x.reshape(b, num_frames, h, w, c))
        y = self.proj_in(y.transpose(0, 2, 3, 1, 4).reshape(b * h * w, num_frames, c))
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y).reshape(b, h, w, num_frames, c).transpose(0, 3, 1, 2, 4)
        return y.reshape(bt, h, w, c) + x


class MotionModules(nnx.Module):
    """diffusers `MotionModules`: the `motion_modules` list of one block."""

    def __init__(self, channels: int, heads: int, layers: tuple[int, ...], *, norm_num_groups: int,
                 max_seq_length: int, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        self.motion_modules = nnx.List([
            AnimateDiffTransformer3D(channels, heads, num_layers=n, norm_num_groups=norm_num_groups,
                                     max_seq_length=max_seq_length, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for n in layers
        ])


class MotionAdapter(nnx.Module):
    """diffusers `MotionAdapter`: `down_blocks`, `mid_block` (or None), `up_blocks` of motion modules.

    Used on its own by the converter (its parameter paths are the adapter's), and by `UNetMotionModel`,
    which places these same modules inside the UNet blocks."""

    def __init__(self, config: MotionAdapterConfig, *, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        self.config = config
        kw = dict(norm_num_groups=config.motion_norm_num_groups, max_seq_length=config.motion_max_seq_length,
                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch = config.block_out_channels
        heads = config.per_block("motion_num_attention_heads")
        layers = config.per_block("motion_layers_per_block")
        tlayers = config.per_block("motion_transformer_layers_per_block")
        self.down_blocks = nnx.List([MotionModules(ch[i], heads[i], (tlayers[i],) * layers[i], **kw)
                                     for i in range(len(ch))])
        mid = config.mid_layers()
        self.mid_block = MotionModules(ch[-1], heads[-1], mid, **kw) if mid else None
        self.up_blocks = nnx.List([MotionModules(c, h, (t,) * (n + 1), **kw)
                                   for c, h, t, n in zip(ch[::-1], heads[::-1], tlayers[::-1], layers[::-1])])

    def modules_for(self, part: str, index: int) -> list[nnx.Module]:
        """The motion modules of one UNet block (`UNet2DConditionModel`'s `motion_modules` hook)."""
        if part == "mid":
            return list(self.mid_block.motion_modules) if self.mid_block is not None else []
        blocks = self.down_blocks if part == "down" else self.up_blocks
        return list(blocks[index].motion_modules)


def check_compatible(unet: UNetConfig, motion: MotionAdapterConfig) -> None:
    """diffusers' `UNetMotionModel.from_unet2d` checks: same block widths and layers per block."""
    if tuple(unet.block_out_channels) != motion.block_out_channels:
        raise ConfigError(f"motion adapter for blocks {motion.block_out_channels} does not fit a UNet with "
                          f"{tuple(unet.block_out_channels)}")
    if motion.per_block("motion_layers_per_block") != (unet.layers_per_block,) * len(unet.block_out_channels):
        raise ConfigError(f"motion adapter has {motion.motion_layers_per_block} layers per block, the UNet "
                          f"{unet.layers_per_block}")
    if len(motion.mid_layers()) > 1:
        raise ConfigError(f"motion adapter has {len(motion.mid_layers())} mid-block motion modules; the UNet's mid "
                          "block has one transformer")


class UNetMotionModel(UNet2DConditionModel):
    """diffusers `UNetMotionModel` (SD UNet + MotionAdapter) on videos `(B, T, H, W, C)`.

    `__call__(sample (B, T, H, W, C), timesteps scalar or (B,), context (B, S, D)) -> (B, T, H, W, out)`:
    every frame of a clip shares its timestep and text context (the pipeline repeats them per frame)."""

    def __init__(self, config: UNetConfig, motion: MotionAdapterConfig, *, dtype=F32, param_dtype=F32,
                 rngs: nnx.Rngs):
        check_compatible(config, motion)
        adapter = MotionAdapter(motion, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        super().__init__(config, motion_modules=adapter.modules_for, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.motion_config = motion

    def __call__(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array) -> jax.Array:
        b, t, h, w, c = sample.shape
        ts = jnp.repeat(jnp.broadcast_to(jnp.asarray(timesteps, F32).reshape(-1), (b,)), t)
        ctx = jnp.repeat(context, t, axis=0)
        out = super().__call__(sample.reshape(b * t, h, w, c), ts, ctx, num_frames=t)
        return out.reshape(b, t, h, w, out.shape[-1])


def merge_params(unet_params: Mapping[str, Any], adapter_params: Mapping[str, Any]) -> dict[str, Any]:
    """Flat params of an `sd-unet` and an `animatediff` checkpoint -> those of `UNetMotionModel`."""
    clash = sorted(set(unet_params) & set(adapter_params))
    if clash:
        raise ConfigError(f"UNet and motion adapter weights overlap ({', '.join(clash[:4])})")
    return {**unet_params, **adapter_params}
