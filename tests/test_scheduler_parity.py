"""Scheduler parity: our DDPM/DDIM steps against diffusers' schedulers, and respacing against SEINE.

The diffusers chains run 50 steps side by side with the same random model outputs and noise, each
scheduler fed its own previous sample; the difference of x_{t-1} at every step is bounded in float32 ulps
of the sample's scale (`STEP_ULPS`, `CHAIN_ULPS`).
"""

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
from m3cvc_jax.diffusion.respacing import respaced_betas, space_timesteps, spaced_timesteps
from m3cvc_jax.diffusion.sampler import sample
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "seine_respacing_golden.npz"
SHAPE_NHWC = (2, 5, 4, 3)
STEPS = 50
ULP = float(np.finfo(np.float32).eps)
# diffusers builds alphas_cumprod as a float32 product of up to 1000 factors with torch's vectorised
# kernels, whose order (so rounding) depends on the CPU's instruction set (AVX2 on AMD EPYC, AVX-512 on
# Intel): 1 - abar near t = 0 carries tens of ulps of error that differ by machine, and every step
# inherits it times |x|. Measured worst (AMD EPYC, v_zero_snr_trailing_eta0): 68 ulps for one step, 91
# for the chain; a wrong coefficient or timestep is >= 1e4 ulps. The bounds leave 3-5x for other CPUs.
STEP_ULPS = 256
CHAIN_ULPS = 512


@jax.jit
def _jit_step(scheduler, i, x, model_output, noise):
    return scheduler.step(i, x, model_output, noise)


def _schedule_kwargs(cfg):
    keys = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "rescale_betas_zero_snr")
    return {k: cfg[k] for k in keys if k in cfg}


def _ours_schedule(cfg):
    kw = _schedule_kwargs(cfg)
    return NoiseSchedule.create(
        kw.get("beta_schedule", "linear"),
        kw.get("num_train_timesteps", 1000),
        kw.get("beta_start", 1e-4),
        kw.get("beta_end", 0.02),
        rescale_betas_zero_snr=kw.get("rescale_betas_zero_snr", False),
    )


