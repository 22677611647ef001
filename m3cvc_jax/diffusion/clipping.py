"""Clipping of the predicted x_0, with diffusers' options (`clip_sample`, dynamic `thresholding`)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from m3cvc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Static (hashable) clipping options; thresholding wins over clip_sample, as in diffusers."""

    clip_sample: bool = False
    clip_sample_range: float = 1.0
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0

    def __post_init__(self):
        if self.clip_sample_range <= 0:
            raise ConfigError(f"clip_sample_range must be positive, got {self.clip_sample_range}")
        if not 0.0 < self.dynamic_thresholding_ratio <= 1.0:
            raise ConfigError(f"dynamic_thresholding_ratio must be in (0, 1], got {self.dynamic_thresholding_ratio}")


def dynamic_threshold(x0: jax.Array, ratio: float, max_value: float) -> jax.Array:
    """Imagen's dynamic thresholding: per example, clamp to the `ratio` quantile of |x0| (at least 1) and rescale."""
    flat = x0.reshape(x0.shape[0], -1).astype(jnp.float32)
    s = jnp.quantile(jnp.abs(flat), ratio, axis=1, method="linear")
    s = jnp.clip(s, 1.0, max_value)[:, None]
    return (jnp.clip(flat, -s, s) / s).reshape(x0.shape).astype(x0.dtype)


def process_x0(x0: jax.Array, clip: ClipConfig) -> jax.Array:
    if clip.thresholding:
        return dynamic_threshold(x0, clip.dynamic_thresholding_ratio, clip.sample_max_value)
    if clip.clip_sample:
        return jnp.clip(x0, -clip.clip_sample_range, clip.clip_sample_range)
    return x0
