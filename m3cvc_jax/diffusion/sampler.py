"""The sampling loop: one pure function whose steps run in `lax.scan` (no Python loop per step).

`model_fn(params, x, t, cond) -> output` is a pure function; `t` is an int32 `(B,)` array of training
timesteps. The scheduler (`DDPMScheduler`, `DDIMScheduler`, `DPMSolverMultistepScheduler`) is a pytree of
per-step tables, so a sampler jitted once serves every scheduler of a kind, guidance scale and eta with the
same number of steps and shapes. A multistep scheduler (`multistep = True`) also gets the previous step's
x_0 prediction, which the scan carries.
This module never jits; the caller does, with `model_fn` (and `known`, if a callable) static:

    from flax import nnx
    graphdef, state = nnx.split(unet)

    def unet_fn(state, x, t, cond):
        return nnx.merge(graphdef, state)(x, t, cond)

    cfg_fn = guidance.guided(unet_fn)          # build once: a new closure means a new trace
    run = jax.jit(functools.partial(sampler.sample, cfg_fn))
    scheduler = DDIMScheduler.create(NoiseSchedule.stable_diffusion(), 50, steps_offset=1)
    latents = run(state, x_T, scheduler, guidance.CFGCond(text, null_text, 7.5), key=key)

Randomness: step i draws its noise from `fold_in(key, i)` (a split of `key`; the other half draws x_T
when only a shape is given), or takes it from `noises[i]` to replay a reference run.

Known latents (SEINE's given frames, image interpolation): `known` is either a `(latents, mask)` pair,
mask 1 where the value is known (broadcastable to x), which replaces the known part of x by the known
latents noised to the current level before the first step and after every step; or a callable
`known(x, level, key) -> x` given the `NoiseLevel` x is at. (SEINE itself conditions differently: its
network reads `[x_t, mask, masked-video latent]` on the channel axis, which belongs in its model_fn.)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from m3cvc_jax.diffusion import predictions
from m3cvc_jax.diffusion.schedules import NoiseLevel
from m3cvc_jax.errors import ConfigError

KnownHook = Callable[[jax.Array, NoiseLevel, jax.Array], jax.Array]


def replace_known(latents: jax.Array, mask: jax.Array) -> KnownHook:
    """A hook putting `latents`, forward-noised to the level of x, where `mask` is 1."""

    def hook(x: jax.Array, level: NoiseLevel, key: jax.Array) -> jax.Array:
        noise = jax.random.normal(key, latents.shape, jnp.float32)
        noised = predictions.add_noise(latents.astype(jnp.float32), noise, level)
        m = mask.astype(jnp.float32)
        return (m * noised + (1 - m) * x).astype(x.dtype)

    return hook


def sample(
    model_fn: Callable[[Any, jax.Array, jax.Array, Any], jax.Array],
    params: Any,
    x_T: jax.Array | None,
    scheduler,
    cond: Any = None,
    *,
    key: jax.Array | None = None,
    shape: tuple[int, ...] | None = None,
    dtype=jnp.float32,
    noises: jax.Array | None = None,
    known: KnownHook | tuple[jax.Array, jax.Array] | None = None,
    return_x0: bool = False,
    unroll: int = 1,
):
    """Run every step of `scheduler` from x_T; returns x_0 (and the last predicted x_0 if `return_x0`).

    x_T: the initial noise; if None, drawn from `key` with `shape`/`dtype`. key: needed for stochastic
    schedulers (DDPM, DDIM with eta > 0) unless `noises` `(num_steps, *x.shape)` is given, and for `known`.
    unroll: steps per loop iteration in the compiled scan (`lax.scan`'s unroll).
    """
    if key is not None:
        init_key, step_key = jax.random.split(key)
    if x_T is None:
        if key is None or shape is None:
            raise ConfigError("sample needs x_T, or key and shape to draw it")
        x_T = jax.random.normal(init_key, shape, dtype)
    num_steps = scheduler.num_steps
    if noises is not None and noises.shape != (num_steps, *x_T.shape):
        raise ConfigError(f"noises must have shape {(num_steps, *x_T.shape)}, got {noises.shape}")
    need_noise = scheduler.stochastic and noises is None
    if (need_noise or known is not None) and key is None:
        raise ConfigError("this scheduler (or the known-latent hook) draws noise: pass key=")
    if isinstance(known, tuple):
        known = replace_known(*known)
    if known is not None:
        known_key, step_key = jax.random.split(step_key)
        x_T = known(x_T, scheduler.level[0], jax.random.fold_in(known_key, num_steps))

    batch = x_T.shape[0]
    multistep = getattr(scheduler, "multistep", False)
    # Carry: x, plus the last x_0 when it is returned or the scheduler needs it (one slot serves both).
    keep_x0 = return_x0 or multistep

    def body(carry, inputs):
        x, last_x0 = carry if keep_x0 else (carry, None)
        i, given_noise = inputs
        t = jnp.broadcast_to(scheduler.timesteps[i], (batch,))
        out = model_fn(params, x, t, cond)
        if given_noise is not None:
            noise = given_noise.astype(jnp.float32)
        elif need_noise:
            noise = jax.random.normal(jax.random.fold_in(step_key, i), x.shape, jnp.float32)
        else:
            noise = None
        if multistep:
            prev, x0 = scheduler.step(i, x.astype(jnp.float32), out.astype(jnp.float32), noise,
                                      last_x0.astype(jnp.float32))
        else:
            prev, x0 = scheduler.step(i, x.astype(jnp.float32), out.astype(jnp.float32), noise)
        if known is not None:
            prev = known(prev, scheduler.prev_level[i], jax.random.fold_in(known_key, i))
        prev = prev.astype(x.dtype)
        return ((prev, x0.astype(x.dtype)) if keep_x0 else prev), None

    init = (x_T, jnp.zeros_like(x_T)) if keep_x0 else x_T
    final, _ = jax.lax.scan(body, init, (jnp.arange(num_steps), noises), unroll=unroll)
    return final if return_x0 or not multistep else final[0]
