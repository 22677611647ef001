"""Video model pretraining: the tiny run learns the epsilon loss, exports a SEINE checkpoint that the
reconstruction pipeline's loader reads, and a resumed run reproduces the uninterrupted one exactly."""

import os
import shutil

import jax
import numpy as np
import pytest

from configs.video_pretrain import get_config
from m3cvc_jax import weights
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
from tests.train_configs import tiny_run_config
from train import video_pretrain
from train.checkpointing import Checkpointer
from train.data.windows import LatentWindows
from train.metrics_log import MetricsLog

STEPS = 30


def tiny_config(**overrides):
    return tiny_run_config(get_config, 32, 32, **overrides)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    state, rows = video_pretrain.train(tiny_config(num_steps=STEPS), str(workdir))
    return workdir, state, rows


def test_loss_falls_and_export_loads(full_run):
    workdir, _, rows = full_run
    logged = MetricsLog(str(workdir)).read()
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1)) and logged == rows
    assert all(np.isfinite(r["loss"]) for r in logged)
    losses = np.array([r["loss"] for r in logged])
    # Epsilon loss starts near 1 + |initial output|^2 and falls as the net learns to predict the noise.
    assert losses[-10:].mean() < 0.85 * losses[:5].mean(), losses
    assert sorted(Checkpointer(str(workdir)).all_steps()) == [10, 20, 30]
    unet = weights.load_module(os.path.join(workdir, "export"), family="seine",
                               build=lambda cfg, rngs: VideoUNet(VideoUNetConfig(**cfg), rngs=rngs))
    assert unet.config.in_channels == 9 and unet.config.block_out_channels == (32, 32)


def test_resume_reproduces_uninterrupted_run(full_run, tmp_path):
    workdir, full_state, full_rows = full_run
    video_pretrain.train(tiny_config(num_steps=20), str(tmp_path))
    state, rows = video_pretrain.train(tiny_config(num_steps=STEPS), str(tmp_path))
    assert [r["step"] for r in rows] == list(range(21, STEPS + 1))
    assert MetricsLog(str(tmp_path)).read() == full_rows
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(full_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_windows_are_deterministic_per_step():
    calls = []

    def encode(frames):
        calls.append(len(frames))
        x = frames[..., :1].astype(np.float32)
        return x, -x

    kw = dict(width=16, height=16, fps=4.0, window=5, stride=2, batch_size=3, seed=7, encode=encode)
    folder = get_config("tiny").data.manual_dir
    a, b = LatentWindows(folder, **kw), LatentWindows(folder, **kw)
    assert len(calls) == 8  # per instance: each video and its mirror image encoded once
    for step in (0, 5, 11):
        x, y = a[step], b[step]
        assert x["mean"].shape == (3, 5, 16, 16, 1)
        np.testing.assert_array_equal(x["mean"], y["mean"])
        np.testing.assert_array_equal(x["logvar"], -x["mean"])
    assert not np.array_equal(a[0]["mean"], a[1]["mean"])


def test_bad_mask_type_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="mask_types"):
        video_pretrain.train(tiny_config(num_steps=1, mask_types=("middle",)), str(tmp_path))


def test_export_only_exports_the_latest_checkpoint_and_reads_no_data(full_run, tmp_path, monkeypatch):
    workdir, _, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "export")
    with open(copy / "metrics.jsonl") as f:
        metrics = f.read()

    def no_data(*args, **kwargs):
        raise AssertionError("export_only read the training data")

    monkeypatch.setattr(video_pretrain, "LatentWindows", no_data)
    _, rows = video_pretrain.train(tiny_config(num_steps=STEPS + 10, export_only=True), str(copy))
    assert rows == []
    meta, _ = weights.load_checkpoint(str(copy / "export"), family="seine")
    assert meta["fingerprint"] == weights.load_checkpoint(str(workdir / "export"), family="seine")[0]["fingerprint"]
    with open(copy / "metrics.jsonl") as f:
        assert f.read() == metrics
    assert sorted(Checkpointer(str(copy)).all_steps()) == [10, 20, 30]


def test_export_only_without_a_checkpoint_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(video_pretrain, "LatentWindows", None)
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        video_pretrain.train(tiny_config(export_only=True), str(tmp_path))
    assert not os.path.exists(tmp_path / "export")
