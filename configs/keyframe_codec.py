"""Model configuration of the M3-CVC keyframe codec (frozen dataclass with presets).

`paper` builds on **Stable Diffusion 1.5** (VAE, 860M UNet, CLIP ViT-L/14 text tower), not 2.1, because:
its text encoder is OpenAI CLIP ViT-L/14 (768-d hidden states), the same tower SEINE (SD 1.4-based)
cross-attends to, so one `D_F` encoding serves the keyframe and the clip decoders; SD 2.1 would add
OpenCLIP ViT-H/14 (1024-d) next to it. SD 1.5 is trained at 512x512, the paper's resolution (2.1's v-model
is 768px), and predicts epsilon, which is the paper's fine-tuning loss. The grid is PerCo's 32x32 indices
for 512x512 (16 pixels per index; 32x20 at 512x320); 8 pixels per index gives the 64x64 variant.
Decoding follows PerCo: DDIM, 20 steps, classifier-free guidance 3.0 on the text.
`tiny` keeps every architectural feature at toy widths with random weights (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.clip import CLIPTextConfig
from m3cvc_jax.nn.clip import PRESETS as CLIP_PRESETS
from m3cvc_jax.nn.post_encoder import PostEncoderConfig, stages_for_grid
from m3cvc_jax.nn.unet import UNetConfig
from m3cvc_jax.nn.vae import VAEConfig


@dataclasses.dataclass(frozen=True)
class KeyframeCodecConfig:
    vae: VAEConfig
    unet: UNetConfig  # extra_in_channels == post_encoder.codebook_dim (checked)
    text: CLIPTextConfig
    post_encoder: PostEncoderConfig
    width: int = 512
    height: int = 320
    pixels_per_index: int = 16
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
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
    def from_dict(cls, d) -> "KeyframeCodecConfig":
        d = dict(d)
        return cls(vae=VAEConfig.from_dict(d.pop("vae")), unet=UNetConfig.from_dict(d.pop("unet")),
                   text=CLIPTextConfig(**d.pop("text")), post_encoder=PostEncoderConfig(**d.pop("post_encoder")), **d)


def _build(*, vae: VAEConfig, unet: UNetConfig, text: CLIPTextConfig, post_encoder: PostEncoderConfig,
           pixels_per_index: int, **kw) -> KeyframeCodecConfig:
    pe = dataclasses.replace(post_encoder, num_stages=stages_for_grid(pixels_per_index, vae.downsample_factor))
    unet = dataclasses.replace(unet, extra_in_channels=pe.codebook_dim)
    return KeyframeCodecConfig(vae=vae, unet=unet, text=text, post_encoder=pe, pixels_per_index=pixels_per_index, **kw)


def tiny(*, pixels_per_index: int = 16, width: int = 128, height: int = 80, **kw) -> KeyframeCodecConfig:
    return _build(vae=VAEConfig.preset("tiny"), unet=UNetConfig.preset("tiny"), text=CLIP_PRESETS["tiny"].text,
                  post_encoder=PostEncoderConfig.tiny(), pixels_per_index=pixels_per_index, width=width,
                  height=height, num_inference_steps=kw.pop("num_inference_steps", 4), **kw)


def paper(*, pixels_per_index: int = 16, **kw) -> KeyframeCodecConfig:
    # SD 1.x's text encoder is CLIP ViT-L/14's text tower (transformers' CLIPTextModel, 768-d).
    return _build(vae=VAEConfig.preset("sd"), unet=UNetConfig.preset("sd15"), text=CLIP_PRESETS["vit-l-14"].text,
                  post_encoder=PostEncoderConfig(), pixels_per_index=pixels_per_index, **kw)


# The `demo` preset's models (trained here, scripts/train_demo.sh): SD's layouts at small widths, 128x80,
# one index per latent pixel (8 px), a 256-word codebook, the tiny CLIP text tower (random, frozen).
DEMO_VAE = VAEConfig(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=16)
DEMO_UNET = dataclasses.replace(UNetConfig.preset("tiny"), block_out_channels=(64, 128), norm_num_groups=16,
                                sample_size=16)


def demo(*, pixels_per_index: int = 8, width: int = 128, height: int = 80, **kw) -> KeyframeCodecConfig:
    return _build(vae=DEMO_VAE, unet=DEMO_UNET, text=CLIP_PRESETS["tiny"].text,
                  post_encoder=PostEncoderConfig(channels=64, num_res_blocks=1, codebook_dim=8, codebook_size=256),
                  pixels_per_index=pixels_per_index, width=width, height=height,
                  num_inference_steps=kw.pop("num_inference_steps", 20), **kw)


PRESETS = {"tiny": tiny, "paper": paper, "demo": demo}
