"""Latent interpolation between two keyframes (CMVC IT2V, DiffMorpher): pure, jittable, differentiable.

Convention (CMVC eq. 5): the weight `w` belongs to the FIRST keyframe, `w = 1` gives x0 and `w = 0` x1.
(DiffMorpher's `alpha` is the weight of the second image: alpha = 1 - w.)

  lerp(x0, x1, w)        w·x0 + (1 - w)·x1                                            (CMVC eq. 5)
  slerp(x0, x1, w)       spherical interpolation over the whole array (angle of the flattened arrays)
  adain(x, mean, std)    instance-normalise x per sample and channel, then give it mean/std
  morph(x0, x1, w)       DiffMorpher's latent mix: slerp, then AdaIN to the lerp of both endpoints'
                         per-channel statistics (keeps the noise's norm and each channel's statistics,
                         which a plain lerp of two Gaussians shrinks by sqrt(w² + (1-w)²))
  ddim_invert(...)       deterministic DDIM inversion x_0 -> x_T along a DDIM scheduler's chain

Arrays are channels-last `(B, ..., C)`; statistics are over every axis but batch and channel.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from m3cvc_jax.errors import ConfigError

F32 = jnp.float32
STAT_EPS = 1e-5  # DiffMorpher's calc_mean_std and torch's instance_norm


def lerp(x0: jax.Array, x1: jax.Array, w: float | jax.Array) -> jax.Array:
    w = jnp.asarray(w, F32)
    return (w * x0.astype(F32) + (1 - w) * x1.astype(F32)).astype(x0.dtype)


def channel_stats(x: jax.Array, eps: float = STAT_EPS) -> tuple[jax.Array, jax.Array]:
    """Per sample and channel: mean and sqrt(unbiased variance + eps), shaped to broadcast against x."""
    x = x.astype(F32)
    axes = tuple(range(1, x.ndim - 1))
    n = 1
    for a in axes:
        n *= x.shape[a]
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.sum(jnp.square(x - mean), axis=axes, keepdims=True) / max(n - 1, 1)
    return mean, jnp.sqrt(var + eps)


def adain(x: jax.Array, mean: jax.Array, std: jax.Array, eps: float = STAT_EPS) -> jax.Array:
    """Instance norm (biased variance + eps, as torch) of x, then scale by std and shift by mean."""
    x32 = x.astype(F32)
    axes = tuple(range(1, x.ndim - 1))
    mu = jnp.mean(x32, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mu), axis=axes, keepdims=True)
    return ((x32 - mu) * jax.lax.rsqrt(var + eps) * std + mean).astype(x.dtype)


def slerp(x0: jax.Array, x1: jax.Array, w: float | jax.Array, *, dot_clip: float = 1e-7) -> jax.Array:
    """Spherical interpolation: w on x0. The angle is clipped away from 0 and pi (DiffMorpher's 1e-7), so
    nearly parallel inputs stay finite (and differentiable) instead of dividing by sin(0)."""
    a, b = x0.astype(F32), x1.astype(F32)
    dot = jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))
    theta = jnp.arccos(jnp.clip(dot, -1 + dot_clip, 1 - dot_clip))
    t = (1 - jnp.asarray(w, F32)) * theta  # angle travelled from x0 towards x1
    s = jnp.sin(theta)
    return ((jnp.sin(theta - t) / s) * a + (jnp.sin(t) / s) * b).astype(x0.dtype)


def morph(x0: jax.Array, x1: jax.Array, w: float | jax.Array, *, use_adain: bool = True) -> jax.Array:
    """DiffMorpher's latent interpolation: slerp, then AdaIN to the interpolated channel statistics."""
    out = slerp(x0, x1, w)
    if not use_adain:
        return out
    m0, s0 = channel_stats(x0)
    m1, s1 = channel_stats(x1)
    w = jnp.asarray(w, F32)
    return adain(out, w * m0 + (1 - w) * m1, w * s0 + (1 - w) * s1)


METHODS = {"linear": lerp, "diffmorpher": morph}


def interpolate_latents(method: str, x0: jax.Array, x1: jax.Array, w: float | jax.Array) -> jax.Array:
    if method not in METHODS:
        raise ConfigError(f"unknown latent interpolation {method!r}; one of {', '.join(METHODS)}")
    return METHODS[method](x0, x1, w)


def ddim_invert(model_fn: Callable[[Any, jax.Array, jax.Array, Any], jax.Array], params: Any, x0: jax.Array,
                scheduler, cond: Any = None) -> jax.Array:
    """Deterministic DDIM inversion of clean latents x0 to the start level of `scheduler` (a DDIMScheduler,
    epsilon prediction): the sampler's chain walked backwards, each step re-using the noise predicted at
    the lower level (DiffMorpher's `ddim_inversion`). `model_fn(params, x, t, cond)` as for `sampler.sample`.
    """
    if scheduler.prediction_type != "epsilon":
        raise ConfigError(f"DDIM inversion needs an epsilon-prediction scheduler, got {scheduler.prediction_type}")
    n = scheduler.num_steps
    batch = x0.shape[0]

    def body(x, j):
        i = n - 1 - j  # the sampler's step i goes from level[i] down to prev_level[i]; walk it upwards
        t = jnp.broadcast_to(scheduler.timesteps[i], (batch,))
        lo, hi = scheduler.prev_level[i], scheduler.level[i]
        eps = model_fn(params, x, t, cond).astype(F32)
        x32 = x.astype(F32)
        clean = (x32 - lo.sqrt_one_minus_alpha_prod * eps) / lo.sqrt_alpha_prod
        return (hi.sqrt_alpha_prod * clean + hi.sqrt_one_minus_alpha_prod * eps).astype(x.dtype), None

    out, _ = jax.lax.scan(body, x0, jnp.arange(n))
    return out
