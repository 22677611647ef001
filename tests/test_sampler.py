"""The scanned sampler without torch: compile-once, determinism, classifier-free guidance and the known-latent
hook (whole runs against diffusers are in test_sampler_parity.py)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from m3cvc_jax.diffusion import guidance
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.sampler import replace_known, sample
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError

B, H, W, C = 2, 6, 5, 4
_rng = np.random.default_rng(7)
MIX = (_rng.standard_normal((C, C)) * 0.5).astype(np.float32)
TBIAS = (_rng.standard_normal(C) * 0.5).astype(np.float32)


def toy_model(params, x, t, cond):
    """A tiny conditional network: channel mixing, a timestep term and a per-example condition vector."""
    mix, tbias = params
    tt = jnp.sin(t.astype(jnp.float32) / 100.0).reshape(-1, 1, 1, 1)
    return jnp.tanh(x @ mix + tt * tbias + cond[:, None, None, :])


PARAMS = (jnp.asarray(MIX), jnp.asarray(TBIAS))


@functools.lru_cache(maxsize=None)
def _jitted_sampler():
    return jax.jit(functools.partial(sample, guidance.guided(toy_model)))


def _inputs(seed):
    rng = np.random.default_rng(seed)
    x_T = rng.standard_normal((B, H, W, C)).astype(np.float32)
    cond = rng.standard_normal((B, C)).astype(np.float32)
    return x_T, cond, np.zeros_like(cond)


def test_sampler_compiles_once_per_shape():
    """Schedules, guidance scales, keys and conditions are data: one trace for all of them."""
    cfg_model = guidance.guided(toy_model)

    @chex.assert_max_traces(n=1)
    def traced(params, x_T, scheduler, cond, key):
        return sample(cfg_model, params, x_T, scheduler, cond, key=key)

    run = jax.jit(traced)
    x_T, cond, uncond = _inputs(0)
    sd = NoiseSchedule.stable_diffusion()
    schedulers = [
        DDPMScheduler.create(sd, 10),
        DDPMScheduler.create(NoiseSchedule.seine(), 10, variance_type="fixed_large"),
        DDPMScheduler.create(sd, 10, timestep_spacing="trailing"),
    ]
    outs = []
    for i, sched in enumerate(schedulers):
        c = guidance.CFGCond(jnp.asarray(cond) * i, jnp.asarray(uncond), 1.0 + i)
        outs.append(run(PARAMS, jnp.asarray(x_T), sched, c, jax.random.key(i)))
    jax.block_until_ready(outs)
    assert not np.allclose(np.asarray(outs[0]), np.asarray(outs[1]))
    chex.clear_trace_counter()


def test_sampler_deterministic_for_a_key():
    run = jax.jit(functools.partial(sample, toy_model), static_argnames=("shape",))
    x_T, cond, _ = _inputs(1)
    sched = DDPMScheduler.create(NoiseSchedule.stable_diffusion(), 8)
    a = run(PARAMS, jnp.asarray(x_T), sched, jnp.asarray(cond), key=jax.random.key(3))
    b = run(PARAMS, jnp.asarray(x_T), sched, jnp.asarray(cond), key=jax.random.key(3))
    c = run(PARAMS, jnp.asarray(x_T), sched, jnp.asarray(cond), key=jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    # Without x_T the initial noise comes from the key too.
    d = run(PARAMS, None, sched, jnp.asarray(cond), key=jax.random.key(3), shape=(B, H, W, C))
    e = run(PARAMS, None, sched, jnp.asarray(cond), key=jax.random.key(3), shape=(B, H, W, C))
    np.testing.assert_array_equal(np.asarray(d), np.asarray(e))
    assert d.shape == (B, H, W, C) and np.abs(np.asarray(d) - np.asarray(a)).max() > 1e-3


def test_sampler_deterministic_ddim_needs_no_key_but_ddpm_does():
    x_T, cond, _ = _inputs(2)
    sd = NoiseSchedule.stable_diffusion()
    out = sample(toy_model, PARAMS, jnp.asarray(x_T), DDIMScheduler.create(sd, 5), jnp.asarray(cond))
    assert np.all(np.isfinite(np.asarray(out)))
    with pytest.raises(ConfigError, match="key"):
        sample(toy_model, PARAMS, jnp.asarray(x_T), DDPMScheduler.create(sd, 5), jnp.asarray(cond))
    with pytest.raises(ConfigError, match="noises"):
        sample(toy_model, PARAMS, jnp.asarray(x_T), DDPMScheduler.create(sd, 5), jnp.asarray(cond),
               noises=jnp.zeros((4, B, H, W, C)))


@pytest.mark.parametrize("batched", [True, False])
def test_guidance_scale_one_equals_conditional(batched):
    x_T, cond, uncond = _inputs(3)
    x = jnp.asarray(x_T)
    t = jnp.full((B,), 500, jnp.int32)
    fn = guidance.guided(toy_model, batched=batched)
    got = fn(PARAMS, x, t, guidance.CFGCond(jnp.asarray(cond), jnp.asarray(uncond), 1.0))
    np.testing.assert_allclose(np.asarray(got), np.asarray(toy_model(PARAMS, x, t, jnp.asarray(cond))), atol=1e-6)


def test_guidance_batched_equals_two_forwards_and_formula():
    x_T, cond, uncond = _inputs(4)
    x, t = jnp.asarray(x_T), jnp.full((B,), 250, jnp.int32)
    c = guidance.CFGCond(jnp.asarray(cond), jnp.asarray(uncond) + 0.3, 7.5)
    one = guidance.guided(toy_model, batched=True)(PARAMS, x, t, c)
    two = guidance.guided(toy_model, batched=False)(PARAMS, x, t, c)
    np.testing.assert_allclose(np.asarray(one), np.asarray(two), atol=1e-5)
    oc = np.asarray(toy_model(PARAMS, x, t, c.cond))
    ou = np.asarray(toy_model(PARAMS, x, t, c.uncond))
    np.testing.assert_allclose(np.asarray(one), ou + 7.5 * (oc - ou), atol=1e-5)
    # SEINE guides only the first channels and keeps the rest from the conditional half.
    part = guidance.guided(toy_model, guided_channels=2)(PARAMS, x, t, c)
    np.testing.assert_allclose(np.asarray(part)[..., :2], (ou + 7.5 * (oc - ou))[..., :2], atol=1e-5)
    np.testing.assert_allclose(np.asarray(part)[..., 2:], oc[..., 2:], atol=1e-6)


def test_sampler_known_latents_are_kept():
    """Known frames end exactly at their latents (clean level after the last step); the others move."""
    rng = np.random.default_rng(5)
    frames = 3
    x_T = jnp.asarray(rng.standard_normal((1, frames, 4, 4, C)), jnp.float32)
    latents = jnp.asarray(rng.standard_normal((1, frames, 4, 4, C)), jnp.float32)
    mask = jnp.zeros((1, frames, 1, 1, 1)).at[:, 0].set(1.0)

    def video_model(params, x, t, cond):
        return toy_model(params, x.reshape(-1, 4, 4, C), jnp.repeat(t, frames), jnp.zeros((frames, C))).reshape(x.shape)

    sched = DDPMScheduler.create(NoiseSchedule.stable_diffusion(), 6, clip_sample=False)
    run = jax.jit(functools.partial(sample, video_model))
    with_known = run(PARAMS, x_T, sched, None, key=jax.random.key(0), known=(latents, mask))
    plain = run(PARAMS, x_T, sched, None, key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(with_known)[:, 0], np.asarray(latents)[:, 0], atol=1e-6)
    assert np.abs(np.asarray(with_known)[:, 1:] - np.asarray(plain)[:, 1:]).max() > 1e-4
    # Before the first step the known frame is the latent noised to the first level.
    level = sched.level[0]
    start = replace_known(latents, mask)(x_T, level, jax.random.key(1))
    noise = (np.asarray(start)[:, 0] - float(level.sqrt_alpha_prod) * np.asarray(latents)[:, 0])
    noise /= float(level.sqrt_one_minus_alpha_prod)
    assert 0.5 < noise.std() < 1.5
    np.testing.assert_array_equal(np.asarray(start)[:, 1:], np.asarray(x_T)[:, 1:])


def test_sampler_with_an_nnx_module():
    """The documented NNX pattern: split once, merge inside model_fn, jit the sampler over the state."""

    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(C, C, (3, 3), rngs=rngs)

        def __call__(self, x, t, cond):
            return self.conv(x) * jnp.cos(t.astype(jnp.float32) / 300.0).reshape(-1, 1, 1, 1)

    graphdef, state = nnx.split(Tiny(nnx.Rngs(0)))

    def model_fn(state, x, t, cond):
        return nnx.merge(graphdef, state)(x, t, cond)

    x_T, _, _ = _inputs(6)
    sched = DDIMScheduler.create(NoiseSchedule.stable_diffusion(), 6, steps_offset=1)
    out, x0 = jax.jit(functools.partial(sample, model_fn, return_x0=True))(state, jnp.asarray(x_T), sched)
    # Reference: the same steps as a Python loop over the scheduler.
    module = nnx.merge(graphdef, state)
    x = jnp.asarray(x_T)
    for i in range(sched.num_steps):
        out_i = module(x, jnp.full((B,), sched.timesteps[i]), None)
        x, last_x0 = sched.step(i, x, out_i, None)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(x0), np.asarray(last_x0), atol=1e-5)
