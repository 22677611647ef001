"""The converters' name tables against key lists of the published checkpoints (tests/fixtures/key_lists):
SD 1.5's single file (UNet, VAE, text encoder) and the original RAFT small / things weights. Every listed
tensor must land on its own parameter of our model with a compatible shape, and the configs inferred from
the real names and shapes must be the released ones. Written from the public checkpoints, not from our
tables, so a wrong row in a table fails here."""

import os
import re

import numpy as np
import pytest
from flax import nnx

from convert_weights import raft as raft_conv
from convert_weights import sd_unet, sd_vae
from convert_weights.clip import _rename as clip_rename
from convert_weights.core import abstract_shapes, map_onto
from convert_weights.ldm_names import UNET_PREFIX, VAE_PREFIX, renamer, vae_table
from m3cvc_jax.nn.clip import CLIPConfig, CLIPTextModel
from m3cvc_jax.nn.raft import PRESETS as RAFT_PRESETS
from m3cvc_jax.nn.raft import RAFT
from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "key_lists")


def key_list(name: str) -> dict[str, np.ndarray]:
    """KEY SHAPE lines -> zero-stride arrays of those shapes (no memory)."""
    out = {}
    with open(os.path.join(FIXTURES, name)) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                key, shape = line.split()
                dims = () if shape == "-" else tuple(int(d) for d in shape.split(","))
                out[key] = np.broadcast_to(np.float32(0), dims)
    return out


def under(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def sd15():
    return key_list("sd15_single_file.txt")


def test_sd15_unet_names_map_and_infer_the_released_config(sd15):
    unet = under(sd15, UNET_PREFIX)
    assert sd_unet.is_ldm(unet) and len(unet) > 50
    cfg = sd_unet.infer_config(unet)
    assert cfg == UNetConfig(sample_size=cfg.sample_size) == UNetConfig.preset("sd15")
    shapes = abstract_shapes(lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0)))
    mapped = map_onto(shapes, unet, rename=sd_unet.ldm_rename(cfg), source="v1-5-pruned.ckpt", allow_missing=True)
    assert len(mapped) == len(unet)  # each real tensor on its own parameter
    assert mapped["up_blocks.1.upsamplers.0.conv.kernel"].shape == (3, 3, 1280, 1280)
    assert mapped["down_blocks.0.attentions.0.proj_in.kernel"].shape == (320, 320)  # 1x1 conv -> Linear


def test_sd15_vae_names_map_and_infer_the_released_config(sd15):
    vae = under(sd15, VAE_PREFIX)
    assert sd_vae.is_ldm(vae)
    cfg = sd_vae.infer_config(vae)
    assert cfg == VAEConfig.preset("sd")
    shapes = abstract_shapes(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)))
    rename = renamer(vae_table(len(cfg.block_out_channels), cfg.layers_per_block))
    mapped = map_onto(shapes, vae, rename=rename, source="v1-5-pruned.ckpt", allow_missing=True)
    assert len(mapped) == len(vae)
    # LDM's decoder counts `up` from the lowest resolution: up.1 is diffusers' up_blocks.2 (256 wide).
    assert mapped["decoder.up_blocks.2.resnets.0.conv_shortcut.kernel"].shape == (512, 256)
    assert mapped["decoder.up_blocks.3.resnets.0.conv_shortcut.kernel"].shape == (256, 128)


def test_sd15_text_encoder_names_are_transformers_clip_names(sd15):
    text = under(sd15, "cond_stage_model.transformer.")
    shapes = abstract_shapes(lambda: CLIPTextModel(CLIPConfig.preset("vit-l-14").text, rngs=nnx.Rngs(0)))
    mapped = map_onto(shapes, text, rename=clip_rename, source="v1-5-pruned.ckpt", allow_missing=True)
    assert len(mapped) == len(text) - 1  # position_ids is recomputed


@pytest.mark.parametrize("fixture, preset", [("raft_small.txt", "small"), ("raft_things.txt", "large")])
def test_original_raft_names_map(fixture, preset):
    sd = key_list(fixture)
    assert raft_conv.is_original_naming(sd) and raft_conv.detect_preset(sd) == preset
    config = RAFT_PRESETS[preset]
    renamed = raft_conv.from_original(sd, config)
    shapes = abstract_shapes(lambda: RAFT(config, rngs=nnx.Rngs(0)))
    mapped = map_onto(shapes, renamed, rename=raft_conv._rename, source=fixture, allow_missing=True)
    # The original's ResidualBlock keeps each strided block's norm3 also as downsample.1: one tensor.
    duplicates = [k for k in sd if re.search(r"\.layer[23]\.0\.norm3\.", k)]
    counters = [k for k in sd if k.endswith("num_batches_tracked")]
    assert len(mapped) == len(sd) - len(duplicates) - len(counters)
    if preset == "large":
        assert duplicates and mapped["update_block.recurrent_block.convgru2.convz.kernel"].shape == (5, 1, 384, 128)
        assert mapped["context_encoder.layer2.0.downsample.1.running_mean"].shape == (96,)
