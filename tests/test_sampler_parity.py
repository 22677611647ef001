"""The scanned sampler against diffusers: whole runs against a loop of its schedulers on a toy network, and a
whole guided run of a converted SD UNet."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from m3cvc_jax.diffusion import guidance
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.sampler import sample
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from tests.randomize import assert_no_init_constants, randomize_all
from tests.test_sampler import MIX, PARAMS, TBIAS, _inputs, _jitted_sampler

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)


def toy_model_torch(x, t, cond):
    tt = torch.sin(torch.as_tensor(float(t)) / 100.0)
    h = torch.einsum("bchw,cd->bdhw", x, torch.from_numpy(MIX)) + tt * torch.from_numpy(TBIAS)[None, :, None, None]
    return torch.tanh(h + cond[:, :, None, None])


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


def _diffusers_loop(scheduler, x_T, cond, uncond, scale, seed, eta=None):
    """diffusers' usual denoising loop; returns the final sample and the noise each step drew."""
    x = _nchw(x_T)
    c, u = torch.from_numpy(np.asarray(cond)), torch.from_numpy(np.asarray(uncond))
    noises = []
    for i, t in enumerate(scheduler.timesteps):
        out_c, out_u = toy_model_torch(x, t, c), toy_model_torch(x, t, u)
        out = out_u + scale * (out_c - out_u)
        gen_seed = seed * 1000 + i
        noises.append(_nhwc(torch.randn(x.shape, generator=torch.Generator().manual_seed(gen_seed))))
        kwargs = {"generator": torch.Generator().manual_seed(gen_seed)}
        if eta is not None:
            kwargs["eta"] = eta
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return _nhwc(x), np.stack(noises)


@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("ddpm", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                      steps_offset=1, variance_type="fixed_small")),
        ("ddpm", dict(beta_schedule="linear", prediction_type="v_prediction", variance_type="fixed_large",
                      timestep_spacing="trailing")),
        ("ddim", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)),
        ("ddim", dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing")),
    ],
)
def test_scheduler_sampler_whole_run_matches_diffusers_loop(kind, kwargs):
    """50 guided steps in one scan against diffusers' scheduler stepping the same toy network."""
    x_T, cond, uncond = _inputs(len(kwargs))
    scale = 3.0
    sched_keys = ("beta_schedule", "beta_start", "beta_end")
    schedule = NoiseSchedule.create(**{k: v for k, v in kwargs.items() if k in sched_keys})
    step_kw = {k: v for k, v in kwargs.items() if k not in sched_keys}
    if kind == "ddpm":
        theirs = diffusers.DDPMScheduler(**kwargs)
        ours = DDPMScheduler.create(schedule, 50, **step_kw)
        eta = None
    else:
        theirs = diffusers.DDIMScheduler(**kwargs)
        ours = DDIMScheduler.create(schedule, 50, **step_kw)
        eta = 0.0
    theirs.set_timesteps(50)
    want, noises = _diffusers_loop(theirs, x_T, cond, uncond, scale, seed=len(kwargs), eta=eta)
    got = _jitted_sampler()(PARAMS, jnp.asarray(x_T), ours, guidance.CFGCond(jnp.asarray(cond), jnp.asarray(uncond), scale),
                            noises=jnp.asarray(noises) if kind == "ddpm" else None)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


# --- a whole run with the converted SD UNet --------------------------------------------------------------

TINY_SD_UNET = dict(block_out_channels=(16, 32, 32), layers_per_block=1, cross_attention_dim=24,
                    attention_head_dim=2, norm_num_groups=8, sample_size=16,
                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


@pytest.mark.parity
def test_scheduler_sampler_sd_unet_whole_run(tmp_path):
    """50 guided DDIM steps of a random tiny SD UNet converted with our converter, in one jitted scan,
    against diffusers' DDIMScheduler driving the diffusers UNet (batched CFG as its pipelines do)."""
    from convert_weights import sd_unet
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
    from m3cvc_jax.weights import assign_params, load_checkpoint
    from tests.sd_reference import abstract

    ref = diffusers.UNet2DConditionModel(**TINY_SD_UNET)
    randomize_all(ref, seed=3)
    assert_no_init_constants(ref)
    ref.eval()
    ref.save_pretrained(tmp_path / "unet")
    sd_unet.convert(str(tmp_path / "unet"), str(tmp_path / "converted"))
    meta, params = load_checkpoint(str(tmp_path / "converted"), family="sd-unet")
    model = abstract(lambda: UNet2DConditionModel(UNetConfig.from_dict(meta["config"]), rngs=nnx.Rngs(0)))
    assign_params(model, params)
    graphdef, state = nnx.split(model)

    def unet_fn(state, x, t, context):
        return nnx.merge(graphdef, state)(x, t, context)

    rng = np.random.default_rng(3)
    x_T = rng.standard_normal((1, 8, 12, 4)).astype(np.float32)
    ctx = rng.standard_normal((1, 5, 24)).astype(np.float32)
    null = rng.standard_normal((1, 5, 24)).astype(np.float32) * 0.1
    scale = 5.0
    sd_cfg = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1)

    theirs = diffusers.DDIMScheduler(**sd_cfg)
    theirs.set_timesteps(50)
    x = _nchw(x_T)
    both = torch.from_numpy(np.concatenate([ctx, null]))
    with torch.no_grad():
        for t in theirs.timesteps:
            out = ref(torch.cat([x, x]), t, both).sample
            out_c, out_u = out.chunk(2)
            x = theirs.step(out_u + scale * (out_c - out_u), t, x).prev_sample
    want = _nhwc(x)

    ours = DDIMScheduler.create(NoiseSchedule.stable_diffusion(), 50, clip_sample=False, set_alpha_to_one=False,
                                steps_offset=1)
    run = jax.jit(functools.partial(sample, guidance.guided(unet_fn)))
    got = run(state, jnp.asarray(x_T), ours, guidance.CFGCond(jnp.asarray(ctx), jnp.asarray(null), scale))
    assert np.abs(want).max() > 0.5  # the run did something
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-3, rtol=0)
