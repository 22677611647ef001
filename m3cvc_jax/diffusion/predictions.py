"""Conversions between what a network predicts (epsilon, v, or the clean sample) and x_0 / epsilon.

All functions take a `NoiseLevel` whose fields broadcast against `x`: scalars inside a sampler step, or
per-example `(B,)` arrays during training (expanded here over the trailing axes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from m3cvc_jax.diffusion.schedules import NoiseLevel
from m3cvc_jax.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(
            f"unknown prediction_type {prediction_type!r}; expected one of {', '.join(PREDICTION_TYPES)}"
        )
    return prediction_type


def _expand(coef: jax.Array, x: jax.Array) -> jax.Array:
    coef = jnp.asarray(coef)
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))


def predict_x0(prediction_type: str, model_output: jax.Array, x: jax.Array, level: NoiseLevel) -> jax.Array:
    """The clean sample implied by the model output at noise level `level`."""
    if prediction_type == "epsilon":
        # guided-diffusion's form (sqrt(1/a) x - sqrt(1/a - 1) eps); diffusers divides, equal to rounding.
        return _expand(level.sqrt_recip_alpha_prod, x) * x - _expand(level.sqrt_recipm1_alpha_prod, x) * model_output
    if prediction_type == "v_prediction":
        return _expand(level.sqrt_alpha_prod, x) * x - _expand(level.sqrt_one_minus_alpha_prod, x) * model_output
    if prediction_type == "sample":
        return model_output
    raise ConfigError(f"unknown prediction_type {prediction_type!r}")


def eps_from_x0(x: jax.Array, x0: jax.Array, level: NoiseLevel) -> jax.Array:
    return (x - _expand(level.sqrt_alpha_prod, x) * x0) / _expand(level.sqrt_one_minus_alpha_prod, x)


def predict_eps(prediction_type: str, model_output: jax.Array, x: jax.Array, level: NoiseLevel) -> jax.Array:
    """The noise implied by the model output (as diffusers' DDIM derives it)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return _expand(level.sqrt_alpha_prod, x) * model_output + _expand(level.sqrt_one_minus_alpha_prod, x) * x
    if prediction_type == "sample":
        return eps_from_x0(x, model_output, level)
    raise ConfigError(f"unknown prediction_type {prediction_type!r}")


def add_noise(x0: jax.Array, noise: jax.Array, level: NoiseLevel) -> jax.Array:
    """q(x_t | x_0): the forward process at `level` (per example during training)."""
    return _expand(level.sqrt_alpha_prod, x0) * x0 + _expand(level.sqrt_one_minus_alpha_prod, x0) * noise


def velocity(x0: jax.Array, noise: jax.Array, level: NoiseLevel) -> jax.Array:
    """The v-prediction target sqrt(a) eps - sqrt(1-a) x_0."""
    return _expand(level.sqrt_alpha_prod, x0) * noise - _expand(level.sqrt_one_minus_alpha_prod, x0) * x0


def training_target(prediction_type: str, x0: jax.Array, noise: jax.Array, level: NoiseLevel) -> jax.Array:
    """What a network of this prediction type is trained to output."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return velocity(x0, noise, level)
    if prediction_type == "sample":
        return x0
    raise ConfigError(f"unknown prediction_type {prediction_type!r}")
