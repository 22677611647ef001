"""The M3-CVC keyframe codec: frame -> VQ index map -> frame, as an NNX module plus pure functions.

Encoder: SD VAE encoder (posterior mean, scaled) -> ELIC-style post-encoder -> nearest codeword indices.
Decoder: codebook lookup -> nearest upsample to the latent size = z_hat -> the SD UNet denoises with z_hat
concatenated at its extended `conv_in` and the description `D_F` (CLIP text hidden states) through
cross-attention, classifier-free guidance on the text (the image condition stays in both branches, as in
PerCo) -> VAE decode.

NNX modules are pytrees, so `encode_keyframe(codec, frame)` and `decode_keyframe(codec, ...)` are pure
functions of the module's arrays: callers `jax.jit` them directly (the scheduler is an argument, so one
compilation serves every guidance scale and seed). Nothing here jits, reads files or draws hidden noise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from configs.keyframe_codec import KeyframeCodecConfig
from m3cvc_jax.codec import vq
from m3cvc_jax.diffusion import guidance, sampler
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.dpm_solver import DPMSolverMultistepScheduler
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.nn.layers import upsample_nearest
from m3cvc_jax.nn.post_encoder import Codebook, PostEncoder
from m3cvc_jax.nn.unet import UNet2DConditionModel
from m3cvc_jax.nn.vae import AutoencoderKL

F32 = jnp.float32


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


def condition(codebook: jax.Array, indices: jax.Array, latent_size: tuple[int, int]) -> jax.Array:
    """z_hat: codewords of `indices` `(B, h, w)` nearest-upsampled to `latent_size` -> `(B, H', W', D)`."""
    return upsample_nearest(vq.lookup(indices, codebook), tuple(latent_size))


def unet_eps(unet: UNet2DConditionModel, x: jax.Array, t: jax.Array, cond: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The sampler's model_fn: cond = (z_hat, text hidden states); z_hat joins x at `conv_in`."""
    z_hat, text = cond
    return unet(jnp.concatenate([x, z_hat.astype(x.dtype)], axis=-1), t, text)


_guided_eps = guidance.guided(unet_eps)  # built once: a new closure per call would retrace
_cond_eps = guidance.unguided(unet_eps)


SAMPLERS = ("ddim", "ddpm", "dpmpp2m")


def make_scheduler(config: KeyframeCodecConfig, num_steps: int | None = None, sampler: str = "ddim"):
    """SD's DDIM (scaled-linear betas, `steps_offset=1`, no x0 clipping: latents are unbounded); or DDPM
    with the same spacing; or DPM-Solver++ 2M (diffusers' defaults: linspace spacing from t = 999)."""
    steps = num_steps or config.num_inference_steps
    schedule = NoiseSchedule.stable_diffusion()
    if sampler == "ddim":
        return DDIMScheduler.create(schedule, steps, steps_offset=1, clip_sample=False)
    if sampler == "ddpm":
        return DDPMScheduler.create(schedule, steps, steps_offset=1, clip_sample=False)
    if sampler == "dpmpp2m":
        return DPMSolverMultistepScheduler.create(schedule, steps)
    raise ConfigError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")


def decode_keyframe(
    codec: KeyframeCodec,
    indices: jax.Array,
    text_emb: jax.Array,
    key: jax.Array,
    *,
    null_text_emb: jax.Array,
    scheduler,
    guidance_scale: float | jax.Array = 3.0,
) -> jax.Array:
    """Index maps `(B, h, w)` + text hidden states `(B, S, C)` -> frames `(B, H, W, 3)` in [-1, 1].

    null_text_emb: hidden states of the empty prompt `(B, S, C)` (the unconditional branch).
    The initial noise comes from `key` (the step noise too, for a stochastic scheduler).
    """
    stride = 2 ** codec.config.post_encoder.num_stages
    b, h, w = indices.shape
    latent_size = (h * stride, w * stride)
    z_hat = condition(codec.codebook(), indices, latent_size)
    cond = guidance.CFGCond((z_hat, text_emb), (z_hat, null_text_emb), guidance_scale)
    shape = (b, *latent_size, codec.config.unet.in_channels)
    # A scale known to be 1 (a Python number) needs no unconditional branch.
    static_one = isinstance(guidance_scale, (int, float)) and guidance_scale == 1.0
    model_fn = _cond_eps if static_one else _guided_eps
    latents = sampler.sample(model_fn, codec.unet, None, scheduler, cond, key=key, shape=shape)
    image = codec.vae.decode(latents / codec.config.vae.scaling_factor)
    return jnp.clip(image, -1.0, 1.0)


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
