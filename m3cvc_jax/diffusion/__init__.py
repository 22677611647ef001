"""Diffusion maths: schedules, DDPM/DDIM steps, respacing, guidance and the scanned sampler (no jit here)."""

from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.dpm_solver import DPMSolverMultistepScheduler
from m3cvc_jax.diffusion.guidance import CFGCond, guided
from m3cvc_jax.diffusion.sampler import replace_known, sample
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule

__all__ = [
    "CFGCond",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "NoiseLevel",
    "NoiseSchedule",
    "guided",
    "replace_known",
    "sample",
]
