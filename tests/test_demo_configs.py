"""The demo recipe's configs agree with each other and with the codec's `demo` models, and the decoder
trainer's `trainable='all'` (the demo UNet starts from random) trains every UNet weight."""

import importlib

import jax
import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.clip import PRESETS as CLIP_PRESETS
from m3cvc_jax.nn.keyframe_codec import DEMO_VAE, KeyframeCodecConfig
from train import decoder_finetune as ft
from train import video_pretrain
from train import vq_pretrain

STAGES = ("vae_pretrain", "vq_pretrain", "decoder_finetune", "video_pretrain")


@pytest.mark.parametrize("stage", STAGES)
def test_demo_config_has_the_trainer_contract(stage):
    c = importlib.import_module(f"configs.demo.{stage}").get_config()
    for field in ("seed", "num_steps", "batch_size", "log_every", "checkpoint_every"):
        assert field in c, field
    assert (c.width, c.height) == (128, 80)


def test_demo_models_fit_together():
    vae = importlib.import_module("configs.demo.vae_pretrain").get_config()
    assert tuple(vae.vae.block_out_channels) == DEMO_VAE.block_out_channels
    assert vae.vae.layers_per_block == DEMO_VAE.layers_per_block
    for stage in ("vq_pretrain", "decoder_finetune"):
        c = importlib.import_module(f"configs.demo.{stage}").get_config()
        codec = vq_pretrain.codec_config(c)
        assert codec == KeyframeCodecConfig.preset("demo") and codec.grid == (10, 16)
    assert importlib.import_module("configs.demo.decoder_finetune").get_config().trainable == "all"
    video = importlib.import_module("configs.demo.video_pretrain").get_config()
    cfg = video_pretrain.unet_config(video, CLIP_PRESETS["tiny"].text.hidden_size)  # validates heads >= 32 dims
    assert cfg.in_channels == 9 and cfg.cross_attention_dim == KeyframeCodecConfig.preset("demo").unet.cross_attention_dim


def test_demo_unet_needs_no_base_weights():
    c = importlib.import_module("configs.demo.decoder_finetune").get_config()
    with pytest.raises(ConfigError, match="needs vae_weights, text_weights, vq_weights$"):
        ft.build(c, ft.codec_config(c))
    c.trainable = "linear"
    with pytest.raises(ConfigError, match="unet_weights"):
        ft.build(c, ft.codec_config(c))


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_finetune_trainable_all_moves_every_unet_weight(tmp_path, capsys):
    from configs.decoder_finetune import get_config

    c = get_config("tiny")
    c.width, c.height = 64, 32
    c.progress, c.log_every, c.checkpoint_every, c.num_steps = False, 1, 2, 2
    c.data.data_dir = str(tmp_path / "data")
    c.trainable = "all"
    unet, _ = ft.build(c, ft.codec_config(c))
    before = _flat(ft.nnx.state(unet, ft.nnx.Param).to_pure_dict())
    state, rows = ft.train(c, str(tmp_path / "run"))
    assert "(100.0%: all)" in capsys.readouterr().out
    after = _flat(state["params"])
    # Zero-initialised conv_in extension and every other weight, norms and 3x3 convs included, move.
    assert all(not np.array_equal(before[k], after[k]) for k in before), \
        [k for k in before if np.array_equal(before[k], after[k])]
    c.trainable = "some"
    with pytest.raises(ConfigError, match="trainable"):
        ft.train(c, str(tmp_path / "bad"))
