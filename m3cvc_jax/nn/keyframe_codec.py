"""The M3-CVC keyframe codec's networks: its architecture config (with presets), the NNX module, and the
encoder side as pure functions (frame -> VQ index map).

Encoder: SD VAE encoder (posterior mean, scaled) -> ELIC-style post-encoder -> nearest codeword indices.
The decoder's conditioning is here too (codebook lookup -> nearest upsample to the latent size = z_hat,
joined to the UNet's input at its extended `conv_in`); the sampling that rebuilds a frame from it is a
decoder over these networks: `m3cvc_jax/decoders/keyframe.py`.

`paper` builds on **Stable Diffusion 1.5** (VAE, 860M UNet, CLIP ViT-L/14 text tower), not 2.1, because:
its text encoder is OpenAI CLIP ViT-L/14 (768-d hidden states), the same tower SEINE (SD 1.4-based)
cross-attends to, so one `D_F` encoding serves the keyframe and the clip decoders; SD 2.1 would add
OpenCLIP ViT-H/14 (1024-d) next to it. SD 1.5 is trained at 512x512, the paper's resolution (2.1's v-model
is 768px), and predicts epsilon, which is the paper's fine-tuning loss. The grid is PerCo's 32x32 indices
for 512x512 (16 pixels per index; 32x20 at 512x320); 8 pixels per index gives the 64x64 variant.
`tiny` keeps every architectural feature at toy widths with random weights (tests, benchmarks); `demo` is
the layout of the weights trained here (scripts/train_demo.sh).

NNX modules are pytrees, so `encode_keyframe(codec, frame)` is a pure function of the module's arrays:
callers `jax.jit` it directly. Nothing here jits, reads files or draws hidden noise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.codec import vq
from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.nn.clip import PRESETS as CLIP_PRESETS
from m3cvc_jax.nn.clip import CLIPTextConfig
from m3cvc_jax.nn.layers import upsample_nearest
from m3cvc_jax.nn.post_encoder import Codebook, PostEncoder, PostEncoderConfig, stages_for_grid
from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class KeyframeCodecConfig:
    """Architecture of the keyframe codec at one frame size (sampling settings are the decoder's
    call arguments: `decoders.keyframe.KeyframeDecoding`)."""

    vae: VAEConfig
    unet: UNetConfig  # extra_in_channels == post_encoder.codebook_dim (checked)
    text: CLIPTextConfig
    post_encoder: PostEncoderConfig
    width: int = 512
    height: int = 320
    pixels_per_index: int = 16
    text_pad_id: int = 49407  # SD 1.x pads prompts with <|endoftext|>

    def __post_init__(self):
        stages = stages_for_grid(self.pixels_per_index, self.vae.downsample_factor)
        if stages != self.post_encoder.num_stages:
            raise ConfigError(f"{self.pixels_per_index} px per index needs {stages} post-encoder stages, "
                              f"config has {self.post_encoder.num_stages}")
        if self.unet.extra_in_channels != self.post_encoder.codebook_dim:
            raise ConfigError(f"UNet extra_in_channels {self.unet.extra_in_channels} != codebook_dim "
                              f"{self.post_encoder.codebook_dim}")
        if self.unet.cross_attention_dim != self.text.hidden_size:
            raise ConfigError(f"UNet cross_attention_dim {self.unet.cross_attention_dim} != text width "
                              f"{self.text.hidden_size}")
        if self.width % self.pixels_per_index or self.height % self.pixels_per_index:
            raise ConfigError(f"{self.width}x{self.height} is not a multiple of {self.pixels_per_index} px per index")

    @property
    def grid(self) -> tuple[int, int]:
        """Index map (rows, cols) for a `height x width` frame."""
        return self.height // self.pixels_per_index, self.width // self.pixels_per_index

    @property
    def latent_size(self) -> tuple[int, int]:
        f = self.vae.downsample_factor
        return self.height // f, self.width // f

    @classmethod
    def preset(cls, name: str, **overrides) -> "KeyframeCodecConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown keyframe codec preset {name!r}; one of {', '.join(PRESETS)}")
        return PRESETS[name](**overrides)

    @classmethod
    def assemble(cls, *, vae: VAEConfig, unet: UNetConfig, text: CLIPTextConfig, post_encoder: PostEncoderConfig,
                 pixels_per_index: int, **kw) -> "KeyframeCodecConfig":
        """Components' configs joined: the post-encoder gets the stages the grid needs, the UNet the
        codebook's width as its extra input channels."""
        pe = dataclasses.replace(post_encoder, num_stages=stages_for_grid(pixels_per_index, vae.downsample_factor))
        unet = dataclasses.replace(unet, extra_in_channels=pe.codebook_dim)
        return cls(vae=vae, unet=unet, text=text, post_encoder=pe, pixels_per_index=pixels_per_index, **kw)


