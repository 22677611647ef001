"""SD converters: LDM single-file names, config inference, pipeline folders, strict errors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from convert_weights import __main__ as cli  # noqa: E402
from convert_weights import sd_unet, sd_vae  # noqa: E402
from convert_weights.ldm_names import old_diffusers_vae_rename, renamer, vae_table  # noqa: E402
from m3cvc_jax.errors import ConfigError, WeightsError  # noqa: E402
from m3cvc_jax.nn.unet import UNetConfig  # noqa: E402
from m3cvc_jax.nn.vae import VAEConfig  # noqa: E402
from m3cvc_jax.weights import load_checkpoint  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import torch_state  # noqa: E402

torch.set_num_threads(1)

# 8 heads with conv projection: SD 1.x's convention, so the config can be inferred from LDM weights.
# Norm groups are invisible in shapes: inference assumes SD's 32, so widths are multiples of 32 here.
UNET = dict(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=24, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32)
VAE = dict(block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd_convert")
    unet, vae = diffusers.UNet2DConditionModel(**UNET), diffusers.AutoencoderKL(**VAE)
    randomize_all(unet, 0)
    randomize_all(vae, 1)
    assert_no_init_constants(unet)
    assert_no_init_constants(vae)
    unet.save_pretrained(tmp / "pipe" / "unet")
    vae.save_pretrained(tmp / "pipe" / "vae")
    return tmp, unet, vae


def _params(dst, family):
    return load_checkpoint(str(dst), family=family)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sd_convert_ldm_single_file(refs):
    tmp, unet, vae = refs
    ucfg = UNetConfig.from_diffusers(dict(unet.config))
    to_ldm_unet = sd_unet.ldm_rename(ucfg, to_ldm=True)
    to_ldm_vae = renamer(vae_table(3, 1), to_ldm=True)
    state = {}
    for k, v in torch_state(unet).items():
        state["model.diffusion_model." + to_ldm_unet(k)] = torch.from_numpy(v)
    for k, v in torch_state(vae).items():
        if "Conv2d_0" in k:
            continue
        v = torch.from_numpy(v)
        if ".attentions.0.to_" in k and k.endswith("weight"):
            v = v[:, :, None, None]  # LDM's VAE attention uses 1x1 convs
        state["first_stage_model." + to_ldm_vae(k)] = v
    assert not any("down_blocks" in k or "resnets" in k or "attentions" in k for k in state)
    state["cond_stage_model.transformer.embeddings.weight"] = torch.zeros(3, 3)
    torch.save({"state_dict": state, "global_step": 7}, tmp / "sd.ckpt")

    assert cli.main(["sd-unet", str(tmp / "sd.ckpt"), str(tmp / "u_ldm")]) == 0  # config inferred
    assert cli.main(["sd-unet", str(tmp / "pipe"), str(tmp / "u_diff")]) == 0  # pipeline folder
    meta_l, p_l = _params(tmp / "u_ldm", "sd-unet")
    meta_d, p_d = _params(tmp / "u_diff", "sd-unet")
    _same(p_l, p_d)
    cfg_l, cfg_d = UNetConfig.from_dict(meta_l["config"]), UNetConfig.from_dict(meta_d["config"])
    assert cfg_l == UNetConfig.from_dict({**meta_d["config"], "sample_size": cfg_l.sample_size})
    assert cfg_d.num_attention_heads == 8

    vae_cfg = tmp / "pipe" / "vae" / "config.json"
    assert cli.main(["sd-vae", str(tmp / "sd.ckpt"), str(tmp / "v_ldm"), "--config", str(vae_cfg)]) == 0
    assert cli.main(["sd-vae", str(tmp / "pipe"), str(tmp / "v_diff")]) == 0
    _same(_params(tmp / "v_ldm", "sd-vae")[1], _params(tmp / "v_diff", "sd-vae")[1])
    # Without a config the VAE shape is inferred; groups cannot be, so widths that SD's 32 groups do
    # not divide are refused rather than guessed.
    vae_sd = {k[len("first_stage_model."):]: v.numpy() for k, v in state.items() if k.startswith("first_stage_model.")}
    with pytest.raises(WeightsError, match="pass --config"):
        sd_vae.infer_config(vae_sd)
    widened = {k: np.zeros(tuple(32 if d in (8, 16) else d for d in v.shape), v.dtype) for k, v in vae_sd.items()}
    inferred = sd_vae.infer_config(widened)
    assert inferred.block_out_channels == (32, 32, 32) and inferred.layers_per_block == 1
    assert inferred.latent_channels == 4 and inferred.norm_num_groups == 32


def test_sd_convert_ldm_vae_with_training_loss_keys(refs, capsys):
    """An original LDM autoencoder checkpoint (kl-f8 `model.ckpt`) still holds its training loss: LPIPS,
    discriminator and `logvar` under `loss.*`. They are skipped and reported; the model converts."""
    tmp, _, vae = refs
    to_ldm = renamer(vae_table(3, 1), to_ldm=True)
    state = {}
    for k, v in torch_state(vae).items():
        v = torch.from_numpy(v)
        if ".attentions.0.to_" in k and k.endswith("weight"):
            v = v[:, :, None, None]
        state[to_ldm(k)] = v
    loss = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.randn(64, 3, 4, 4),
            "loss.discriminator.main.0.bias": torch.randn(64), "loss.discriminator.main.3.running_var": torch.ones(128),
            "loss.perceptual_loss.net.slice1.0.weight": torch.randn(64, 3, 3, 3),
            "loss.perceptual_loss.lin0.model.1.weight": torch.randn(1, 64, 1, 1)}
    torch.save({"state_dict": {**state, **loss}, "global_step": 3}, tmp / "kl-f8.ckpt")
    vae_cfg = str(tmp / "pipe" / "vae" / "config.json")
    assert cli.main(["sd-vae", str(tmp / "kl-f8.ckpt"), str(tmp / "v_loss"), "--config", vae_cfg]) == 0
    out = capsys.readouterr().out
    assert f"ignoring {len(loss)} training-loss tensors" in out
    assert "loss.logvar" in out and "loss.discriminator.main.0.bias" in out
    assert cli.main(["sd-vae", str(tmp / "pipe"), str(tmp / "v_ref")]) == 0
    _same(_params(tmp / "v_loss", "sd-vae")[1], _params(tmp / "v_ref", "sd-vae")[1])
    # Anything else that is not the model's is still refused.
    torch.save({"state_dict": {**state, "lossy.extra": torch.zeros(2)}}, tmp / "bad.ckpt")
    assert cli.main(["sd-vae", str(tmp / "bad.ckpt"), str(tmp / "v_bad"), "--config", vae_cfg]) == 2
    assert "unexpected: lossy.extra" in capsys.readouterr().err


def test_sd_convert_ldm_names_known_pairs():
    """Hand-written facts of SD 1.5's LDM layout (from the original checkpoints' key lists)."""
    unet = sd_unet.ldm_rename(UNetConfig.preset("sd15"))
    for ldm, ours in {
        "input_blocks.0.0.weight": "conv_in.weight",
        "time_embed.2.weight": "time_embedding.linear_2.weight",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight":
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        "input_blocks.3.0.op.weight": "down_blocks.0.downsamplers.0.conv.weight",
        "input_blocks.4.0.skip_connection.weight": "down_blocks.1.resnets.0.conv_shortcut.weight",
        "input_blocks.11.0.emb_layers.1.bias": "down_blocks.3.resnets.1.time_emb_proj.bias",
        "middle_block.1.proj_out.weight": "mid_block.attentions.0.proj_out.weight",
        "middle_block.2.in_layers.2.weight": "mid_block.resnets.1.conv1.weight",
        "output_blocks.2.1.conv.weight": "up_blocks.0.upsamplers.0.conv.weight",
        "output_blocks.5.2.conv.bias": "up_blocks.1.upsamplers.0.conv.bias",
        "output_blocks.8.1.norm.weight": "up_blocks.2.attentions.2.norm.weight",
        "output_blocks.11.0.out_layers.3.weight": "up_blocks.3.resnets.2.conv2.weight",
        "out.0.bias": "conv_norm_out.bias",
    }.items():
        assert unet(ldm) == ours
    vae = renamer(vae_table(4, 2))
    for ldm, ours in {
        "encoder.down.0.downsample.conv.weight": "encoder.down_blocks.0.downsamplers.0.conv.weight",
        "encoder.down.1.block.0.nin_shortcut.weight": "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "decoder.up.3.block.2.conv1.weight": "decoder.up_blocks.0.resnets.2.conv1.weight",
        "decoder.up.1.upsample.conv.bias": "decoder.up_blocks.2.upsamplers.0.conv.bias",
        "encoder.mid.attn_1.proj_out.weight": "encoder.mid_block.attentions.0.to_out.0.weight",
        "decoder.mid.block_2.norm1.bias": "decoder.mid_block.resnets.1.norm1.bias",
        "decoder.norm_out.weight": "decoder.conv_norm_out.weight",
    }.items():
        assert vae(ldm) == ours
    assert old_diffusers_vae_rename("decoder.mid_block.attentions.0.proj_attn.weight") == \
        "decoder.mid_block.attentions.0.to_out.0.weight"


def test_sd_convert_strict_errors(refs, tmp_path, capsys):
    from safetensors.numpy import save_file

    base, unet, _ = refs
    sd = torch_state(unet)
    del sd["conv_in.bias"]
    sd["up_blocks.0.resnets.0.bogus.weight"] = np.zeros(3, np.float32)
    sd["conv_out.weight"] = np.zeros((4, 32, 1, 3), np.float32)
    (tmp_path / "bad").mkdir()
    save_file(sd, str(tmp_path / "bad" / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "bad" / "config.json").write_text((base / "pipe" / "unet" / "config.json").read_text())
    with pytest.raises(WeightsError) as e:
        sd_unet.convert(str(tmp_path / "bad"), str(tmp_path / "out"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing: conv_in.bias" in msg
    assert "1 unexpected: up_blocks.0.resnets.0.bogus.weight" in msg
    assert "1 mis-shaped: conv_out.weight" in msg
    assert not (tmp_path / "out").exists()
    assert cli.main(["sd-unet", str(tmp_path / "bad"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convert_weights: error:") and "\n" not in err
    assert cli.main(["sd-unet", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_sd_convert_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="class_embed_type"):
        UNetConfig.from_diffusers({"class_embed_type": "timestep"})
    with pytest.raises(ConfigError, match="unknown UNet preset"):
        UNetConfig.preset("sdxl")
    with pytest.raises(ConfigError, match="up_block_types"):
        VAEConfig.from_diffusers({"block_out_channels": [8], "up_block_types": ["Other"]})
    cfg = UNetConfig.from_diffusers(json.loads(json.dumps({"attention_head_dim": [5, 10, 20, 20],
                                                            "use_linear_projection": True})))
    assert cfg.num_attention_heads == (5, 10, 20, 20) and cfg.per_block("transformer_layers_per_block") == (1,) * 4


def test_sd_presets_match_the_released_models():
    """Parameter counts and tensor counts of SD 1.5 / 2.1 UNets and the SD VAE (public model cards)."""
    from flax import nnx

    from convert_weights.core import abstract_shapes
    from m3cvc_jax.nn.unet import UNet2DConditionModel
    from m3cvc_jax.nn.vae import AutoencoderKL

    def count(build):
        shapes = abstract_shapes(build)
        return sum(int(np.prod(s)) for s in shapes.values()), len(shapes)

    assert count(lambda: UNet2DConditionModel(UNetConfig.preset("sd15"), rngs=nnx.Rngs(0))) == (859_520_964, 686)
    assert count(lambda: UNet2DConditionModel(UNetConfig.preset("sd21"), rngs=nnx.Rngs(0))) == (865_910_724, 686)
    assert count(lambda: AutoencoderKL(VAEConfig.preset("sd"), rngs=nnx.Rngs(0))) == (83_653_863, 248)
