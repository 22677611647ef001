"""VQ pretraining: the tiny run learns, and a resumed run reproduces the uninterrupted one exactly."""

import os

import jax
import numpy as np
import pytest

from configs.vq_pretrain import get_config
from tests.train_configs import tiny_run_config
from train import vq_pretrain
from train.checkpointing import Checkpointer
from train.metrics_log import MetricsLog

STEPS = 30


def tiny_config(data_dir, **kw):
    c = tiny_run_config(get_config, 64, 32, **kw)  # latent 8x4 -> 4x2 indices: the cheapest shape the codec allows
    c.data.data_dir = str(data_dir)
    return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    workdir = tmp_path_factory.mktemp("full")
    state, rows = vq_pretrain.train(tiny_config(data, num_steps=STEPS), str(workdir))
    return data, workdir, state, rows


def test_loss_falls_and_usage_is_logged(full_run):
    _, workdir, _, rows = full_run
    logged = MetricsLog(str(workdir)).read()
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1)) and logged == rows
    for key in ("loss", "rec_loss", "commit_loss", "perplexity", "usage", "dead_codes"):
        assert all(np.isfinite(r[key]) for r in logged), key
    losses = np.array([r["loss"] for r in logged])
    # Steps 1-2 are the data-dependent codebook init; from then on the latent NMSE must fall clearly.
    assert losses[-5:].mean() < 0.8 * losses[2:7].mean(), losses
    assert max(r["perplexity"] for r in logged[-5:]) > 2.0  # not collapsed onto one codeword
    assert sorted(Checkpointer(str(workdir)).all_steps()) == [10, 20, 30]
    assert os.path.isfile(os.path.join(workdir, "export", "config.json"))


def test_resume_reproduces_uninterrupted_run(full_run, tmp_path):
    data, workdir, full_state, full_rows = full_run
    vq_pretrain.train(tiny_config(data, num_steps=20), str(tmp_path))
    state, rows = vq_pretrain.train(tiny_config(data, num_steps=STEPS), str(tmp_path))  # resumes at 20
    assert [r["step"] for r in rows] == list(range(21, STEPS + 1))
    assert MetricsLog(str(tmp_path)).read() == full_rows
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(full_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Nothing left to do: a rerun changes nothing and logs nothing.
    _, again = vq_pretrain.train(tiny_config(data, num_steps=STEPS), str(tmp_path))
    assert again == [] and MetricsLog(str(tmp_path)).read() == full_rows


def test_export_carries_the_word_histogram_under_its_fingerprint(full_run):
    from m3cvc_jax import weights

    _, workdir, _, _ = full_run
    meta, params = weights.load_checkpoint(os.path.join(workdir, "export"), family=vq_pretrain.EXPORT_FAMILY)
    counts = meta["tables"]["histogram"]
    cfg = tiny_config("unused")
    assert len(counts) == meta["config"]["codebook_size"]
    # One epoch of maps, each 4x2 indices (see tiny_config); capped by histogram_batches.
    assert sum(counts) > 0 and sum(counts) % 8 == 0 and sum(counts) <= cfg.histogram_batches * cfg.batch_size * 8
    assert meta["fingerprint"] == weights.fingerprint(params, meta["tables"])
    assert meta["fingerprint"] != weights.fingerprint(params)  # another table, another fingerprint
