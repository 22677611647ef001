"""DPM-Solver++ (Lu et al. 2022), multistep, as diffusers' DPMSolverMultistepScheduler runs it with
`algorithm_type="dpmsolver++"` (orders 1 and 2, midpoint or heun second-order form).

The solver works in log-SNR time lambda = log(alpha / sigma) on the data prediction x_0. Step i goes from
level i to level i + 1 with
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + c0_i D0 + c1_i D1,   D0 = x0_i,  D1 = x0_i - x0_{i-1},
so a step needs the previous step's x_0: the sampler keeps it in its scan carry (`multistep = True`).
Every coefficient (including the choice of order: c1 = 0 on a first-order step) is tabulated on the host
in float64 from the reference's float32 sigmas and rounded once, so the struct is a pytree a jitted sampler
takes as data. The first step of a chain is always first order, also when the chain is cut short
(`strength` < 1 slices the tables), as diffusers does after `set_begin_index`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from m3cvc_jax.diffusion import predictions
from m3cvc_jax.diffusion.clipping import ClipConfig, process_x0
from m3cvc_jax.diffusion.respacing import TIMESTEP_SPACINGS
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule
from m3cvc_jax.errors import ConfigError

SOLVER_TYPES = ("midpoint", "heun")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")


def _f32(a) -> jax.Array:
    return jnp.asarray(np.asarray(a, dtype=np.float32))


def dpm_timesteps(
    num_train_timesteps: int,
    num_inference_steps: int,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    last_timestep: int | None = None,
) -> np.ndarray:
    """Descending int64 timesteps of DPMSolverMultistepScheduler.set_timesteps (it spaces N + 1 points
    and drops the last, unlike DDIM's spacing)."""
    n, steps = num_train_timesteps, num_inference_steps
    last = n if last_timestep is None else last_timestep
    if not 1 <= steps <= n:
        raise ConfigError(f"num_inference_steps must be in [1, {n}], got {steps}")
    if timestep_spacing == "linspace":
        return np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
    if timestep_spacing == "leading":
        ratio = last // (steps + 1)
        return (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64) + steps_offset
    if timestep_spacing == "trailing":
        return np.arange(last, 0, -n / steps).round().copy().astype(np.int64) - 1
    raise ConfigError(
        f"unknown timestep_spacing {timestep_spacing!r}; expected one of {', '.join(TIMESTEP_SPACINGS)}"
    )


@struct.dataclass
class DPMSolverMultistepScheduler:
    """Per-step tables of one DPM-Solver++ chain; `step(i, x, out, noise, prev_x0)` -> (x_{i+1}, x0_i)."""

    timesteps: jax.Array  # (N,) int32
    level: NoiseLevel  # (N,) level of x_i (x_0 is predicted at it)
    prev_level: NoiseLevel  # (N,) level of x_{i+1}
    coef_x: jax.Array  # sigma_{i+1} / sigma_i
    coef_d0: jax.Array  # -alpha_{i+1} (exp(-h) - 1)
    coef_d1: jax.Array  # second-order weight of x0_i - x0_{i-1} (0 on first-order steps)
    prediction_type: str = struct.field(pytree_node=False, default="epsilon")
    clip: ClipConfig = struct.field(pytree_node=False, default=ClipConfig())

    stochastic = False
    multistep = True

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
        solver_order: int = 2,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
    ) -> "DPMSolverMultistepScheduler":
        """diffusers' DPMSolverMultistepScheduler (same names and defaults, dpmsolver++ only) after
        `set_timesteps(num_inference_steps)` or `set_timesteps(timesteps=...)`."""
        predictions.check_prediction_type(prediction_type)
        if solver_order not in (1, 2):
            raise ConfigError(f"solver_order must be 1 or 2, got {solver_order}")
        if solver_type not in SOLVER_TYPES:
            raise ConfigError(f"unknown solver_type {solver_type!r}; expected one of {', '.join(SOLVER_TYPES)}")
        if final_sigmas_type not in FINAL_SIGMAS_TYPES:
            raise ConfigError(f"unknown final_sigmas_type {final_sigmas_type!r}; expected one of "
                              f"{', '.join(FINAL_SIGMAS_TYPES)}")
        n_train = schedule.num_train_timesteps
        ab_all = schedule.alphas_cumprod.astype(schedule.dtype)
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ConfigError("pass either num_inference_steps or timesteps, not both")
            ts = np.asarray(timesteps, np.int64)
            if ts.ndim != 1 or ts.size == 0 or np.any(np.diff(ts) >= 0) or ts[0] >= n_train or ts[-1] < 0:
                raise ConfigError(f"custom timesteps must be strictly descending within [0, {n_train})")
        else:
            if num_inference_steps is None:
                raise ConfigError("DPM-Solver needs num_inference_steps or timesteps")
            last = None
            if lambda_min_clipped > -np.inf:
                lam = np.log(np.sqrt(ab_all)) - np.log(np.sqrt(1 - ab_all))
                last = n_train - int(np.searchsorted(lam[::-1], lambda_min_clipped))
            ts = dpm_timesteps(n_train, num_inference_steps, timestep_spacing, steps_offset, last)
            if ts[0] >= n_train:
                raise ConfigError(f"steps_offset {steps_offset} pushes timesteps past {n_train - 1}")
            if np.any(np.diff(ts) == 0):  # e.g. 1000 linspace steps of a 1000-step chain: h = 0, NaN steps
                raise ConfigError(f"DPM-Solver with {num_inference_steps} steps repeats timesteps; use fewer steps")
        # The reference's sigma table is float32 (its schedule's precision), interpolated at integer steps.
        sigmas_all = ((1 - ab_all) / ab_all) ** 0.5
        sigma_last = 0.0 if final_sigmas_type == "zero" else float(sigmas_all[0])
        sigmas = np.concatenate([sigmas_all[ts], [sigma_last]]).astype(np.float32).astype(np.float64)
        alpha = 1 / np.sqrt(sigmas**2 + 1)
        sigma = sigmas * alpha
        with np.errstate(divide="ignore"):
            lam = np.log(alpha) - np.log(sigma)  # +inf at a zero final sigma: exp(-h) = 0 below
        num = ts.size
        s, t = slice(0, num), slice(1, num + 1)
        h = lam[t] - lam[s]
        em1 = np.expm1(-h)  # exp(-h) - 1, exact at small h
        coef_x = sigma[t] / sigma[s]
        coef_d0 = -alpha[t] * em1
        h_prev = np.concatenate([[np.nan], lam[1:num] - lam[: num - 1]])
        r0 = h_prev / h
        with np.errstate(divide="ignore", invalid="ignore"):
            if solver_type == "midpoint":
                coef_d1 = -0.5 * alpha[t] * em1 / r0
            else:
                coef_d1 = alpha[t] * (em1 / h + 1.0) / r0
        second = np.ones(num, bool) if solver_order == 2 else np.zeros(num, bool)
        second[0] = False
        if euler_at_final or (lower_order_final and num < 15) or final_sigmas_type == "zero":
            second[-1] = False
        coef_d1 = np.where(second, coef_d1, 0.0)
        return cls(
            timesteps=jnp.asarray(ts.astype(np.int32)),
            level=NoiseLevel.from_alpha_prod(alpha[s] ** 2),
            prev_level=NoiseLevel.from_alpha_prod(alpha[t] ** 2),
            coef_x=_f32(coef_x),
            coef_d0=_f32(coef_d0),
            coef_d1=_f32(coef_d1),
            prediction_type=prediction_type,
            clip=ClipConfig(False, 1.0, thresholding, dynamic_thresholding_ratio, sample_max_value),
        )

    def step(self, i, x: jax.Array, model_output: jax.Array, noise: jax.Array | None,
             prev_x0: jax.Array | None = None):
        """(x at level i + 1, the data prediction x0_i); `prev_x0` is the previous step's x0 (ignored on a
        first-order step and at i = 0; None: first order). `noise` is unused (the solver is deterministic)."""
        del noise
        x0 = process_x0(predictions.predict_x0(self.prediction_type, model_output, x, self.level[i]), self.clip)
        prev = self.coef_x[i] * x + self.coef_d0[i] * x0
        if prev_x0 is not None:
            c1 = jnp.where(i == 0, 0.0, self.coef_d1[i])
            prev = prev + c1 * (x0 - prev_x0)
        return prev, x0
