"""Scheduler steps without torch: the paper's DDPM equation, respacing computed by hand, and SEINE's own
respaced DDPM/DDIM (golden fixture made with its code). diffusers parity is in test_scheduler_parity.py."""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.diffusion import ddpm as ddpm_lib
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.respacing import respaced_betas, space_timesteps
from m3cvc_jax.diffusion.sampler import sample
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "seine_respacing_golden.npz"
SHAPE_NHWC = (2, 5, 4, 3)


@jax.jit
def _jit_step(scheduler, i, x, model_output, noise):
    return scheduler.step(i, x, model_output, noise)


def test_scheduler_ddpm_paper_equation():
    """The posterior-form step equals the paper's eq. (II-C) for epsilon prediction without clipping."""
    sched = NoiseSchedule.seine()
    ours = DDPMScheduler.create(sched, 25, variance_type="fixed_large", clip_sample=False)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(SHAPE_NHWC), jnp.float32)
    for i in range(ours.num_steps):
        eps = jnp.asarray(rng.standard_normal(SHAPE_NHWC), jnp.float32)
        z = jnp.asarray(rng.standard_normal(SHAPE_NHWC), jnp.float32)
        t = int(ours.timesteps[i])
        ab_t = sched.alphas_cumprod[t]
        ab_prev = sched.alphas_cumprod[int(ours.timesteps[i + 1])] if i + 1 < ours.num_steps else 1.0
        alpha_t = ab_t / ab_prev
        sigma_t = np.sqrt(1 - alpha_t) if t > 0 else 0.0
        want = ddpm_lib.paper_update(x, eps, alpha_t, ab_t, sigma_t, z)
        got, _ = _jit_step(ours, i, x, eps, z)
        # Random eps drive x to ~1e2 here, so the bound is relative.
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-6)
        x = got


def test_scheduler_space_timesteps_by_hand():
    assert space_timesteps(10, "3") == {0, 4, 9}  # stride 4.5: round(4.5) = 4 (half to even)
    assert space_timesteps(10, "2,3") == {0, 4, 5, 7, 9}
    assert space_timesteps(10, [10]) == set(range(10))
    assert space_timesteps(100, "ddim25") == set(range(0, 100, 4))
    assert len(space_timesteps(1000, "250")) == 250
    with pytest.raises(ConfigError):
        space_timesteps(10, "11")
    with pytest.raises(ConfigError):
        space_timesteps(10, "ddim7")


def test_scheduler_respaced_ddpm_by_hand():
    """SEINE-style respacing on a 10-step chain, expected values computed here step by step."""
    betas = np.array([0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    sched = NoiseSchedule.from_betas(betas, "float64")
    ab = np.cumprod(1 - betas)
    kept = [0, 4, 5, 7, 9]
    new_betas, tmap = respaced_betas(ab, kept)
    want_betas = [1 - ab[0], 1 - ab[4] / ab[0], 1 - ab[5] / ab[4], 1 - ab[7] / ab[5], 1 - ab[9] / ab[7]]
    np.testing.assert_allclose(new_betas, want_betas, rtol=1e-12)
    np.testing.assert_array_equal(tmap, kept)

    for var_type in ("fixed_large", "fixed_small"):
        ours = DDPMScheduler.respaced(sched, "2,3", variance_type=var_type)
        np.testing.assert_array_equal(np.asarray(ours.timesteps), kept[::-1])
        for i, k in enumerate(kept[::-1]):
            j = kept.index(k)
            ab_t, ab_prev = ab[k], (ab[kept[j - 1]] if j > 0 else 1.0)
            beta = 1 - ab_t / ab_prev
            coef1 = beta * np.sqrt(ab_prev) / (1 - ab_t)
            coef2 = (1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab_t)
            var = beta if var_type == "fixed_large" else beta * (1 - ab_prev) / (1 - ab_t)
            np.testing.assert_allclose(float(ours.coef_x0[i]), coef1, rtol=1e-6)
            np.testing.assert_allclose(float(ours.coef_xt[i]), coef2, rtol=1e-6)
            np.testing.assert_allclose(float(ours.noise_std[i]), np.sqrt(var) if j > 0 else 0.0, rtol=1e-6)
            np.testing.assert_allclose(float(ours.level.sqrt_recip_alpha_prod[i]), np.sqrt(1 / ab_t), rtol=1e-6)
            np.testing.assert_allclose(float(ours.level.sqrt_recipm1_alpha_prod[i]), np.sqrt(1 / ab_t - 1), rtol=1e-6)


_SEINE_ALPHAS_CUMPROD = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64)).astype(np.float32)