def _random_model_output(rng, prediction_type, x, alpha_prod):
    """A random output as a network would give: it implies a random x_0 in about [-1.25, 1.25] (so that
    clipping acts) given the current x, plus 5% independent noise. Keeps samples O(1) like a real run,
    where purely random outputs would amplify them by up to 1/sqrt(abar_T) and test only float32 ulps."""
    x = x.astype(np.float64)
    x0 = rng.uniform(-1.25, 1.25, x.shape)
    a, s = np.sqrt(alpha_prod), np.sqrt(1 - alpha_prod)
    eps = (x - a * x0) / s
    out = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[prediction_type]
    return (out + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


def _x0_scale(ours, i, x, model_out):
    """1 + the magnitude of the terms x_0 is formed from: at high noise, epsilon-to-x_0 subtracts two terms
    of size ~1/sqrt(abar) (1e4 for the cosine schedule), and no float32 code resolves x_0 better than that."""
    lv = ours.level[i]
    ptype = ours.prediction_type
    if ptype == "epsilon":
        terms = float(lv.sqrt_recip_alpha_prod) * np.abs(x) + float(lv.sqrt_recipm1_alpha_prod) * np.abs(model_out)
    elif ptype == "v_prediction":
        terms = float(lv.sqrt_alpha_prod) * np.abs(x) + float(lv.sqrt_one_minus_alpha_prod) * np.abs(model_out)
    else:
        terms = np.abs(model_out)
    return 1 + terms


def _run_chain(ours, theirs, step_theirs, seed):
    """Run both schedulers over all steps with the same model outputs and noise.

    Returns (step, x0, chain): the max difference of x_{t-1} relative to the sample scale when our step is
    given the reference's current sample (step by step), that of x_0 relative to the size of the terms it
    is computed from,
    and the max difference of our own chain from the reference chain relative to the sample scale (without
    a real network the chain amplifies x by up to 1/sqrt(abar_T), so float32 ulps grow with it).
    """
    rng = np.random.default_rng(seed)
    x_ref = rng.standard_normal(SHAPE_NHWC).astype(np.float32)
    x_chain = x_ref
    x_theirs = torch.from_numpy(x_ref.transpose(0, 3, 1, 2).copy())
    np.testing.assert_array_equal(np.asarray(ours.timesteps), theirs.timesteps.numpy())
    worst_step = worst_x0 = worst_chain = 0.0
    prediction_type = theirs.config.prediction_type
    for i, t in enumerate(theirs.timesteps):
        model_out = _random_model_output(rng, prediction_type, x_ref, float(theirs.alphas_cumprod[int(t)]))
        noise_seed = seed * 1000 + i
        prev_t, x0_t = step_theirs(torch.from_numpy(model_out.transpose(0, 3, 1, 2).copy()), t, x_theirs, noise_seed)
        noise = jnp.asarray(torch.randn(x_theirs.shape, generator=torch.Generator().manual_seed(noise_seed))
                            .numpy().transpose(0, 2, 3, 1))
        ref_prev = prev_t.numpy().transpose(0, 2, 3, 1)
        ref_x0 = x0_t.numpy().transpose(0, 2, 3, 1)
        prev_o, x0_o = _jit_step(ours, i, jnp.asarray(x_ref), jnp.asarray(model_out), noise)
        chain_o, _ = _jit_step(ours, i, jnp.asarray(x_chain), jnp.asarray(model_out), noise)
        scale = max(1.0, float(np.abs(ref_prev).max()))
        worst_step = max(worst_step, float(np.abs(np.asarray(prev_o) - ref_prev).max()) / scale)
        worst_x0 = max(worst_x0, float((np.abs(np.asarray(x0_o) - ref_x0) / _x0_scale(ours, i, x_ref, model_out)).max()))
        worst_chain = max(worst_chain, float(np.abs(np.asarray(chain_o) - ref_prev).max()) / scale)
        x_ref, x_chain, x_theirs = ref_prev, np.asarray(chain_o), prev_t
    return worst_step, worst_x0, worst_chain


def _check_chain(worst_step, worst_x0, worst_chain):
    assert worst_step <= STEP_ULPS * ULP, worst_step / ULP
    assert worst_x0 <= STEP_ULPS * ULP, worst_x0 / ULP
    assert worst_chain <= CHAIN_ULPS * ULP, worst_chain / ULP


DDPM_CONFIGS = {
    "sd_eps_fixed_small_leading_offset": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon",
        variance_type="fixed_small", clip_sample=False, timestep_spacing="leading", steps_offset=1),
    "linear_v_fixed_large_trailing_clip": dict(
        beta_schedule="linear", prediction_type="v_prediction", variance_type="fixed_large",
        clip_sample=True, timestep_spacing="trailing"),
    "cosine_eps_small_log_linspace_threshold": dict(
        beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", variance_type="fixed_small_log",
        thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0, timestep_spacing="linspace"),
    "sd_sample_pred_clip_range": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="sample",
        variance_type="fixed_small", clip_sample=True, clip_sample_range=1.5, timestep_spacing="leading"),
}


@pytest.mark.parity
@pytest.mark.parametrize("name", list(DDPM_CONFIGS))
def test_scheduler_ddpm_parity(name):
    cfg = DDPM_CONFIGS[name]
    theirs = diffusers.DDPMScheduler(**cfg)
    theirs.set_timesteps(STEPS)
    step_kw = {k: v for k, v in cfg.items() if k not in _schedule_kwargs(cfg)}
    ours = DDPMScheduler.create(_ours_schedule(cfg), STEPS, **step_kw)

    def step_theirs(model_out, t, x, noise_seed):
        out = theirs.step(model_out, t, x, generator=torch.Generator().manual_seed(noise_seed))
        return out.prev_sample, out.pred_original_sample

    worst_step, worst_x0, worst_chain = _run_chain(ours, theirs, step_theirs, seed=len(name))
    _check_chain(worst_step, worst_x0, worst_chain)


