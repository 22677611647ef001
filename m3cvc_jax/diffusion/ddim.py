"""DDIM sampling (Song et al.), as diffusers' DDIMScheduler runs it.

Per-step coefficients are tabulated on the host (diffusers' order of operations, in the schedule's
precision); eta is baked into the tables, so changing it does not recompile a jitted sampler.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from m3cvc_jax.diffusion import predictions
from m3cvc_jax.diffusion.clipping import ClipConfig, process_x0
from m3cvc_jax.diffusion.respacing import space_timesteps, spaced_timesteps
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule
from m3cvc_jax.errors import ConfigError


def _f32(a) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=np.float32))


@struct.dataclass
class DDIMScheduler:
    """Per-step tables of one DDIM chain; `step(i, ...)` goes from level i to level i + 1 (less noisy)."""

    timesteps: jax.Array  # (N,) int32
    level: NoiseLevel
    prev_level: NoiseLevel
    coef_dir: jax.Array  # sqrt(1 - abar_prev - sigma^2): weight of the predicted noise
    noise_std: jax.Array  # sigma = eta * sqrt(posterior variance)
    prediction_type: str = struct.field(pytree_node=False, default="epsilon")
    clip: ClipConfig = struct.field(pytree_node=False, default=ClipConfig())
    use_clipped_model_output: bool = struct.field(pytree_node=False, default=False)
    stochastic: bool = struct.field(pytree_node=False, default=False)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @classmethod
    def create(
        cls,
        schedule: NoiseSchedule,
        num_inference_steps: int | None = None,
        *,
        timesteps=None,
        eta: float = 0.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        use_clipped_model_output: bool = False,
    ) -> "DDIMScheduler":
        """diffusers' DDIMScheduler (same names and defaults) after `set_timesteps(num_inference_steps)`.

        As diffusers does, the previous timestep is `t - num_train_timesteps // num_inference_steps`
        whatever the spacing; with custom descending `timesteps` it is the next one in the list
        (guided-diffusion's respaced DDIM). Past the start: alpha_bar = 1 if set_alpha_to_one else abar_0.
        """
        predictions.check_prediction_type(prediction_type)
        if eta < 0:
            raise ConfigError(f"eta must be non-negative, got {eta}")
        n_train = schedule.num_train_timesteps
        ab_all = schedule.alphas_cumprod
        final = 1.0 if set_alpha_to_one else ab_all[0]
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ConfigError("pass either num_inference_steps or timesteps, not both")
            ts = np.asarray(timesteps, np.int64)
            if ts.ndim != 1 or ts.size == 0 or np.any(np.diff(ts) >= 0) or ts[0] >= n_train or ts[-1] < 0:
                raise ConfigError(f"custom timesteps must be strictly descending within [0, {n_train})")
            prev_ts = np.concatenate([ts[1:], [-1]])
        else:
            if num_inference_steps is None:
                raise ConfigError("DDIM needs num_inference_steps or timesteps")
            ts = spaced_timesteps(n_train, num_inference_steps, timestep_spacing, steps_offset)
            if ts[0] >= n_train:
                raise ConfigError(f"steps_offset {steps_offset} pushes timesteps past {n_train - 1}")
            prev_ts = ts - n_train // num_inference_steps
        ab_prev = np.where(prev_ts >= 0, ab_all[np.maximum(prev_ts, 0)], final)

        dt = schedule.dtype
        ab_t = ab_all[ts].astype(dt)
        ab_prev = ab_prev.astype(dt)
        variance = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
        std = dt(eta) * np.sqrt(variance)
        # eta > 1 would make this negative (diffusers returns NaN); clamp so the sample stays finite.
        coef_dir = np.sqrt(np.maximum(1 - ab_prev - std**2, 0))
        return cls(
            timesteps=jnp.asarray(ts.astype(np.int32)),
            level=NoiseLevel.from_alpha_prod(ab_t),
            prev_level=NoiseLevel.from_alpha_prod(ab_prev),
            coef_dir=_f32(coef_dir),
            noise_std=_f32(std),
            prediction_type=prediction_type,
            clip=ClipConfig(clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value),
            use_clipped_model_output=use_clipped_model_output,
            stochastic=eta > 0,
        )

    @classmethod
    def respaced(
        cls,
        schedule: NoiseSchedule,
        section_counts="50",
        *,
        eta: float = 0.0,
        prediction_type: str = "epsilon",
        clip_denoised: bool = False,
    ) -> "DDIMScheduler":
        """guided-diffusion's `ddim_sample_loop` on a respaced chain (SEINE's `sample_method: ddim`):
        the kept timesteps in descending order, alpha_bar = 1 after the last."""
        kept = np.array(sorted(space_timesteps(schedule.num_train_timesteps, section_counts)))[::-1]
        return cls.create(schedule, timesteps=kept, eta=eta, set_alpha_to_one=True,
                          prediction_type=prediction_type, clip_sample=clip_denoised)

    def step(self, i, x: jax.Array, model_output: jax.Array, noise: jax.Array | None):
        """(x at level i + 1, predicted x_0); `noise` is used only when eta > 0."""
        level = self.level[i]
        x0 = predictions.predict_x0(self.prediction_type, model_output, x, level)
        eps = predictions.predict_eps(self.prediction_type, model_output, x, level)
        x0 = process_x0(x0, self.clip)
        if self.use_clipped_model_output:
            eps = predictions.eps_from_x0(x, x0, level)
        prev = self.prev_level[i].sqrt_alpha_prod * x0 + self.coef_dir[i] * eps
        if self.stochastic and noise is not None:
            prev = prev + self.noise_std[i] * noise
        return prev, x0
