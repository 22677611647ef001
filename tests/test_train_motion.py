"""Motion-module pretraining: on the bundled demo UNet, the tiny run lowers the loss on held-out noise,
changes only motion-module parameters, resumes exactly, and exports an animatediff + sd-unet pair that
`UNetMotionModel` loads and runs on a clip."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs.motion_pretrain import get_config
from m3cvc_jax import weights
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.animatediff import MotionAdapterConfig, UNetMotionModel, merge_params
from m3cvc_jax.nn.unet import UNetConfig
from m3cvc_jax.random_weights import abstract_module
from tests.train_configs import tiny_run_config
from train import motion_pretrain
from train.checkpointing import Checkpointer
from train.metrics_log import MetricsLog
from train.vq_pretrain import pure_to_flat

STEPS = 20
HELD_OUT = 4  # batches far past the run (other windows' order, other noise) for the before/after loss


def tiny_config(**overrides):
    return tiny_run_config(get_config, 64, 40, **overrides)


def held_out_loss(run, params) -> float:
    return float(np.mean([motion_pretrain.eval_loss(run.spec, run.levels, run.context, params,
                                                    run.batches[10_000 + i], jax.random.key(1_000 + i))
                          for i in range(HELD_OUT)]))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    config = tiny_config(num_steps=STEPS)
    run = motion_pretrain.setup(config)
    initial = jax.device_get(run.state["params"])
    state, rows = motion_pretrain.train(config, str(workdir))
    return workdir, run, initial, state, rows


def test_held_out_loss_falls(full_run):
    workdir, run, initial, state, rows = full_run
    logged = MetricsLog(str(workdir)).read()
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1)) and logged == rows
    assert all(np.isfinite(r["loss"]) for r in logged)
    # The per-step loss swings with the drawn timestep, so compare the same examples and noise before/after.
    before, after = held_out_loss(run, initial), held_out_loss(run, state["params"])
    assert after < 0.8 * before, (before, after)


def test_only_motion_modules_change(full_run):
    _, _, initial, state, _ = full_run
    before, after = pure_to_flat(initial), pure_to_flat(state["params"])
    assert before.keys() == after.keys()
    motion = [k for k in before if ".motion_modules." in k]
    spatial = [k for k in before if k not in motion]
    assert motion and spatial
    for k in spatial:
        assert np.asarray(before[k]).tobytes() == np.asarray(after[k]).tobytes(), k
    changed = [k for k in motion if not np.array_equal(before[k], after[k])]
    # Every motion weight trains (the zero-initialised proj_out first, then the rest through it).
    assert len(changed) == len(motion), sorted(set(motion) - set(changed))[:5]


def test_frozen_unet_is_the_demo_keyframe_unet(full_run):
    _, run, initial, _, _ = full_run
    config = tiny_config()
    meta, source = weights.load_checkpoint(config.unet_weights, family="sd-unet")
    flat = pure_to_flat(initial)
    extra = meta["config"]["extra_in_channels"]
    assert extra > 0  # the index-condition channels are dropped
    np.testing.assert_array_equal(flat["conv_in.kernel"], source["conv_in.kernel"][:, :, :-extra])
    for k, v in source.items():
        if k != "conv_in.kernel":
            np.testing.assert_array_equal(flat[k], v)
    # AnimateDiff's zero-initialised output projections: step 0 is the image model frame by frame.
    assert all(not np.any(v) for k, v in flat.items() if ".motion_modules." in k and ".proj_out." in k)


def test_resume_reproduces_uninterrupted_run(full_run, tmp_path):
    workdir, _, _, full_state, full_rows = full_run
    motion_pretrain.train(tiny_config(num_steps=10), str(tmp_path))
    state, rows = motion_pretrain.train(tiny_config(num_steps=STEPS), str(tmp_path))
    assert [r["step"] for r in rows] == list(range(11, STEPS + 1))
    assert MetricsLog(str(tmp_path)).read() == full_rows
    assert sorted(Checkpointer(str(tmp_path)).all_steps()) == [10, 20]
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(full_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_export_loads_and_runs_a_clip(full_run):
    workdir, run, _, state, _ = full_run
    meta_m, motion = weights.load_checkpoint(os.path.join(workdir, "export", "motion_adapter"), family="animatediff")
    meta_u, unet = weights.load_checkpoint(os.path.join(workdir, "export", "unet"), family="sd-unet")
    ucfg, mcfg = UNetConfig.from_dict(meta_u["config"]), MotionAdapterConfig.from_dict(meta_m["config"])
    assert ucfg.extra_in_channels == 0 and mcfg.block_out_channels == tuple(ucfg.block_out_channels)
    merged = merge_params(unet, motion)
    trained = pure_to_flat(state["params"])
    assert merged.keys() == trained.keys()
    for k, v in trained.items():
        np.testing.assert_array_equal(merged[k], v, err_msg=k)
    model = abstract_module(lambda rngs: UNetMotionModel(ucfg, mcfg, rngs=rngs))
    weights.assign_params(model, merged)
    frames = 6  # not the training window: the sinusoidal positions cover any count up to max_seq_length
    x = jax.random.normal(jax.random.key(0), (1, frames, 5, 8, ucfg.in_channels))
    out = np.asarray(nnx.jit(lambda m, x: m(x, 500, run.context))(model, x))
    assert out.shape == x.shape and np.all(np.isfinite(out))
    # The motion modules act: the same model without them (proj_out zeroed) treats frames independently.
    for k in merged:
        if ".motion_modules." in k and ".proj_out." in k:
            merged[k] = np.zeros_like(merged[k])
    weights.assign_params(model, merged)
    still = np.asarray(nnx.jit(lambda m, x: m(x, 500, run.context))(model, x))
    assert np.abs(out - still).max() > 1e-3 * np.abs(still).max()


@pytest.mark.parametrize("key,value", [("beta_schedule", "cosine"), ("window", 1), ("window", 33), ("width", 60), ("unet_weights", "")])
def test_bad_settings_are_one_line_errors(key, value):
    with pytest.raises(ConfigError):
        motion_pretrain.setup(tiny_config(**{key: value}))