def tiny(*, pixels_per_index: int = 16, width: int = 128, height: int = 80, **kw) -> KeyframeCodecConfig:
    return KeyframeCodecConfig.assemble(
        vae=VAEConfig.preset("tiny"), unet=UNetConfig.preset("tiny"), text=CLIP_PRESETS["tiny"].text,
        post_encoder=PostEncoderConfig.tiny(), pixels_per_index=pixels_per_index, width=width, height=height, **kw)


def paper(*, pixels_per_index: int = 16, **kw) -> KeyframeCodecConfig:
    # SD 1.x's text encoder is CLIP ViT-L/14's text tower (transformers' CLIPTextModel, 768-d).
    return KeyframeCodecConfig.assemble(
        vae=VAEConfig.preset("sd"), unet=UNetConfig.preset("sd15"), text=CLIP_PRESETS["vit-l-14"].text,
        post_encoder=PostEncoderConfig(), pixels_per_index=pixels_per_index, **kw)


# The `demo` preset's models (trained here, scripts/train_demo.sh): SD's layouts at small widths, 128x80,
# one index per latent pixel (8 px), a 256-word codebook, the tiny CLIP text tower (random, frozen).
DEMO_VAE = VAEConfig(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16)
DEMO_UNET = dataclasses.replace(UNetConfig.preset("tiny"), block_out_channels=(64, 128), norm_num_groups=16,
                                sample_size=16)


def demo(*, pixels_per_index: int = 8, width: int = 128, height: int = 80, **kw) -> KeyframeCodecConfig:
    return KeyframeCodecConfig.assemble(
        vae=DEMO_VAE, unet=DEMO_UNET, text=CLIP_PRESETS["tiny"].text,
        post_encoder=PostEncoderConfig(channels=64, num_res_blocks=1, codebook_dim=8, codebook_size=256),
        pixels_per_index=pixels_per_index, width=width, height=height, **kw)


PRESETS = {"tiny": tiny, "paper": paper, "demo": demo}


class KeyframeCodec(nnx.Module):
    def __init__(self, config: KeyframeCodecConfig, *, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.vae = AutoencoderKL(config.vae, **kw)
        self.post_encoder = PostEncoder(config.post_encoder, **kw)
        self.codebook = Codebook(config.post_encoder, param_dtype=param_dtype, rngs=rngs)
        self.unet = UNet2DConditionModel(config.unet, **kw)


def frame_latent(vae: AutoencoderKL, frame: jax.Array) -> jax.Array:
    """Frames `(B, H, W, 3)` in [-1, 1] -> scaled SD latents (posterior mean x scaling_factor)."""
    mean, _ = vae.encode(frame)
    return mean * vae.config.scaling_factor


def latent_indices(post_encoder: PostEncoder, codebook: jax.Array, latent: jax.Array) -> jax.Array:
    return vq.nearest(post_encoder(latent), codebook)


def encode_keyframe(codec: KeyframeCodec, frame: jax.Array) -> jax.Array:
    """Frames `(B, H, W, 3)` in [-1, 1] -> index maps `(B, H/p, W/p)` int32 (p = pixels per index)."""
    return latent_indices(codec.post_encoder, codec.codebook(), frame_latent(codec.vae, frame))


def keyframe_distances(codec: KeyframeCodec, frame: jax.Array) -> jax.Array:
    """Frames `(B, H, W, 3)` in [-1, 1] -> `(B, h, w, K)` squared distances of each post-encoder vector to
    every codeword, per codeword dimension: the distortion term of `codec.index_rdo` (its argmin over K is
    `encode_keyframe`'s map)."""
    z = codec.post_encoder(frame_latent(codec.vae, frame))
    return vq.squared_distances(z, codec.codebook()) / z.shape[-1]


def condition(codebook: jax.Array, indices: jax.Array, latent_size: tuple[int, int]) -> jax.Array:
    """z_hat: codewords of `indices` `(B, h, w)` nearest-upsampled to `latent_size` -> `(B, H', W', D)`."""
    return upsample_nearest(vq.lookup(indices, codebook), tuple(latent_size))


def unet_eps(unet: UNet2DConditionModel, x: jax.Array, t: jax.Array, cond: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The sampler's model_fn: cond = (z_hat, text hidden states); z_hat joins x at `conv_in`."""
    z_hat, text = cond
    return unet(jnp.concatenate([x, z_hat.astype(x.dtype)], axis=-1), t, text)


def extend_conv_in(base: Any, in_channels: int, extra: int) -> jax.Array:
    """A plain SD `conv_in.kernel` `(3, 3, in, C)` widened with `extra` zero input channels."""
    base = jnp.asarray(base)
    if base.shape[2] == in_channels + extra:
        return base
    if base.shape[2] != in_channels:
        raise WeightsError(f"conv_in.kernel has {base.shape[2]} input channels, expected {in_channels} "
                           f"(plain SD) or {in_channels + extra} (extended)")
    pad = jnp.zeros((*base.shape[:2], extra, base.shape[3]), base.dtype)
    return jnp.concatenate([base, pad], axis=2)