DDIM_CONFIGS = {
    "sd_eps_eta0_leading_offset_alpha0": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading", eta=0.0),
    "v_zero_snr_trailing_eta0": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
        clip_sample=False, rescale_betas_zero_snr=True, timestep_spacing="trailing", eta=0.0),
    "linear_eps_eta1_linspace_clipped_output": dict(
        beta_schedule="linear", prediction_type="epsilon", clip_sample=True, timestep_spacing="linspace",
        eta=1.0, use_clipped_model_output=True),
    "cosine_sample_eta05_threshold": dict(
        beta_schedule="squaredcos_cap_v2", prediction_type="sample", thresholding=True,
        timestep_spacing="leading", eta=0.5),
}


@pytest.mark.parity
@pytest.mark.parametrize("name", list(DDIM_CONFIGS))
def test_scheduler_ddim_parity(name):
    cfg = dict(DDIM_CONFIGS[name])
    eta = cfg.pop("eta")
    clipped = cfg.pop("use_clipped_model_output", False)
    theirs = diffusers.DDIMScheduler(**cfg)
    theirs.set_timesteps(STEPS)
    step_kw = {k: v for k, v in cfg.items() if k not in _schedule_kwargs(cfg)}
    ours = DDIMScheduler.create(_ours_schedule(cfg), STEPS, eta=eta, use_clipped_model_output=clipped, **step_kw)

    def step_theirs(model_out, t, x, noise_seed):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(noise_seed))
        out = theirs.step(model_out, t, x, eta=eta, use_clipped_model_output=clipped, variance_noise=noise)
        return out.prev_sample, out.pred_original_sample

    worst_step, worst_x0, worst_chain = _run_chain(ours, theirs, step_theirs, seed=len(name))
    _check_chain(worst_step, worst_x0, worst_chain)


@pytest.mark.parity
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_scheduler_betas_parity(schedule):
    theirs = diffusers.DDPMScheduler(beta_schedule=schedule, beta_start=0.00085, beta_end=0.012)
    ours = NoiseSchedule.create(schedule, 1000, 0.00085, 0.012)
    # torch.linspace rounds differently from a correctly rounded float64 linspace by <= 1 ulp.
    np.testing.assert_allclose(ours.betas, theirs.betas.numpy(), rtol=3e-7, atol=0)
    np.testing.assert_allclose(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=2e-6, atol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 999])
def test_scheduler_spacing_matches_diffusers(spacing, steps):
    theirs = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    theirs.set_timesteps(steps)
    ours = spaced_timesteps(1000, steps, spacing, 1 if spacing == "leading" else 0)
    np.testing.assert_array_equal(ours, theirs.timesteps.numpy())


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


@pytest.mark.parity
def test_scheduler_training_targets_parity():
    """add_noise and the v target at per-example timesteps, as diffusers' add_noise / get_velocity."""
    from m3cvc_jax.diffusion import predictions

    theirs = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    level = NoiseSchedule.stable_diffusion().level()
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(SHAPE_NHWC).astype(np.float32)
    noise = rng.standard_normal(SHAPE_NHWC).astype(np.float32)
    t = np.array([3, 977])
    tt = torch.from_numpy(t)
    to_t = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())  # noqa: E731
    lv = level[jnp.asarray(t)]
    want = theirs.add_noise(to_t(x0), to_t(noise), tt).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(predictions.add_noise(jnp.asarray(x0), jnp.asarray(noise), lv)), want, atol=1e-6)
    want_v = theirs.get_velocity(to_t(x0), to_t(noise), tt).numpy().transpose(0, 2, 3, 1)
    got_v = predictions.training_target("v_prediction", jnp.asarray(x0), jnp.asarray(noise), lv)
    np.testing.assert_allclose(np.asarray(got_v), want_v, atol=1e-6)
    # And the round trip: the v target converts back to x_0 and eps.
    x_t = predictions.add_noise(jnp.asarray(x0), jnp.asarray(noise), lv)
    np.testing.assert_allclose(np.asarray(predictions.predict_x0("v_prediction", got_v, x_t, lv)), x0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(predictions.predict_eps("v_prediction", got_v, x_t, lv)), noise, atol=1e-5)


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
