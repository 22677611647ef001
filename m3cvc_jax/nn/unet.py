"""Stable Diffusion 1.x / 2.x UNet2DConditionModel (diffusers names), channels-last.

`UNet2DConditionModel(config)(sample, timesteps, context)`: sample `(B, H, W, in_channels +
extra_in_channels)`, timesteps scalar or `(B,)`, context `(B, S, cross_attention_dim)` -> `(B, H, W,
out_channels)`. `extra_in_channels` widens `conv_in` with zero-initialised input channels (M3-CVC's
keyframe condition concatenated to the noisy latent): a model converted from plain SD weights computes
exactly what SD computes whatever those channels hold, until fine-tuning moves them.

`motion_modules(part, index)` (AnimateDiff, nn/animatediff.py) inserts one module per layer after each
spatial layer of a block ("down"/"up" block index, or "mid" 0), applied as `module(x, num_frames)` on the
(B*T, H, W, C) frames; `__call__(..., num_frames=T)` says how the batch splits into clips.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.layers import (Downsample2D, GroupNorm, ResnetBlock2D, TimestepEmbedding, Timesteps,
                                 Transformer2DModel, Upsample2D, conv2d)

F32 = jnp.float32
CROSS_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"
MID = "UNetMidBlock2DCrossAttn"


# Every UNet2DConditionModel (diffusers 0.42) argument the port does not implement, at the value that makes it
# a no-op. A config.json with any other value describes a different network, so it is refused rather than
# converted into a model that silently computes something else. Arguments that only matter together with
# one of these (e.g. projection_class_embeddings_input_dim with class_embed_type) are listed too, so that
# a half-specified config does not slip through either. `dropout` changes training, not inference, but
# the port has no dropout, so fine-tuning such a model here would not be the model's own recipe.
_UNHONOURED_DEFAULTS = {
    "act_fn": "silu", "center_input_sample": False, "class_embed_type": None, "addition_embed_type": None,
    "addition_embed_type_num_heads": 64, "addition_time_embed_dim": None, "encoder_hid_dim": None,
    "encoder_hid_dim_type": None, "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "time_cond_proj_dim": None,
    "resnet_time_scale_shift": "default", "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "mid_block_type": MID, "mid_block_scale_factor": 1, "dual_cross_attention": False,
    "only_cross_attention": False, "cross_attention_norm": None, "num_class_embeds": None,
    "projection_class_embeddings_input_dim": None, "class_embeddings_concat": False, "conv_in_kernel": 3,
    "conv_out_kernel": 3, "attention_type": "default", "reverse_transformer_layers_per_block": None,
    "dropout": 0.0,
}


def _same(value: Any, default: Any) -> bool:
    # JSON turns 1.0 into 1 and tuples into lists; only_cross_attention may be a per-block list of False.
    if isinstance(value, (list, tuple)) and not isinstance(default, (list, tuple)):
        return all(_same(v, default) for v in value)
    if isinstance(default, float) or isinstance(value, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) == float(default)
    return value == default


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """num_attention_heads: heads per block (int or one per down block). diffusers' SD configs store
    this under `attention_head_dim` (a historical misnomer); `from_diffusers` reads either key.
    upcast_attention is kept for fidelity; attention logits and softmax are float32 here anyway."""

    in_channels: int = 4
    out_channels: int = 4
    extra_in_channels: int = 0
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    down_block_types: tuple[str, ...] = (CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN)
    up_block_types: tuple[str, ...] = (PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP)
    cross_attention_dim: int = 768
    num_attention_heads: int | tuple[int, ...] = 8
    transformer_layers_per_block: int | tuple[int, ...] = 1
    use_linear_projection: bool = False
    upcast_attention: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    downsample_padding: int = 1
    sample_size: int = 64

    def __post_init__(self):
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ConfigError(f"UNetConfig: {n} block widths but {len(self.down_block_types)} down and "
                              f"{len(self.up_block_types)} up block types")
        unknown = sorted(set(self.down_block_types) - {CROSS_DOWN, PLAIN_DOWN}
                         | set(self.up_block_types) - {CROSS_UP, PLAIN_UP})
        if unknown:
            raise ConfigError(f"UNetConfig: unsupported block types {', '.join(unknown)}")
        for name in ("num_attention_heads", "transformer_layers_per_block"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple)):
                if len(v) != n:
                    raise ConfigError(f"UNetConfig: {name} has {len(v)} entries for {n} blocks")
                object.__setattr__(self, name, tuple(v))
        for name in ("block_out_channels", "down_block_types", "up_block_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def per_block(self, name: str) -> tuple[int, ...]:
        v = getattr(self, name)
        return tuple(v) if isinstance(v, tuple) else (v,) * len(self.block_out_channels)

    @classmethod
    def preset(cls, name: str) -> "UNetConfig":
        if name not in UNET_PRESETS:
            raise ConfigError(f"unknown UNet preset {name!r}; one of {', '.join(UNET_PRESETS)}")
        return UNET_PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        """Inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any], *, extra_in_channels: int = 0) -> "UNetConfig":
        """From a UNet2DConditionModel `config.json` dict; features this port lacks are a ConfigError."""
        bad = [f"{k}={cfg[k]!r}" for k, v in _UNHONOURED_DEFAULTS.items() if k in cfg and not _same(cfg[k], v)]
        if cfg.get("mid_block_only_cross_attention") not in (None, False):
            bad.append(f"mid_block_only_cross_attention={cfg['mid_block_only_cross_attention']!r}")
        for k in ("cross_attention_dim", "layers_per_block"):
            if isinstance(cfg.get(k), (list, tuple)):
                bad.append(f"per-block {k}={cfg[k]!r}")
        for k in ("num_attention_heads", "attention_head_dim", "transformer_layers_per_block"):
            v = cfg.get(k)
            if isinstance(v, (list, tuple)) and any(isinstance(e, (list, tuple)) for e in v):
                bad.append(f"per-layer {k}={v!r}")
        if bad:
            raise ConfigError(f"unsupported UNet2DConditionModel config: {', '.join(bad)}")
        heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in cfg.items() if k in fields and k != "num_attention_heads"}
        return cls.from_dict({**kw, "num_attention_heads": heads, "extra_in_channels": extra_in_channels})


