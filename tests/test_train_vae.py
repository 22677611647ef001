"""VAE pretraining: the tiny run learns, exports a usable checkpoint, and a resumed run reproduces the
uninterrupted one exactly."""

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.vae_pretrain import get_config
from m3cvc_jax import weights
from m3cvc_jax.nn.vae import VAEConfig
from tests.train_configs import tiny_run_config
from train import vae_pretrain
from train.checkpointing import Checkpointer
from train.metrics_log import MetricsLog

STEPS = 30
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir, **kw):
    c = tiny_run_config(get_config, 64, 32, **kw)
    c.data.data_dir = str(data_dir)
    return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    workdir = tmp_path_factory.mktemp("full")
    state, rows = vae_pretrain.train(tiny_config(data, num_steps=STEPS), str(workdir))
    return data, workdir, state, rows


def test_loss_falls_and_export_loads(full_run):
    _, workdir, _, rows = full_run
    logged = MetricsLog(str(workdir)).read()
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1)) and logged == rows
    for key in ("loss", "l1", "l2", "kl", "psnr"):
        assert all(np.isfinite(r[key]) for r in logged), key
    losses = np.array([r["loss"] for r in logged])
    assert losses[-5:].mean() < 0.8 * losses[:5].mean(), losses
    assert sorted(Checkpointer(str(workdir)).all_steps()) == [10, 20, 30]
    meta, params = weights.load_checkpoint(os.path.join(workdir, "export"), family="sd-vae")
    cfg = VAEConfig.from_dict(meta["config"])
    assert cfg.block_out_channels == (8, 16, 16, 16)
    # The measured scaling factor, not SD's constant.
    assert cfg.scaling_factor > 0 and cfg.scaling_factor != VAEConfig().scaling_factor
    assert meta["fingerprint"] == weights.fingerprint(params)


def test_resume_reproduces_uninterrupted_run(full_run, tmp_path):
    data, workdir, full_state, full_rows = full_run
    vae_pretrain.train(tiny_config(data, num_steps=20), str(tmp_path))
    with open(os.path.join(tmp_path, "metrics.jsonl"), "a") as f:  # killed at step 22, mid-write
        f.write('{"step": 21, "loss": 0.5}\n{"step": 22, "lo')
    state, rows = vae_pretrain.train(tiny_config(data, num_steps=STEPS), str(tmp_path))  # resumes at 20
    assert [r["step"] for r in rows] == list(range(21, STEPS + 1))
    assert MetricsLog(str(tmp_path)).read() == full_rows
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(full_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_negative_loss_weight_is_a_config_error(tmp_path):
    from m3cvc_jax.errors import ConfigError

    c = tiny_config(tmp_path, num_steps=1)
    c.loss.kl_weight = -1.0
    with pytest.raises(ConfigError, match="loss weights"):
        vae_pretrain.train(c, str(tmp_path / "w"))


def test_decoder_fine_tune_keeps_the_encoder_and_its_scale(full_run, tmp_path):
    data, workdir, _, _ = full_run
    start = os.path.join(workdir, "export")
    c = tiny_config(data, num_steps=6, init_weights=start, trainable="decoder")
    c.loss.colour_weight = 1.0
    _, rows = vae_pretrain.train(c, str(tmp_path))
    assert all(np.isfinite(r["colour"]) for r in rows)
    meta0, p0 = weights.load_checkpoint(start, family="sd-vae")
    meta1, p1 = weights.load_checkpoint(os.path.join(tmp_path, "export"), family="sd-vae")
    assert meta1["config"]["scaling_factor"] == meta0["config"]["scaling_factor"]
    assert p0.keys() == p1.keys()
    frozen = [k for k in p0 if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in p0 if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and trained and len(frozen) + len(trained) == len(p0)
    for k in frozen:
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
    assert all(not np.array_equal(p0[k], p1[k]) for k in trained if k.endswith("kernel"))


@pytest.mark.parametrize("overrides, match", [
    (dict(trainable="decoder"), "set init_weights"),
    (dict(trainable="encoder"), "trainable must be one of"),
])
def test_fine_tune_settings_are_checked(tmp_path, overrides, match):
    from m3cvc_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        vae_pretrain.train(tiny_config(tmp_path, num_steps=1, **overrides), str(tmp_path / "w"))


def test_init_weights_of_another_architecture_is_refused(full_run, tmp_path):
    from m3cvc_jax.errors import ConfigError

    data, workdir, _, _ = full_run
    c = tiny_config(data, num_steps=1, init_weights=os.path.join(workdir, "export"))
    c.vae.block_out_channels = (8, 16, 16, 32)
    with pytest.raises(ConfigError, match="is not the configured"):
        vae_pretrain.train(c, str(tmp_path / "w"))


def test_export_only_flag_reaches_the_trainer(tmp_path):
    # The trainers' command line (train/cli.py) with a stand-in trainer: the flag, not a training run.
    probe = "from train import cli; cli.main(lambda c, w: print('export_only', c.get('export_only', False), w))"
    base = [sys.executable, "-c", probe, "--config", "configs/vae_pretrain.py:tiny", "--workdir", str(tmp_path)]
    for extra, expected in (([], "False"), (["--export_only"], "True")):
        out = subprocess.run(base + extra, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["export_only", expected, str(tmp_path)]


def test_export_only_rewrites_the_export_of_the_latest_checkpoint(full_run, tmp_path):
    data, workdir, _, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "export")
    _, rows = vae_pretrain.train(tiny_config(data, num_steps=STEPS + 10, export_only=True), str(copy))
    assert rows == [] and sorted(Checkpointer(str(copy)).all_steps()) == [10, 20, 30]
    assert (weights.load_checkpoint(str(copy / "export"))[0]["fingerprint"]
            == weights.load_checkpoint(os.path.join(workdir, "export"))[0]["fingerprint"])