def seine_toy_model(x, t):
    """The stand-in network of the golden fixture (the script beside it has the torch twin): the exact
    denoiser for Gaussian data of std 0.5 plus a small nonlinear term; x channels-last, t (B,)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    ab = jnp.asarray(_SEINE_ALPHAS_CUMPROD)[t].reshape(shape)
    tt = t.reshape(shape).astype(x.dtype)
    return jnp.sqrt(1 - ab) * x / (0.25 * ab + (1 - ab)) + 0.05 * jnp.tanh(x + tt / 1000.0)


@pytest.mark.parity
def test_scheduler_seine_respaced_ddpm_golden():
    """Respaced DDPM against SEINE's own diffusion code (golden fixture; see the script beside it).

    Step by step (each step given SEINE's current sample): timesteps, posterior mean, variance, x_0 and
    sample; then the whole 250-step run through `sampler.sample` replaying SEINE's noise.
    """
    if not FIXTURE.exists():
        pytest.fail(f"missing fixture {FIXTURE}; regenerate with tests/fixtures/make_seine_respacing_golden.py")
    g = np.load(FIXTURE)
    ours = DDPMScheduler.respaced(NoiseSchedule.seine(), str(g["section_counts"]))
    np.testing.assert_array_equal(np.asarray(ours.timesteps), g["model_timesteps"])
    # SEINE's layout is (B, C, F, H, W); ours is channels-last (B, F, H, W, C).
    to_ours = lambda a: np.moveaxis(a, -4, -1)  # noqa: E731
    x_T = to_ours(g["x_T"])
    for i in range(ours.num_steps):
        x = jnp.asarray(x_T if i == 0 else to_ours(g["sample"][i - 1]))
        eps = seine_toy_model(x, jnp.broadcast_to(ours.timesteps[i], (x.shape[0],)))
        mean, x0 = _jit_step(ours, i, x, eps, None)
        np.testing.assert_allclose(np.asarray(mean), to_ours(g["mean"][i]), atol=1e-5, rtol=0, err_msg=f"step {i}")
        # x_0 = 157 x - 157 eps at the first steps: compare at the scale of its terms.
        scale = 1 + float(ours.level.sqrt_recip_alpha_prod[i]) * float(np.abs(np.asarray(x)).max())
        np.testing.assert_allclose(np.asarray(x0), to_ours(g["pred_xstart"][i]), atol=1e-6 * scale, rtol=0)
        if i + 1 < ours.num_steps:  # the last step adds no noise (its reference variance is unused)
            np.testing.assert_allclose(float(ours.noise_std[i]) ** 2, g["variance"][i], rtol=1e-5)
        else:
            assert float(ours.noise_std[i]) == 0.0
        got, _ = _jit_step(ours, i, x, eps, jnp.asarray(to_ours(g["noise"][i])))
        np.testing.assert_allclose(np.asarray(got), to_ours(g["sample"][i]), atol=1e-5, rtol=0, err_msg=f"step {i}")

    run = jax.jit(functools.partial(sample, lambda p, x, t, c: seine_toy_model(x, t)))
    final = run(None, jnp.asarray(x_T), ours, noises=jnp.asarray(to_ours(g["noise"])))
    want = to_ours(g["sample"][-1])
    np.testing.assert_allclose(np.asarray(final), want, atol=1e-5, rtol=0)


def test_scheduler_bad_options_are_config_errors():
    sd = NoiseSchedule.stable_diffusion()
    with pytest.raises(ConfigError, match="beta schedule"):
        NoiseSchedule.create("quadratic")
    with pytest.raises(ConfigError, match="prediction_type"):
        DDPMScheduler.create(sd, 10, prediction_type="noise")
    with pytest.raises(ConfigError, match="variance_type"):
        DDPMScheduler.create(sd, 10, variance_type="learned_range")
    with pytest.raises(ConfigError, match="timestep_spacing"):
        DDIMScheduler.create(sd, 10, timestep_spacing="even")
    with pytest.raises(ConfigError, match="num_inference_steps"):
        DDIMScheduler.create(sd, 1001)
    with pytest.raises(ConfigError, match="descending"):
        DDPMScheduler.create(sd, timesteps=[10, 20])
    with pytest.raises(ConfigError, match="eta"):
        DDIMScheduler.create(sd, 10, eta=-1.0)


@pytest.mark.parity
def test_scheduler_seine_respaced_ddim_golden():
    """SEINE's DDIM path (respaced to 50, eta 0, no clipping) against its own loop, step by step."""
    g = np.load(FIXTURE)
    ours = DDIMScheduler.respaced(NoiseSchedule.seine(), str(g["ddim_section_counts"]))
    to_ours = lambda a: np.moveaxis(a, -4, -1)  # noqa: E731
    x_T = to_ours(g["x_T"])
    for i in range(ours.num_steps):
        x = jnp.asarray(x_T if i == 0 else to_ours(g["ddim_sample"][i - 1]))
        eps = seine_toy_model(x, jnp.broadcast_to(ours.timesteps[i], (x.shape[0],)))
        got, _ = _jit_step(ours, i, x, eps, None)
        np.testing.assert_allclose(np.asarray(got), to_ours(g["ddim_sample"][i]), atol=1e-5, rtol=0,
                                   err_msg=f"step {i}")
    run = jax.jit(functools.partial(sample, lambda p, x, t, c: seine_toy_model(x, t)))
    final = run(None, jnp.asarray(x_T), ours)
    np.testing.assert_allclose(np.asarray(final), to_ours(g["ddim_sample"][-1]), atol=1e-5, rtol=0)