UNET_PRESETS = {
    # cross_attention_dim 32 matches the tiny text encoder's width.
    "tiny": UNetConfig(block_out_channels=(32, 64), layers_per_block=1, down_block_types=(CROSS_DOWN, PLAIN_DOWN),
                       up_block_types=(PLAIN_UP, CROSS_UP), cross_attention_dim=32, num_attention_heads=2,
                       norm_num_groups=8, sample_size=32),
    "sd15": UNetConfig(),
    "sd21": UNetConfig(cross_attention_dim=1024, num_attention_heads=(5, 10, 20, 20), use_linear_projection=True,
                       upcast_attention=True, sample_size=96),
}


class DownBlock(nnx.Module):
    """CrossAttnDownBlock2D (`attention=True`) or DownBlock2D."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, *, num_layers: int,
                 attention: bool, heads: int, transformer_layers: int, add_downsample: bool, cfg: UNetConfig,
                 motion_modules: Sequence[nnx.Module] = (), dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=temb_channels,
                          groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)
            for i in range(num_layers)
        ])
        self.attentions = nnx.List([_transformer(out_channels, heads, transformer_layers, cfg, kw)
                                    for _ in range(num_layers)] if attention else [])
        self.downsamplers = nnx.List([Downsample2D(out_channels, padding=cfg.downsample_padding, **kw)]
                                     if add_downsample else [])
        self.motion_modules = nnx.List(motion_modules)

    def __call__(self, x, temb, context, num_frames=1):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if len(self.attentions):
                x = self.attentions[i](x, context)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class UpBlock(nnx.Module):
    """CrossAttnUpBlock2D (`attention=True`) or UpBlock2D; each resnet eats one skip connection."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb_channels: int, *,
                 num_layers: int, attention: bool, heads: int, transformer_layers: int, add_upsample: bool,
                 cfg: UNetConfig, motion_modules: Sequence[nnx.Module] = (), dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        resnets = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            base = prev_channels if i == 0 else out_channels
            resnets.append(ResnetBlock2D(base + skip, out_channels, temb_channels=temb_channels,
                                         groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw))
        self.resnets = nnx.List(resnets)
        self.attentions = nnx.List([_transformer(out_channels, heads, transformer_layers, cfg, kw)
                                    for _ in range(num_layers)] if attention else [])
        self.upsamplers = nnx.List([Upsample2D(out_channels, **kw)] if add_upsample else [])
        self.motion_modules = nnx.List(motion_modules)

    def __call__(self, x, skips, temb, context, upsample_size=None, num_frames=1):
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips.pop()], axis=-1), temb)
            if len(self.attentions):
                x = self.attentions[i](x, context)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
        for up in self.upsamplers:
            x = up(x, upsample_size)
        return x


