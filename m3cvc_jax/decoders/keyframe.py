"""Keyframe decoder (M3-CVC II-C): VQ index map + description -> frame, by guided DDIM over the keyframe
codec's networks (`nn/keyframe_codec.py`).

Codebook lookup -> nearest upsample to the latent size = z_hat -> the SD UNet denoises with z_hat
concatenated at its extended `conv_in` and the description `D_F` (CLIP text hidden states) through
cross-attention, classifier-free guidance on the text (the image condition stays in both branches, as in
PerCo) -> VAE decode. Decoding follows PerCo: DDIM, 20 steps, guidance 3.0 (`KeyframeDecoding`'s defaults,
`decoders/keyframe_decoding.py`, the one place they are written).

`decode_keyframe` is a pure function of the module's arrays; the scheduler is an argument, so one
compilation serves every guidance scale and seed. Nothing here jits, reads files or draws hidden noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from m3cvc_jax.diffusion import guidance, sampler
from m3cvc_jax.decoders.keyframe_decoding import SAMPLERS
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.dpm_solver import DPMSolverMultistepScheduler
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.keyframe_codec import KeyframeCodec, condition, unet_eps


_guided_eps = guidance.guided(unet_eps)  # built once: a new closure per call would retrace
_cond_eps = guidance.unguided(unet_eps)


def make_scheduler(num_steps: int, sampler: str = "ddim"):
    """SD's DDIM (scaled-linear betas, `steps_offset=1`, no x0 clipping: latents are unbounded); or DDPM
    with the same spacing; or DPM-Solver++ 2M (diffusers' defaults: linspace spacing from t = 999)."""
    schedule = NoiseSchedule.stable_diffusion()
    if sampler == "ddim":
        return DDIMScheduler.create(schedule, num_steps, steps_offset=1, clip_sample=False)
    if sampler == "ddpm":
        return DDPMScheduler.create(schedule, num_steps, steps_offset=1, clip_sample=False)
    if sampler == "dpmpp2m":
        return DPMSolverMultistepScheduler.create(schedule, num_steps)
    raise ConfigError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")


def decode_keyframe(
    codec: KeyframeCodec,
    indices: jax.Array,
    text_emb: jax.Array,
    key: jax.Array,
    *,
    null_text_emb: jax.Array,
    scheduler,
    guidance_scale: float | jax.Array,
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
