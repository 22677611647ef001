"""CMVC's TT2V clip decoder: AnimateDiff generates a clip from its prompt alone (no keyframe image).

One clip = one `window`-frame generation (AnimateDiff's training length, 16): Gaussian latents
`(1, window, h, w, 4)` denoised by `UNetMotionModel` with DDIM and classifier-free guidance against the
negative prompt, decoded frame by frame by the SD VAE, resized to the output size, then resampled to the
clip's length (`retime_clip`: evenly spread frames, both ends kept; a clip longer than the window
repeats frames).

Generation runs at the output size rounded up to what the UNet can halve at every down block
(`generation_size`), so any stream size decodes; the resampling back is bilinear with antialiasing.

Sampling is AnimateDiff's (its inference config; diffusers' `AnimateDiffPipeline` example): DDIM over
linear betas 0.00085..0.012, `timestep_spacing="linspace"`, `steps_offset=1`, no sample clipping, eta 0;
the sampling-parity test of `tests/test_animatediff_parity.py` runs this same scheduler against diffusers.
Pure functions: no jit, no I/O, noise only from the key passed in.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from m3cvc_jax.decoders.video import subsample
from m3cvc_jax.diffusion import guidance, sampler
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.animatediff import UNetMotionModel
from m3cvc_jax.nn.vae import AutoencoderKL


def make_scheduler(num_steps: int) -> DDIMScheduler:
    """AnimateDiff's DDIM (linear betas, linspace spacing)."""
    schedule = NoiseSchedule.create("linear", 1000, 0.00085, 0.012)
    return DDIMScheduler.create(schedule, num_steps, steps_offset=1, clip_sample=False,
                                timestep_spacing="linspace", set_alpha_to_one=False)


def _eps(unet: UNetMotionModel, x: jax.Array, t: jax.Array, text: jax.Array) -> jax.Array:
    return unet(x, t, text)


_guided_eps = guidance.guided(_eps)  # built once: a new closure per call would retrace


def generation_size(height: int, width: int, vae_factor: int, unet_blocks: int) -> tuple[int, int]:
    """The pixel size generated for an output of `height` x `width`: each side rounded up to a multiple of
    the VAE's factor times 2 per UNet down block (SD 1.5: 64 px), so every down/up block pair matches."""
    step = vae_factor * 2 ** (unet_blocks - 1)
    return math.ceil(height / step) * step, math.ceil(width / step) * step


def resize(frames: jax.Array, height: int, width: int) -> jax.Array:
    """`(T, H, W, C)` -> `(T, height, width, C)`, bilinear with antialiasing (unchanged at that size)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return jax.image.resize(frames, (frames.shape[0], height, width, frames.shape[-1]), "linear", antialias=True)


def retime_clip(frames, num_frames: int):
    """A generated window `(W, ...)` -> the clip's `num_frames` frames, evenly spread with both ends kept
    (a clip longer than the window repeats frames)."""
    if num_frames < 1:
        raise ConfigError(f"a clip needs at least one frame, got {num_frames}")
    return frames[subsample(frames.shape[0], num_frames)]


def generate_clip(unet: UNetMotionModel, vae: AutoencoderKL, text_emb: jax.Array, null_text_emb: jax.Array,
                  key: jax.Array, *, scheduler: DDIMScheduler, guidance_scale: float | jax.Array, window: int,
                  height: int, width: int) -> jax.Array:
    """One generated window `(window, height, width, 3)` in [-1, 1] from prompt hidden states `text_emb`
    `(S, D)`, guided against `null_text_emb` `(S, D)` (the negative prompt's), initial noise from `key`.
    `retime_clip` then fits it to the clip's frame count (outside, so one program serves every clip)."""
    factor = vae.config.downsample_factor
    gen_h, gen_w = generation_size(height, width, factor, len(unet.config.block_out_channels))
    shape = (1, window, gen_h // factor, gen_w // factor, unet.config.in_channels)
    cond = guidance.CFGCond(text_emb[None], null_text_emb[None], guidance_scale)
    latents = sampler.sample(_guided_eps, unet, None, scheduler, cond, key=key, shape=shape)
    # One frame at a time through the VAE: a 16-frame batch at 512x320 would hold every activation at once.
    scale = vae.config.scaling_factor
    frames = jax.lax.map(lambda z: vae.decode(z[None] / scale)[0], latents[0])
    return resize(jnp.clip(frames, -1.0, 1.0), height, width)
