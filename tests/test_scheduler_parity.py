"""Scheduler parity: our DDPM/DDIM steps against diffusers' schedulers.

The diffusers chains run 50 steps side by side with the same random model outputs and noise, each
scheduler fed its own previous sample; the difference of x_{t-1} at every step is bounded in float32 ulps
of the sample's scale (`STEP_ULPS`, `CHAIN_ULPS`). The checks that need no torch (hand-computed steps,
SEINE's golden respacing) are in test_scheduler.py.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.respacing import spaced_timesteps
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from tests.test_scheduler import SHAPE_NHWC, _jit_step

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)

STEPS = 50
ULP = float(np.finfo(np.float32).eps)
# diffusers builds alphas_cumprod as a float32 product of up to 1000 factors with torch's vectorised
# kernels, whose order (so rounding) depends on the CPU's instruction set (AVX2 on AMD EPYC, AVX-512 on
# Intel): 1 - abar near t = 0 carries tens of ulps of error that differ by machine, and every step
# inherits it times |x|. Measured worst (AMD EPYC, v_zero_snr_trailing_eta0): 68 ulps for one step, 91
# for the chain; a wrong coefficient or timestep is >= 1e4 ulps. The bounds leave 3-5x for other CPUs.
STEP_ULPS = 256
CHAIN_ULPS = 512


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