class MidBlock(nnx.Module):
    """UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) pairs; a motion module, if any, goes
    between the transformer and the resnet (diffusers' UNetMidBlockCrossAttnMotion)."""

    def __init__(self, channels: int, temb_channels: int, *, heads: int, transformer_layers: int,
                 cfg: UNetConfig, motion_modules: Sequence[nnx.Module] = (), dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResnetBlock2D(channels, channels, temb_channels=temb_channels,
                                               groups=cfg.norm_num_groups, eps=cfg.norm_eps, **kw)
                                 for _ in range(2)])
        self.attentions = nnx.List([_transformer(channels, heads, transformer_layers, cfg, kw)])
        self.motion_modules = nnx.List(motion_modules)

    def __call__(self, x, temb, context, num_frames=1):
        x = self.resnets[0](x, temb)
        for i, (attn, resnet) in enumerate(zip(self.attentions, self.resnets[1:])):
            x = attn(x, context)
            if len(self.motion_modules):
                x = self.motion_modules[i](x, num_frames)
            x = resnet(x, temb)
        return x


def _transformer(channels: int, heads: int, num_layers: int, cfg: UNetConfig, kw) -> Transformer2DModel:
    return Transformer2DModel(heads, channels // heads, channels, num_layers=num_layers,
                              cross_attention_dim=cfg.cross_attention_dim, norm_num_groups=cfg.norm_num_groups,
                              use_linear_projection=cfg.use_linear_projection,
                              upcast_attention=cfg.upcast_attention, **kw)


MotionModules = Callable[[str, int], Sequence[nnx.Module]]


class UNet2DConditionModel(nnx.Module):
    def __init__(self, config: UNetConfig, *, motion_modules: MotionModules | None = None, dtype=F32,
                 param_dtype=F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        motion = motion_modules or (lambda part, index: ())
        self.config, self.dtype = config, dtype
        ch = config.block_out_channels
        heads = config.per_block("num_attention_heads")
        tlayers = config.per_block("transformer_layers_per_block")
        temb = ch[0] * 4
        self.conv_in = conv2d(config.in_channels + config.extra_in_channels, ch[0], 3, padding=1, **kw)
        if config.extra_in_channels:
            k = self.conv_in.kernel
            k.set_value(k.get_value().at[:, :, config.in_channels:, :].set(0))
        self.time_proj = Timesteps(ch[0], config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(ch[0], temb, **kw)
        n = len(ch)
        self.down_blocks = nnx.List([
            DownBlock(ch[max(i - 1, 0)], ch[i], temb, num_layers=config.layers_per_block,
                      attention=config.down_block_types[i] == CROSS_DOWN, heads=heads[i],
                      transformer_layers=tlayers[i], add_downsample=i < n - 1, cfg=config,
                      motion_modules=motion("down", i), **kw)
            for i in range(n)
        ])
        self.mid_block = MidBlock(ch[-1], temb, heads=heads[-1], transformer_layers=tlayers[-1], cfg=config,
                                  motion_modules=motion("mid", 0), **kw)
        rch, rheads, rtl = ch[::-1], heads[::-1], tlayers[::-1]
        self.up_blocks = nnx.List([
            UpBlock(rch[min(i + 1, n - 1)], rch[max(i - 1, 0)], rch[i], temb, num_layers=config.layers_per_block + 1,
                    attention=config.up_block_types[i] == CROSS_UP, heads=rheads[i], transformer_layers=rtl[i],
                    add_upsample=i < n - 1, cfg=config, motion_modules=motion("up", i), **kw)
            for i in range(n)
        ])
        self.conv_norm_out = GroupNorm(config.norm_num_groups, ch[0], eps=config.norm_eps, **kw)
        self.conv_out = conv2d(ch[0], config.out_channels, 3, padding=1, **kw)

    def __call__(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array, *, num_frames: int = 1
                 ) -> jax.Array:
        b, h, w, _ = sample.shape
        t = jnp.broadcast_to(jnp.asarray(timesteps, F32).reshape(-1), (b,))
        temb = self.time_embedding(self.time_proj(t).astype(self.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, s = block(x, temb, context, num_frames)
            skips.extend(s)
        x = self.mid_block(x, temb, context, num_frames)
        # Resolutions not divisible by 2^(blocks-1): upsample to the matching skip's size, as diffusers does.
        factor = 2 ** (len(self.up_blocks) - 1)
        odd = h % factor or w % factor
        for i, block in enumerate(self.up_blocks):
            used = skips[-len(block.resnets):]
            del skips[-len(block.resnets):]
            size = skips[-1].shape[1:3] if odd and len(block.upsamplers) else None
            x = block(x, used, temb, context, size, num_frames)
        return self.conv_out(self.conv_norm_out(x, act="silu"))
