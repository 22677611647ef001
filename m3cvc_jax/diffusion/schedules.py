"""Beta schedules and the noise levels derived from them.

A `NoiseSchedule` holds the training-time betas, alphas and cumulative alphas. It is built on the host in
one of two precisions, because the references differ and the difference is visible at 1e-5:
diffusers computes betas and alphas in float32 (with a float64-accumulated cumprod, as `torch.cumprod`
does on CPU), guided-diffusion / SEINE compute everything in float64. Values are kept as float64 numpy
arrays either way, so samplers can derive their per-step coefficients exactly and round once.

`NoiseLevel` is the set of square roots every prediction conversion needs, for any array of cumulative
alphas (training timesteps, or one sampler step).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from m3cvc_jax.errors import ConfigError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PRECISIONS = ("float32", "float64")


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_train_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)])


def torch_linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
    """`torch.linspace(start, end, steps, dtype=float32)` on CPU, bit for bit.

    torch computes a float32 step and then, element by element, a fused multiply-add from the nearer end
    (start + step * i in the first half, end - step * (steps - 1 - i) in the second); a float64
    multiply-add of the float32 operands reproduces it. A correctly rounded linspace differs by one ulp in
    a third of the entries, enough to move diffusers' x_0 by 1e-5 near t = 0.
    """
    a, b = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([a], np.float32)
    step = np.float32((b - a) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    first = np.float64(a) + np.float64(step) * i
    second = np.float64(b) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, first, second).astype(np.float32)


def make_betas(
    beta_schedule: str,
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> np.ndarray:
    """Betas in float64: `linear`, `scaled_linear` (Stable Diffusion: linear in sqrt(beta)), `squaredcos_cap_v2`."""
    if num_train_timesteps < 1:
        raise ConfigError(f"num_train_timesteps must be positive, got {num_train_timesteps}")
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return _cosine_betas(num_train_timesteps)
    raise ConfigError(f"unknown beta schedule {beta_schedule!r}; expected one of {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale sqrt(alpha_bar) so the last step has zero SNR (Lin et al. 2023, algorithm 1)."""
    sqrt_ab = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def _dtype(precision: str):
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return np.float32 if precision == "float32" else np.float64


@struct.dataclass
class NoiseSchedule:
    """Training-time schedule: `betas`, `alphas = 1 - betas`, `alphas_cumprod` (each `(T,)`, float64)."""

    betas: np.ndarray
    alphas: np.ndarray
    alphas_cumprod: np.ndarray
    precision: str = struct.field(pytree_node=False, default="float64")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def dtype(self):
        """The dtype the reference does its scalar arithmetic in (per-step tables are computed in it)."""
        return _dtype(self.precision)

    def level(self, timesteps=None) -> "NoiseLevel":
        """Noise levels of the given training timesteps (all of them by default), e.g. for the training loss."""
        ab = self.alphas_cumprod if timesteps is None else self.alphas_cumprod[np.asarray(timesteps)]
        return NoiseLevel.from_alpha_prod(ab)

    @classmethod
    def from_betas(cls, betas, precision: str = "float64") -> "NoiseSchedule":
        """`precision="float32"` rounds as diffusers does; `"float64"` as guided-diffusion/SEINE."""
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise ConfigError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ConfigError("betas must lie in (0, 1]")
        if precision == "float32":
            b32 = betas.astype(np.float32)
            a32 = np.float32(1.0) - b32
            # torch.cumprod on CPU accumulates float32 in float64 and rounds each partial product.
            cumprod = np.cumprod(a32.astype(np.float64)).astype(np.float32)
            return cls(b32.astype(np.float64), a32.astype(np.float64), cumprod.astype(np.float64), precision)
        if precision == "float64":
            alphas = 1.0 - betas
            return cls(betas, alphas, np.cumprod(alphas), precision)
        raise ConfigError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")

    @classmethod
    def create(
        cls,
        beta_schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        *,
        trained_betas=None,
        rescale_betas_zero_snr: bool = False,
        precision: str = "float32",
    ) -> "NoiseSchedule":
        """Arguments as diffusers' scheduler configs name them (default precision: diffusers')."""
        if trained_betas is not None:
            betas = np.asarray(trained_betas, dtype=np.float64)
        elif precision == "float32" and beta_schedule == "linear":
            betas = torch_linspace_float32(beta_start, beta_end, num_train_timesteps).astype(np.float64)
        elif precision == "float32" and beta_schedule == "scaled_linear":
            # diffusers squares in float32 too.
            root = torch_linspace_float32(beta_start**0.5, beta_end**0.5, num_train_timesteps)
            betas = (root * root).astype(np.float64)
        else:
            betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if precision == "float32":
            betas = betas.astype(np.float32).astype(np.float64)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
            if precision == "float32":
                betas = betas.astype(np.float32).astype(np.float64)
            # The last beta becomes exactly 1 (zero terminal SNR), which from_betas accepts.
        return cls.from_betas(betas, precision)

    @classmethod
    def stable_diffusion(cls) -> "NoiseSchedule":
        """SD 1.x/2.x: scaled_linear 0.00085..0.012 over 1000 steps, diffusers precision."""
        return cls.create("scaled_linear", 1000, 0.00085, 0.012, precision="float32")

    @classmethod
    def seine(cls) -> "NoiseSchedule":
        """SEINE (guided-diffusion `linear`): 1e-4..0.02 over 1000 steps, float64 as its code computes."""
        return cls.create("linear", 1000, 1e-4, 0.02, precision="float64")


@struct.dataclass
class NoiseLevel:
    """Square roots of a cumulative alpha (any shape), computed in float64 and rounded once to float32.

    x_t = sqrt_alpha_prod * x_0 + sqrt_one_minus_alpha_prod * eps.
    """

    sqrt_alpha_prod: jax.Array
    sqrt_one_minus_alpha_prod: jax.Array
    sqrt_recip_alpha_prod: jax.Array
    sqrt_recipm1_alpha_prod: jax.Array

    @classmethod
    def from_alpha_prod(cls, alpha_prod) -> "NoiseLevel":
        """In float64 whatever the schedule's precision: sqrt(1/a - 1) near a = 1 cancels catastrophically
        in float32, and the references never form it in float32 (diffusers divides by sqrt(a) instead)."""
        ab = np.asarray(alpha_prod, dtype=np.float64)
        f32 = lambda a: jnp.asarray(np.asarray(a, dtype=np.float32))  # noqa: E731
        with np.errstate(divide="ignore"):  # alpha_bar = 0 (zero terminal SNR) gives infinite reciprocals
            return cls(f32(np.sqrt(ab)), f32(np.sqrt(1 - ab)), f32(np.sqrt(1 / ab)), f32(np.sqrt(1 / ab - 1)))

    def __getitem__(self, index) -> "NoiseLevel":
        return jax.tree.map(lambda a: a[index], self)

    @property
    def alpha_prod(self) -> jax.Array:
        return self.sqrt_alpha_prod**2
