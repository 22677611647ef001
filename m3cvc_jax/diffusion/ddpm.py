"""Ancestral DDPM sampling (Ho et al.), as diffusers' DDPMScheduler and guided-diffusion/SEINE run it.

The update of the M3-CVC paper (section II-C),
    x_{t-1} = 1/sqrt(a_t) (x_t - (1 - a_t)/sqrt(1 - abar_t) eps) + sigma_t z,
is the posterior mean of q(x_{t-1} | x_t, x_0) with x_0 predicted from eps, unclipped: `paper_update`
states it literally and `DDPMScheduler.step` computes the same thing in posterior form, which also covers
v/x_0 prediction, x_0 clipping and skipped timesteps (a_t = abar_t / abar_prev).

All per-step coefficients are tabulated on the host when the scheduler is created (in the reference's
precision), so a step is a few multiply-adds and the struct is a pytree a jitted sampler takes as data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from m3cvc_jax.diffusion import predictions
from m3cvc_jax.diffusion.clipping import ClipConfig, process_x0
from m3cvc_jax.diffusion.respacing import respaced_betas, space_timesteps, spaced_timesteps
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule
from m3cvc_jax.errors import ConfigError

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")


def paper_update(x_t, eps, alpha_t, alpha_bar_t, sigma_t, z):
    """One DDPM step exactly as written in the paper (no clipping, epsilon prediction)."""
    return (x_t - (1 - alpha_t) / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_t) + sigma_t * z


def _f32(a) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=np.float32))


@struct.dataclass
class DDPMScheduler:
    """Per-step tables of one DDPM chain; `step(i, ...)` goes from level i to level i + 1 (less noisy)."""

    timesteps: jax.Array  # (N,) int32: what the network is told at step i
    level: NoiseLevel  # (N,) noise level of the input of step i
    prev_level: NoiseLevel  # (N,) noise level of the output of step i
    coef_x0: jax.Array  # posterior mean = coef_x0 * x0 + coef_xt * x_t
    coef_xt: jax.Array
    noise_std: jax.Array  # 0 where the reference adds no noise
    prediction_type: str = struct.field(pytree_node=False, default="epsilon")
    clip: ClipConfig = struct.field(pytree_node=False, default=ClipConfig())

    stochastic = True

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @classmethod
    def from_levels(
        cls,
        schedule: NoiseSchedule,
        alpha_prod: np.ndarray,
        alpha_prod_prev: np.ndarray,
        model_timesteps: np.ndarray,
        noise_mask: np.ndarray,
        *,
        variance_type: str = "fixed_small",
        prediction_type: str = "epsilon",
        clip: ClipConfig = ClipConfig(),
    ) -> "DDPMScheduler":
        """Tables from the alpha_bar before/after each step, with diffusers' order of operations."""
        predictions.check_prediction_type(prediction_type)
        if variance_type not in VARIANCE_TYPES:
            raise ConfigError(
                f"unsupported variance_type {variance_type!r}; expected one of {', '.join(VARIANCE_TYPES)}"
            )
        dt = schedule.dtype
        ab_t = np.asarray(alpha_prod, np.float64).astype(dt)
        ab_prev = np.asarray(alpha_prod_prev, np.float64).astype(dt)
        beta_prod_t, beta_prod_prev = 1 - ab_t, 1 - ab_prev
        alpha_t = ab_t / ab_prev
        beta_t = 1 - alpha_t
        coef_x0 = np.sqrt(ab_prev) * beta_t / beta_prod_t
        coef_xt = np.sqrt(alpha_t) * beta_prod_prev / beta_prod_t
        if variance_type == "fixed_large":
            variance = beta_t
        else:  # fixed_small and fixed_small_log differ only in how the reference takes the square root
            variance = np.maximum(beta_prod_prev / beta_prod_t * beta_t, dt(1e-20))
        std = np.where(np.asarray(noise_mask, bool), np.sqrt(variance), 0)
        return cls(
            timesteps=jnp.asarray(np.asarray(model_timesteps, np.int32)),
            level=NoiseLevel.from_alpha_prod(ab_t),
            prev_level=NoiseLevel.from_alpha_prod(ab_prev),
            coef_x0=_f32(coef_x0),
            coef_xt=_f32(coef_xt),
            noise_std=_f32(std),
            prediction_type=prediction_type,
            clip=clip,
        )

    @classmethod
    def create(
        cls,
        schedule: NoiseSchedule,
        num_inference_steps: int | None = None,
        *,
        timesteps=None,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        variance_type: str = "fixed_small",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
    ) -> "DDPMScheduler":
        """diffusers' DDPMScheduler (same argument names and defaults) after `set_timesteps`.

        `timesteps`: custom descending timesteps; else `num_inference_steps` with `timestep_spacing`;
        else every training timestep.
        """
        n_train = schedule.num_train_timesteps
        if timesteps is not None and num_inference_steps is not None:
            raise ConfigError("pass either num_inference_steps or timesteps, not both")
        if timesteps is not None:
            ts = np.asarray(timesteps, np.int64)
            if ts.ndim != 1 or ts.size == 0 or np.any(np.diff(ts) >= 0) or ts[0] >= n_train or ts[-1] < 0:
                raise ConfigError(f"custom timesteps must be strictly descending within [0, {n_train})")
        elif num_inference_steps is not None:
            ts = spaced_timesteps(n_train, num_inference_steps, timestep_spacing, steps_offset)
            if ts[0] >= n_train:
                raise ConfigError(f"steps_offset {steps_offset} pushes timesteps past {n_train - 1}")
        else:
            ts = np.arange(n_train - 1, -1, -1, dtype=np.int64)
        ab = schedule.alphas_cumprod
        ab_prev = np.concatenate([ab[ts[1:]], [1.0]])
        return cls.from_levels(
            schedule, ab[ts], ab_prev, ts, ts > 0,
            variance_type=variance_type,
            prediction_type=prediction_type,
            clip=ClipConfig(clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value),
        )

    @classmethod
    def respaced(
        cls,
        schedule: NoiseSchedule,
        section_counts="250",
        *,
        variance_type: str = "fixed_large",
        prediction_type: str = "epsilon",
        clip_denoised: bool = False,
    ) -> "DDPMScheduler":
        """guided-diffusion's SpacedDiffusion p_sample loop; defaults are SEINE's (`create_diffusion("250")`,
        fixed-large variance, epsilon, `clip_denoised=False`).

        The chain's betas are re-derived from the kept alpha_bar, and the network is told the original
        timestep (`timestep_map`); noise is added at every step but the last.
        """
        kept = space_timesteps(schedule.num_train_timesteps, section_counts)
        betas, timestep_map = respaced_betas(schedule.alphas_cumprod, kept)
        chain = NoiseSchedule.from_betas(betas, schedule.precision)
        ab = chain.alphas_cumprod
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        order = np.arange(len(betas))[::-1]
        return cls.from_levels(
            chain, ab[order], ab_prev[order], timestep_map[order], order != 0,
            variance_type=variance_type,
            prediction_type=prediction_type,
            clip=ClipConfig(clip_sample=clip_denoised),
        )

    def step(self, i, x: jax.Array, model_output: jax.Array, noise: jax.Array | None):
        """(x at level i + 1, predicted x_0); `noise` ~ N(0, 1) shaped like x (None: the mean)."""
        level = self.level[i]
        x0 = process_x0(predictions.predict_x0(self.prediction_type, model_output, x, level), self.clip)
        prev = self.coef_x0[i] * x0 + self.coef_xt[i] * x
        if noise is not None:
            prev = prev + self.noise_std[i] * noise
        return prev, x0
