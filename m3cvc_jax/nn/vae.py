"""Stable Diffusion's AutoencoderKL (diffusers names), channels-last.

`encode(x) -> (mean, logvar)` of the latent Gaussian (before `scaling_factor`), `decode(z) -> image`;
images are `(B, H, W, 3)` in [-1, 1], latents `(B, H/f, W/f, latent_channels)` with f = 2^(blocks-1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.layers import Attention, Downsample2D, GroupNorm, ResnetBlock2D, Upsample2D, conv2d, linear

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @classmethod
    def preset(cls, name: str) -> "VAEConfig":
        if name not in VAE_PRESETS:
            raise ConfigError(f"unknown VAE preset {name!r}; one of {', '.join(VAE_PRESETS)}")
        return VAE_PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VAEConfig":
        """Inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any]) -> "VAEConfig":
        """From an AutoencoderKL `config.json` dict; features this port lacks are a ConfigError."""
        n = len(cfg.get("block_out_channels", (64,)))
        checks = {
            "down_block_types": tuple(cfg.get("down_block_types", ("DownEncoderBlock2D",) * n)) == ("DownEncoderBlock2D",) * n,
            "up_block_types": tuple(cfg.get("up_block_types", ("UpDecoderBlock2D",) * n)) == ("UpDecoderBlock2D",) * n,
            "act_fn": cfg.get("act_fn", "silu") == "silu",
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"unsupported AutoencoderKL config: {', '.join(f'{k}={cfg.get(k)!r}' for k in bad)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in cfg.items() if k in fields})

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


VAE_PRESETS = {
    # Same 8x downsampling and latent width as SD so pipelines run unchanged on random weights.
    "tiny": VAEConfig(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8),
    "sd": VAEConfig(),
}


class _Block(nnx.Module):
    """DownEncoderBlock2D / UpDecoderBlock2D: resnets then an optional resampler."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, *, resample: str | None,
                 groups: int, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb_channels=None,
                          groups=groups, eps=1e-6, **kw)
            for i in range(num_layers)
        ])
        # Empty lists hold no parameters, so each block has only the reference's resampler keys.
        self.downsamplers = nnx.List([Downsample2D(out_channels, padding=0, **kw)] if resample == "down" else [])
        self.upsamplers = nnx.List([Upsample2D(out_channels, **kw)] if resample == "up" else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in (*self.downsamplers, *self.upsamplers):
            x = sampler(x)
        return x


class MidBlock(nnx.Module):
    """UNetMidBlock2D without time embedding: resnet, (attention, resnet)."""

    def __init__(self, channels: int, *, groups: int, add_attention: bool, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResnetBlock2D(channels, temb_channels=None, groups=groups, eps=1e-6, **kw)
                                 for _ in range(2)])
        self.attentions = nnx.List([
            Attention(channels, heads=1, dim_head=channels, bias=True, norm_num_groups=groups, eps=1e-6,
                      residual_connection=True, **kw)
        ] if add_attention else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Encoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch, g = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw)
        self.down_blocks = nnx.List([
            _Block(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, resample="down" if i < len(ch) - 1 else None,
                   groups=g, **kw)
            for i in range(len(ch))
        ])
        self.mid_block = MidBlock(ch[-1], groups=g, add_attention=cfg.mid_block_add_attention, **kw)
        self.conv_norm_out = GroupNorm(g, ch[-1], eps=1e-6, **kw)
        self.conv_out = conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_norm_out(x, act="silu"))


class Decoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        ch, g = cfg.block_out_channels[::-1], cfg.norm_num_groups
        self.conv_in = conv2d(cfg.latent_channels, ch[0], 3, padding=1, **kw)
        self.mid_block = MidBlock(ch[0], groups=g, add_attention=cfg.mid_block_add_attention, **kw)
        self.up_blocks = nnx.List([
            _Block(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, resample="up" if i < len(ch) - 1 else None,
                   groups=g, **kw)
            for i in range(len(ch))
        ])
        self.conv_norm_out = GroupNorm(g, ch[-1], eps=1e-6, **kw)
        self.conv_out = conv2d(ch[-1], cfg.out_channels, 3, padding=1, **kw)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_norm_out(x, act="silu"))


class AutoencoderKL(nnx.Module):
    def __init__(self, config: VAEConfig, *, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        lat = config.latent_channels
        self.encoder = Encoder(config, **kw)
        self.decoder = Decoder(config, **kw)
        # 1x1 convs are Linear layers in channels-last (the converter reshapes the reference weights).
        self.quant_conv = linear(2 * lat, 2 * lat, **kw) if config.use_quant_conv else None
        self.post_quant_conv = linear(lat, lat, **kw) if config.use_post_quant_conv else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images -> (mean, logvar) of the posterior; logvar clipped to [-30, 20] like diffusers."""
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latents (unscaled, i.e. already divided by `scaling_factor`) -> images."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Reconstruction through the posterior mean, or a sample of it when a key is given."""
        mean, logvar = self.encode(x)
        z = mean if key is None else sample_posterior(mean, logvar, key)
        return self.decode(z)


def sample_posterior(mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
    std = jnp.exp(0.5 * logvar.astype(F32))
    return (mean.astype(F32) + std * jax.random.normal(key, mean.shape, F32)).astype(mean.dtype)
