"""Decoder fine-tuning: only the linear layers and the conv_in extension move; resume is exact."""

import jax
import numpy as np
import pytest

from configs.decoder_finetune import get_config
from m3cvc_jax.errors import ConfigError
from tests.train_configs import tiny_run_config
from train import decoder_finetune as ft
from train.checkpointing import Checkpointer
from train.metrics_log import MetricsLog


def tiny_config(data_dir, **kw):
    c = tiny_run_config(get_config, 64, 32, checkpoint_every=4, text_dropout=0.5, **kw)
    c.data.data_dir = str(data_dir)
    return c


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_finetune_trains_only_linear_layers_and_resumes(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "data", num_steps=8)
    unet, _ = ft.build(cfg, ft.codec_config(cfg))
    before = _flat(ft.nnx.state(unet, ft.nnx.Param).to_pure_dict())
    paths = ft.trainable_paths(unet)
    assert ("conv_in", "kernel") in paths and ("time_embedding", "linear_1", "kernel") in paths
    assert not any("conv_shortcut" in p or p[-2] in ("conv1", "conv2", "conv_out") for p in paths)

    state, rows = ft.train(cfg, str(tmp_path / "full"))
    assert "decoder_finetune: training" in capsys.readouterr().out
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(np.isfinite(r["loss"]) for r in rows)
    assert 0 < np.mean([r["text_dropped"] for r in rows]) < 1
    after = _flat(state["params"])
    assert before.keys() == after.keys()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    linear = {k for k in before if "to_q" in k or "ff" in k or "time_emb_proj" in k}
    assert linear <= moved
    assert not any("conv1" in k or "conv2" in k or "norm" in k or "conv_shortcut" in k for k in moved), moved
    k_in = "['conv_in']['kernel']"
    c = unet.config.in_channels
    np.testing.assert_array_equal(after[k_in][:, :, :c], before[k_in][:, :, :c])  # SD channels untouched
    assert np.abs(before[k_in][:, :, c:]).max() == 0 and np.abs(after[k_in][:, :, c:]).max() > 0

    # Interrupted at step 4, resumed to 8: identical to the uninterrupted run.
    ft.train(tiny_config(tmp_path / "data", num_steps=4), str(tmp_path / "resumed"))
    resumed, _ = ft.train(cfg, str(tmp_path / "resumed"))
    assert MetricsLog(str(tmp_path / "resumed")).read() == rows
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sorted(Checkpointer(str(tmp_path / "resumed")).all_steps()) == [4, 8]


def test_paper_needs_weights(tmp_path):
    cfg = get_config("paper")
    with pytest.raises(ConfigError, match="vae_weights"):
        ft.build(cfg, ft.codec_config(cfg))


def test_cached_latents_train_exactly_as_encoding_every_batch(tmp_path):
    """cache_latents: the frozen VAE encodes each example once; the run sees the same batches and
    latents (up to float rounding of a separately compiled encoder), so the losses agree."""
    plain, rows = ft.train(tiny_config(tmp_path / "data", num_steps=3), str(tmp_path / "plain"))
    s = ft.setup(tiny_config(tmp_path / "data", num_steps=3, cache_latents=True), str(tmp_path / "cached"))
    assert "image" not in s.batches[0] and s.batches[0]["latent"].shape == (8, 4, 8, 4)
    cached, cached_rows = ft.train(tiny_config(tmp_path / "data", num_steps=3, cache_latents=True),
                                   str(tmp_path / "cached"))
    np.testing.assert_allclose([r["loss"] for r in cached_rows], [r["loss"] for r in rows], rtol=1e-4)
    np.testing.assert_array_equal([r["text_dropped"] for r in cached_rows], [r["text_dropped"] for r in rows])
