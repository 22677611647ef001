"""ELIC-style post-encoder: SD latent `(B, h, w, 4)` -> `h` `(B, h/2^s, w/2^s, D)` for the VQ, plus its
codebook and the training-only post-decoder that pairs the commit loss with a latent reconstruction.

Blocks follow ELIC (He et al. 2022) as implemented in CompressAI: the residual bottleneck block
(1x1 -> 3x3 -> 1x1 at half width, ReLU, identity skip) and Cheng et al.'s simplified attention block
(a trunk of three residual units gated by a sigmoid of a second trunk ending in a 1x1 conv). The number of
stride-2 stages `s` is what sets the index grid: the SD latent is already 1/8 of the frame, so a 32x32 grid
on a 512x512 frame (16 pixels per index) takes one stage and a 64x64 grid none (see `stages_for_grid`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.layers import conv2d, upsample_nearest

Dtype = Any
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class PostEncoderConfig:
    latent_channels: int = 4  # the SD VAE latent
    channels: int = 192  # ELIC's N
    num_res_blocks: int = 3  # residual bottleneck blocks per stage
    num_stages: int = 1  # stride-2 stages: 1 -> 16 px per index with the SD VAE (32x32 at 512x512)
    codebook_dim: int = 32
    codebook_size: int = 256

    @classmethod
    def tiny(cls, **kw) -> "PostEncoderConfig":
        return cls(**{**dict(channels=16, num_res_blocks=1, num_stages=1, codebook_dim=8, codebook_size=32), **kw})


def stages_for_grid(pixels_per_index: int, vae_factor: int = 8) -> int:
    """Stride-2 stages so that one index covers `pixels_per_index` pixels behind a VAE of `vae_factor`."""
    ratio = pixels_per_index / vae_factor
    stages = round(math.log2(ratio)) if ratio >= 1 else -1
    if stages < 0 or 2**stages * vae_factor != pixels_per_index:
        raise ConfigError(
            f"grid of {pixels_per_index} px per index is not a power-of-two multiple of the VAE factor {vae_factor}"
        )
    return stages


class ResidualBottleneckBlock(nnx.Module):
    """ELIC's residual bottleneck: x + conv1x1(relu(conv3x3(relu(conv1x1(x)))))) at half width."""

    def __init__(self, channels: int, *, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        mid = max(channels // 2, 1)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = conv2d(channels, mid, 1, padding=0, **kw)
        self.conv2 = conv2d(mid, mid, 3, padding=1, **kw)
        self.conv3 = conv2d(mid, channels, 1, padding=0, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jax.nn.relu(self.conv1(x))
        out = jax.nn.relu(self.conv2(out))
        return x + self.conv3(out)


class ResidualUnit(nnx.Module):
    """Residual unit of the simplified attention block: relu(x + conv1x1(relu(conv3x3(relu(conv1x1(x))))))."""

    def __init__(self, channels: int, *, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        self.block = ResidualBottleneckBlock(channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.block(x))


class AttentionBlock(nnx.Module):
    """Cheng et al.'s simplified attention (as in ELIC): x + trunk(x) * sigmoid(mask_branch(x))."""

    def __init__(self, channels: int, *, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv_a = nnx.List([ResidualUnit(channels, **kw) for _ in range(3)])
        self.conv_b = nnx.List([ResidualUnit(channels, **kw) for _ in range(3)])
        self.conv_b_out = conv2d(channels, channels, 1, padding=0, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        a, b = x, x
        for unit in self.conv_a:
            a = unit(a)
        for unit in self.conv_b:
            b = unit(b)
        gate = jax.nn.sigmoid(self.conv_b_out(b).astype(F32)).astype(a.dtype)
        return x + a * gate


class Stage(nnx.Module):
    def __init__(self, channels: int, num_res_blocks: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.resnets = nnx.List([ResidualBottleneckBlock(channels, **kw) for _ in range(num_res_blocks)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.resnets:
            x = block(x)
        return x


class PostEncoder(nnx.Module):
    """SD latent -> `h` with `codebook_dim` channels at `1/2^num_stages` of the latent grid.

    conv_in 3x3 -> residual stage -> [5x5 stride-2 conv -> residual stage] x num_stages -> attention ->
    conv_out 3x3. The attention block sits at the index resolution, where a wide receptive field decides
    what each 8-bit index describes (ELIC places its attention blocks at its two lowest resolutions).
    """

    def __init__(self, config: PostEncoderConfig, *, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        self.config = config
        c = config.channels
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv_in = conv2d(config.latent_channels, c, 3, padding=1, **kw)
        self.stage_in = Stage(c, config.num_res_blocks, **kw)
        self.downsamplers = nnx.List([conv2d(c, c, 5, stride=2, padding=2, **kw) for _ in range(config.num_stages)])
        self.stages = nnx.List([Stage(c, config.num_res_blocks, **kw) for _ in range(config.num_stages)])
        self.attention = AttentionBlock(c, **kw)
        self.conv_out = conv2d(c, config.codebook_dim, 3, padding=1, **kw)

    def __call__(self, latent: jax.Array) -> jax.Array:
        factor = 2**self.config.num_stages
        if latent.shape[1] % factor or latent.shape[2] % factor:
            raise ConfigError(f"latent {latent.shape[1]}x{latent.shape[2]} is not divisible by {factor}")
        x = self.stage_in(self.conv_in(latent))
        for down, stage in zip(self.downsamplers, self.stages):
            x = stage(down(x))
        return self.conv_out(self.attention(x))


class PostDecoder(nnx.Module):
    """Training-only mirror of the post-encoder: quantised `h` -> SD latent, for the reconstruction loss.

    Without it the commit loss alone is minimised by mapping everything onto one codeword; this decoder
    makes the indices carry the latent. It is not part of the transmitted model (the UNet decodes).
    """

    def __init__(self, config: PostEncoderConfig, *, dtype: Dtype = F32, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        self.config = config
        c = config.channels
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv_in = conv2d(config.codebook_dim, c, 3, padding=1, **kw)
        self.attention = AttentionBlock(c, **kw)
        self.stages = nnx.List([Stage(c, config.num_res_blocks, **kw) for _ in range(config.num_stages)])
        self.upsamplers = nnx.List([conv2d(c, c, 3, padding=1, **kw) for _ in range(config.num_stages)])
        self.stage_out = Stage(c, config.num_res_blocks, **kw)
        self.conv_out = conv2d(c, config.latent_channels, 3, padding=1, **kw)

    def __call__(self, h: jax.Array) -> jax.Array:
        x = self.attention(self.conv_in(h))
        for stage, up in zip(self.stages, self.upsamplers):
            x = up(upsample_nearest(stage(x)))
        return self.conv_out(self.stage_out(x))


class Codebook(nnx.Module):
    """The VQ codebook `(codebook_size, codebook_dim)`; the maths lives in `m3cvc_jax.codec.vq`."""

    def __init__(self, config: PostEncoderConfig, *, param_dtype: Dtype = F32, rngs: nnx.Rngs):
        k, d = config.codebook_size, config.codebook_dim
        # Small uniform init as in VQ-VAE; dead-code restarts move unused words onto real encoder outputs.
        self.embedding = nnx.Param(
            jax.random.uniform(rngs.params(), (k, d), param_dtype, -1.0 / k, 1.0 / k)
        )

    def __call__(self) -> jax.Array:
        return self.embedding[...]
