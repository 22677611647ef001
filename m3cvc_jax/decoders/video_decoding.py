"""The video decoder's run settings (`decoders/video.py`): how SEINE samples, passed to each call, apart from
the window and frame sizes (`VideoReconstructionConfig`). Free of JAX so the command line and the codec
presets (`pipelines/presets.py`, which take their defaults from here) load without it."""

from __future__ import annotations

import dataclasses
import math

from m3cvc_jax.errors import ConfigError

SAMPLERS = ("ddpm", "ddim", "dpmpp2m")
DPM_MAX_STEPS = 999


@dataclasses.dataclass(frozen=True)
class VideoDecoding:
    """sampler: 'ddpm' (SEINE's default) or 'ddim', both respaced to `steps` with guided-diffusion's
    `space_timesteps`, or 'dpmpp2m' (DPM-Solver++ 2M, diffusers' linspace spacing). guidance_scale:
    classifier-free guidance against the empty prompt (SEINE's 8; 1 runs the conditional branch only).
    strength: 1 is SEINE (sampling starts from pure noise); below 1 sampling starts at that fraction of
    the chain from the keyframe latents blended across the window and noised to that level (SDEdit), for
    a small video model trained briefly (the demo's), whose samples from pure noise do not converge."""

    sampler: str = "ddpm"
    steps: int = 250
    guidance_scale: float = 8.0
    strength: float = 1.0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if not 1 <= self.steps <= 1000:
            raise ConfigError(f"steps must be in [1, 1000], got {self.steps}")
        if self.sampler == "dpmpp2m" and self.steps > DPM_MAX_STEPS:
            # diffusers' linspace spacing repeats a timestep at 1000 steps of SEINE's 1000-step chain
            raise ConfigError(f"sampler dpmpp2m takes at most {DPM_MAX_STEPS} steps, got {self.steps}")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ConfigError(f"guidance_scale must be a finite number >= 0, got {self.guidance_scale}")
        if not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"strength must be in (0, 1], got {self.strength}")

    @property
    def run_steps(self) -> int:
        """Steps actually run: the last `strength` fraction of the chain (at least one)."""
        return max(1, round(self.strength * self.steps))
