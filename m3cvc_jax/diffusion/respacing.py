"""Which training timesteps a sampler visits.

Two conventions:
- diffusers' `timestep_spacing` (`leading`, `trailing`, `linspace`, plus `steps_offset`);
- guided-diffusion's `space_timesteps` (used by SEINE): a section string such as "250" or "10,15,20", or
  "ddimN"; the kept timesteps form a shorter chain whose betas are re-derived from the kept alpha_bar
  (`respaced_betas`), and the network still sees the original timestep numbers.
"""

from __future__ import annotations

import numpy as np

from m3cvc_jax.errors import ConfigError

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def spaced_timesteps(
    num_train_timesteps: int,
    num_inference_steps: int,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
) -> np.ndarray:
    """Descending int64 timesteps as diffusers' `set_timesteps` computes them."""
    n, steps = num_train_timesteps, num_inference_steps
    if not 1 <= steps <= n:
        raise ConfigError(f"num_inference_steps must be in [1, {n}], got {steps}")
    if timestep_spacing == "linspace":
        return np.linspace(0, n - 1, steps).round()[::-1].copy().astype(np.int64)
    if timestep_spacing == "leading":
        ratio = n // steps
        return (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + steps_offset
    if timestep_spacing == "trailing":
        ratio = n / steps
        return np.round(np.arange(n, 0, -ratio)).astype(np.int64) - 1
    raise ConfigError(
        f"unknown timestep_spacing {timestep_spacing!r}; expected one of {', '.join(TIMESTEP_SPACINGS)}"
    )


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """guided-diffusion's respacing: the set of original timesteps kept.

    section_counts: a comma-separated string or a list of step counts, one per equal section of the
    original chain (strided with rounding inside each section), or "ddimN" for a fixed integer stride.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ConfigError(f"cannot create exactly {desired} steps from {num_timesteps} with an integer stride")
        try:
            section_counts = [int(x) for x in section_counts.split(",")]
        except ValueError:
            raise ConfigError(f"bad timestep respacing {section_counts!r}; expected e.g. '250' or '10,15,20'") from None
    sections = len(section_counts)
    size_per, extra = divmod(num_timesteps, sections)
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ConfigError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        # Python's round (half to even) on a float accumulated by repeated addition, as the reference does.
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return set(kept)


def respaced_betas(alphas_cumprod: np.ndarray, use_timesteps) -> tuple[np.ndarray, np.ndarray]:
    """(new betas, timestep_map): betas of the shorter chain through the kept alpha_bar, in float64."""
    use = set(int(t) for t in use_timesteps)
    last, betas, timestep_map = 1.0, [], []
    for i, ab in enumerate(np.asarray(alphas_cumprod, dtype=np.float64)):
        if i in use:
            betas.append(1.0 - ab / last)
            last = ab
            timestep_map.append(i)
    return np.array(betas), np.array(timestep_map, dtype=np.int64)
