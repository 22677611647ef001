"""Scheduler parity: DPM-Solver++ (multistep, orders 1-2) against diffusers' DPMSolverMultistepScheduler.

Both sides run whole chains through the same deterministic stand-in network (the exact denoiser for
Gaussian data of std 0.5 plus a nonlinear term, so the chain stays O(1) like a real run); ours through the
scanned `sampler.sample` (which carries the previous x_0), theirs through its `step` loop. The bound is
relative to the sample's magnitude: max |ours - theirs| <= 2e-5 * max(1, max |theirs|) at every step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.diffusion.dpm_solver import DPMSolverMultistepScheduler
from m3cvc_jax.diffusion.sampler import sample
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)

SHAPE_NHWC = (2, 5, 4, 3)
REL_TOL = 2e-5
SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")

CONFIGS = {
    "sd_eps_linspace_midpoint_20": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps=20),
    "sd_eps_leading_offset_heun_10": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver_type="heun",
        timestep_spacing="leading", steps_offset=1, steps=10),
    "linear_v_trailing_sigma_min_25": dict(
        beta_schedule="linear", prediction_type="v_prediction", timestep_spacing="trailing",
        final_sigmas_type="sigma_min", steps=25),
    "linear_eps_sigma_min_no_lower_final_8": dict(
        beta_schedule="linear", final_sigmas_type="sigma_min", lower_order_final=False, steps=8),
    "linear_eps_sigma_min_euler_final_30": dict(
        beta_schedule="linear", final_sigmas_type="sigma_min", euler_at_final=True, steps=30),
    "cosine_sample_threshold_lambda_clip_12": dict(
        beta_schedule="squaredcos_cap_v2", prediction_type="sample", thresholding=True,
        dynamic_thresholding_ratio=0.9, sample_max_value=1.5, lambda_min_clipped=-5.1, steps=12),
    "sd_eps_order1_7": dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, solver_order=1, steps=7),
}


def _toy_output(xp, x, ab, t, prediction_type):
    """The stand-in network on either side (xp = numpy-like module): x, ab broadcast; t the timestep."""
    sa, s1 = xp.sqrt(ab), xp.sqrt(1 - ab)
    x0 = sa * 0.25 / (0.25 * ab + (1 - ab)) * x
    eps = (x - sa * x0) / s1
    wiggle = 0.05 * xp.tanh(x + t / 1000.0)
    out = {"epsilon": eps, "v_prediction": sa * eps - s1 * x0, "sample": x0}[prediction_type]
    return out + wiggle


def _both(name):
    cfg = dict(CONFIGS[name])
    steps = cfg.pop("steps")
    theirs = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **cfg)
    sched_kw = {k: cfg.pop(k) for k in SCHEDULE_KEYS if k in cfg}
    schedule = NoiseSchedule.create(sched_kw.get("beta_schedule", "linear"), 1000,
                                    sched_kw.get("beta_start", 1e-4), sched_kw.get("beta_end", 0.02))
    ours = DPMSolverMultistepScheduler.create(schedule, steps, **cfg)
    theirs.set_timesteps(steps)
    return schedule, ours, theirs


def _run_theirs(theirs, x_T, prediction_type, begin=0):
    ab_all = theirs.alphas_cumprod.numpy().astype(np.float64)
    x = torch.from_numpy(x_T.transpose(0, 3, 1, 2).copy())
    if begin:
        theirs.set_begin_index(begin)
    chain = []
    for t in theirs.timesteps[begin:]:
        ab = torch.tensor(ab_all[int(t)], dtype=torch.float64)
        out = _toy_output(torch, x.double(), ab, float(t), prediction_type).float()
        x = theirs.step(out, t, x).prev_sample
        chain.append(x.numpy().transpose(0, 2, 3, 1))
    return chain


def _model_fn(schedule, prediction_type):
    ab_table = jnp.asarray(schedule.alphas_cumprod.astype(np.float32))

    def model_fn(params, x, t, cond):
        ab = ab_table[t].reshape((-1,) + (1,) * (x.ndim - 1))
        return _toy_output(jnp, x, ab, t.reshape(ab.shape).astype(jnp.float32), prediction_type)

    return model_fn


@functools.partial(jax.jit, static_argnums=0)
def _jit_step(model_fn, scheduler, i, x, prev_x0):
    out = model_fn(None, x, jnp.broadcast_to(scheduler.timesteps[i], (x.shape[0],)), None)
    return scheduler.step(i, x, out, None, prev_x0)


def _check(chain_ours, chain_theirs):
    assert len(chain_ours) == len(chain_theirs)
    for i, (a, b) in enumerate(zip(chain_ours, chain_theirs)):
        scale = max(1.0, float(np.abs(b).max()))
        err = float(np.abs(np.asarray(a) - b).max())
        assert err <= REL_TOL * scale, f"step {i}: {err} > {REL_TOL} * {scale}"


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CONFIGS))
def test_scheduler_dpmpp2m_parity(name):
    schedule, ours, theirs = _both(name)
    np.testing.assert_array_equal(np.asarray(ours.timesteps), theirs.timesteps.numpy())
    ptype = ours.prediction_type
    x_T = np.random.default_rng(len(name)).standard_normal(SHAPE_NHWC).astype(np.float32)
    want = _run_theirs(theirs, x_T, ptype)
    model_fn = _model_fn(schedule, ptype)

    # Every intermediate sample, stepping our own chain (the previous x_0 carried here) ...
    x, prev_x0, got = jnp.asarray(x_T), jnp.zeros(SHAPE_NHWC, jnp.float32), []
    for i in range(ours.num_steps):
        x, prev_x0 = _jit_step(model_fn, ours, i, x, prev_x0)
        got.append(x)
    _check(got, want)
    # ... and the whole chain through the scanned sampler.
    final = jax.jit(functools.partial(sample, model_fn))(None, jnp.asarray(x_T), ours)
    _check([final], want[-1:])


@pytest.mark.parity
def test_scheduler_dpmpp2m_begin_index_parity():
    """A chain entered part-way (SDEdit, `strength` < 1) starts first order, as diffusers after
    `set_begin_index`; the sliced tables give the same samples."""
    schedule, ours, theirs = _both("sd_eps_linspace_midpoint_20")
    begin = 8
    x_T = np.random.default_rng(3).standard_normal(SHAPE_NHWC).astype(np.float32)
    want = _run_theirs(theirs, x_T, "epsilon", begin=begin)
    sliced = jax.tree.map(lambda a: a[begin:], ours)
    final = jax.jit(functools.partial(sample, _model_fn(schedule, "epsilon")))(None, jnp.asarray(x_T), sliced)
    _check([final], want[-1:])


def test_scheduler_dpmpp2m_reduces_to_ddim_at_order1():
    """First order DPM-Solver++ is DDIM (eta 0) on the same timesteps: an independent check of the tables."""
    from m3cvc_jax.diffusion.ddim import DDIMScheduler

    sd = NoiseSchedule.stable_diffusion()
    ours = DPMSolverMultistepScheduler.create(sd, 10, solver_order=1, final_sigmas_type="sigma_min")
    ts = np.asarray(ours.timesteps)
    ddim = DDIMScheduler.create(sd, timesteps=ts, set_alpha_to_one=False, clip_sample=False)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(SHAPE_NHWC), jnp.float32)
    for i in range(ours.num_steps):
        eps = jnp.asarray(rng.standard_normal(SHAPE_NHWC), jnp.float32)
        a, _ = ours.step(i, x, eps, None, jnp.zeros_like(x))
        b, _ = ddim.step(i, x, eps, None)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))
        x = b


def test_scheduler_dpmpp2m_bad_options_are_config_errors():
    sd = NoiseSchedule.stable_diffusion()
    with pytest.raises(ConfigError, match="solver_order"):
        DPMSolverMultistepScheduler.create(sd, 10, solver_order=3)
    with pytest.raises(ConfigError, match="solver_type"):
        DPMSolverMultistepScheduler.create(sd, 10, solver_type="bh2")
    with pytest.raises(ConfigError, match="final_sigmas_type"):
        DPMSolverMultistepScheduler.create(sd, 10, final_sigmas_type="one")
    with pytest.raises(ConfigError, match="timestep_spacing"):
        DPMSolverMultistepScheduler.create(sd, 10, timestep_spacing="even")
    with pytest.raises(ConfigError, match="num_inference_steps"):
        DPMSolverMultistepScheduler.create(sd, 0)
    with pytest.raises(ConfigError, match="descending"):
        DPMSolverMultistepScheduler.create(sd, timesteps=[10, 20])
