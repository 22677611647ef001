"""`UNetConfig.from_diffusers`: every UNet2DConditionModel setting is either honoured or refused."""

import dataclasses
import inspect
import json

import pytest

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.unet import UNetConfig

# A non-default value for each setting the port does not implement (values a real config could hold).
NON_DEFAULT = {
    "act_fn": "mish", "center_input_sample": True, "class_embed_type": "timestep", "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 32, "addition_time_embed_dim": 256, "encoder_hid_dim": 1024,
    "encoder_hid_dim_type": "text_proj", "time_embedding_type": "fourier", "time_embedding_dim": 1024,
    "time_embedding_act_fn": "gelu", "timestep_post_act": "silu", "time_cond_proj_dim": 256,
    "resnet_time_scale_shift": "scale_shift", "resnet_skip_time_act": True, "resnet_out_scale_factor": 2.0,
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn", "mid_block_scale_factor": 1.414, "dual_cross_attention": True,
    "only_cross_attention": [True, False, False, False], "cross_attention_norm": "group_norm", "num_class_embeds": 10,
    "projection_class_embeddings_input_dim": 2816, "class_embeddings_concat": True, "conv_in_kernel": 7,
    "conv_out_kernel": 1, "attention_type": "gated", "reverse_transformer_layers_per_block": [[1], [2], [3], [4]],
    "dropout": 0.1, "mid_block_only_cross_attention": True,
    "cross_attention_dim": [768, 768, 1024, 1024], "layers_per_block": [1, 2, 2, 2],
    "transformer_layers_per_block": [[1, 2], [1, 2], [1, 2], [1, 2]],
}
# Settings the port implements (UNetConfig fields, under diffusers' names).
HONOURED = {f.name for f in dataclasses.fields(UNetConfig)} - {"extra_in_channels"} | {"attention_head_dim"}


@pytest.mark.parametrize("key", sorted(NON_DEFAULT))
def test_unet_config_refuses_each_unhonoured_setting(key):
    with pytest.raises(ConfigError, match=key):
        UNetConfig.from_diffusers(json.loads(json.dumps({key: NON_DEFAULT[key]})))


def test_unet_config_accepts_defaults_as_json_writes_them():
    """diffusers' own defaults, as its config.json spells them (floats as ints, tuples as lists, None)."""
    cfg = UNetConfig.from_diffusers({"resnet_out_scale_factor": 1, "mid_block_scale_factor": 1.0, "dropout": 0,
                                     "only_cross_attention": [False] * 4, "mid_block_only_cross_attention": None,
                                     "cross_attention_norm": None, "addition_embed_type_num_heads": 64,
                                     "cross_attention_dim": 768, "_class_name": "UNet2DConditionModel"})
    assert cfg == UNetConfig.preset("sd15")


def test_unet_config_covers_the_whole_diffusers_signature():
    """Every argument of diffusers' UNet2DConditionModel is honoured or refused, and the value the port
    takes as 'absent' is diffusers' default (so a config.json written by diffusers converts)."""
    diffusers = pytest.importorskip("diffusers")
    from m3cvc_jax.nn import unet

    params = inspect.signature(diffusers.UNet2DConditionModel.__init__).parameters
    names = set(params) - {"self"}
    refused = set(unet._UNHONOURED_DEFAULTS) | {"mid_block_only_cross_attention"}
    assert not names - HONOURED - refused, f"settings neither honoured nor refused: {sorted(names - HONOURED - refused)}"
    assert refused <= set(NON_DEFAULT)
    for key, ours in unet._UNHONOURED_DEFAULTS.items():
        assert params[key].default == ours, key
    # And diffusers' full default config (SD 1.5 widths) goes through unchanged.
    with_defaults = {k: p.default for k, p in params.items() if k != "self"}
    with_defaults = json.loads(json.dumps({**with_defaults, "cross_attention_dim": 768}))
    assert UNetConfig.from_diffusers(with_defaults) == dataclasses.replace(UNetConfig.preset("sd15"), sample_size=None)
