"""SEINE video UNet and sampling against golden outputs of the public reference code (Vchitect/SEINE).

The fixtures (tests/fixtures/seine) were produced by `make_golden.py` from SEINE's own code on a tiny
random config; the weights are rebuilt here from the committed key list and seed, written as a
`{'ema': state_dict}` `.pt` like the released `seine.pt`, and converted with `python -m convert_weights`.
"""

from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.temporal_attention import relative_position_buckets
from m3cvc_jax.nn.video_unet import VideoUNetConfig
from tests.randomize import assert_no_init_constants

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "seine")


def _golden_module():
    spec = importlib.util.spec_from_file_location("seine_make_golden", os.path.join(FIXTURES, "make_golden.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MG = _golden_module()
GOLD = np.load(os.path.join(FIXTURES, "golden.npz"))


def cl(a: np.ndarray) -> np.ndarray:
    """SEINE's (B, C, T, H, W) -> our (B, T, H, W, C)."""
    return np.moveaxis(np.asarray(a), 1, -1)


def reference_state_dict() -> dict[str, np.ndarray]:
    keys, meta = MG.load_keys()
    return MG.random_state_dict(keys, meta["seed"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny reference weights as a seine.pt, converted through the command line."""
    import torch

    from convert_weights.__main__ import main

    tmp = tmp_path_factory.mktemp("seine")
    src, dst = str(tmp / "seine.pt"), str(tmp / "converted")
    torch.save({"ema": {k: torch.from_numpy(v) for k, v in reference_state_dict().items()}, "opt": {}}, src)
    assert main(["seine", src, dst, "--preset", "tiny"]) == 0
    return dst


@pytest.fixture(scope="module")
def model(converted):
    from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
    from m3cvc_jax.weights import load_module

    return load_module(converted, family="seine", build=lambda cfg, rngs: VideoUNet(VideoUNetConfig(**cfg), rngs=rngs))


def test_seine_fixture_config_is_the_tiny_preset():
    _, meta = MG.load_keys()
    cfg = meta["config"]
    tiny = VideoUNetConfig.tiny()
    assert tuple(cfg["block_out_channels"]) == tiny.block_out_channels
    assert tuple(cfg["attention_head_dim"]) == tiny.num_heads
    assert tuple(cfg["down_block_types"]) == tiny.down_block_types
    assert tuple(cfg["up_block_types"]) == tiny.up_block_types
    assert (cfg["layers_per_block"], cfg["cross_attention_dim"], cfg["norm_num_groups"], cfg["in_channels"]) == (
        tiny.layers_per_block, tiny.cross_attention_dim, tiny.norm_num_groups, tiny.in_channels)


def test_seine_fixture_weights_have_no_init_constants():
    """The golden outputs were made by SEINE's own code (its venv is not here to rerun it) with these
    weights: every tensor random, zero-initialised ones included, so the golden outputs see each of them.
    The rotary `freqs` are a definition the converter checks, not a weight."""
    keys, _ = MG.load_keys()
    checked = assert_no_init_constants(reference_state_dict(), ignore=("rotary_emb.freqs",))
    assert checked == sum(not k.endswith("rotary_emb.freqs") and np.prod(s) > 1 for k, s in keys)


@pytest.fixture(scope="module")
def forward(model):
    """The converted UNet's forward, compiled once for (B=2, T=5, 5x6) inputs."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, x, t, c: nnx.merge(graphdef, state)(x, t, c))
    return lambda x, t, c: run(state, jnp.asarray(x), jnp.asarray(t, jnp.int32), jnp.asarray(c))


@pytest.mark.parity
def test_seine_unet_parity_forward(forward):
    out = forward(cl(GOLD["forward_sample"]), GOLD["forward_timesteps"], GOLD["forward_text"])
    ref = cl(GOLD["forward_out"])
    assert out.shape == ref.shape
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=0)


@pytest.mark.parity
def test_seine_relative_position_buckets():
    np.testing.assert_array_equal(relative_position_buckets(40, 32, 32), GOLD["rel_buckets_40"])


def test_seine_converter_checks_rotary_and_keys():
    from convert_weights.seine import convert_state_dict

    cfg = VideoUNetConfig.tiny()
    sd = reference_state_dict()
    freq_key = next(k for k in sd if k.endswith("rotary_emb.freqs"))
    bad = dict(sd)
    bad[freq_key] = bad[freq_key] * 1.01
    with pytest.raises(WeightsError, match="rotary"):
        convert_state_dict(bad, cfg)
    missing = {k: v for k, v in sd.items() if "attn_temp.to_q" not in k}
    with pytest.raises(WeightsError, match="missing"):
        convert_state_dict(missing, cfg)
    with pytest.raises(WeightsError, match="unexpected"):
        convert_state_dict({**sd, "up_blocks.9.extra.weight": np.zeros(3, np.float32)}, cfg)


def test_seine_converter_rejects_file_without_ema(tmp_path):
    import torch

    from convert_weights.seine import convert

    src = str(tmp_path / "model.pt")
    torch.save({"model": {"w": torch.zeros(1)}}, src)
    with pytest.raises(WeightsError, match="ema"):
        convert(src, str(tmp_path / "out"), preset="tiny")


@pytest.mark.parity
@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_seine_sampling_parity(forward, method):
    """4 guided steps (SEINE's p_sample_loop / ddim_sample_loop, CFG 8, mask + masked latent, 'first1'
    for DDPM and 'onelast1' for DDIM) replaying the reference's noise. The steps are taken here one by
    one with the same compiled UNet as the forward test (one compile for the whole file); the scanned
    sampler itself runs in tests/test_video_decoder.py."""
    from m3cvc_jax.diffusion import seine_masks
    from m3cvc_jax.diffusion.guidance import combine
    from m3cvc_jax.decoders.video import seine_scheduler

    scheduler = seine_scheduler(method, 4)
    np.testing.assert_array_equal(np.asarray(scheduler.timesteps), GOLD[f"{method}_timestep_map"][::-1])
    mask, masked = cl(GOLD[f"{method}_mask"]), cl(GOLD[f"{method}_x_start"])
    noises = np.moveaxis(GOLD[f"{method}_noise"], 2, -1)
    x = jnp.asarray(cl(GOLD[f"{method}_z"]))
    for i in range(scheduler.num_steps):
        # SEINE's forward_with_cfg: one batch [cond; uncond] with the same x, mask and masked latent.
        both = seine_masks.unet_input(jnp.concatenate([x, x]), jnp.concatenate([mask, mask]),
                                      jnp.concatenate([masked, masked]))
        t = jnp.full((2,), scheduler.timesteps[i], jnp.int32)
        out = forward(both, t, GOLD["cfg_text"])
        eps = combine(out[:1], out[1:], 8.0)
        x, _ = scheduler.step(i, x, eps, jnp.asarray(noises[i]))
    ref = cl(GOLD[f"{method}_out"])
    # A random UNet under CFG 8 drives x_0 to ~1e3 (the first steps divide by sqrt(alpha_bar) ~ 0.006),
    # so the float32 tolerance is relative to the output's scale.
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(np.asarray(x), ref, atol=1e-5 * scale, rtol=0)


def test_seine_released_checkpoint_layout_converts():
    """Every key and shape of the released model (as SEINE's code builds it for seine.pt, recorded in
    keys_seine.json) maps strictly onto `VideoUNetConfig.seine()`; zero-stride arrays, no 3.6 GB."""
    import json

    from convert_weights.seine import convert_state_dict

    with open(os.path.join(FIXTURES, "keys_seine.json")) as f:
        keys = json.load(f)["keys"]
    zero = np.zeros((), np.float32)
    sd = {k: MG.rotary_freqs(2 * s[0]) if k.endswith("rotary_emb.freqs") else np.broadcast_to(zero, tuple(s))
          for k, s in keys}
    params = convert_state_dict(sd, VideoUNetConfig.seine(), source="keys_seine.json")
    assert len(params) == len(keys) - sum(k.endswith("rotary_emb.freqs") for k, _ in keys)
    assert params["conv_in.kernel"].shape == (3, 3, 9, 320)
    heads = params["down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.time_rel_pos_bias"
                   ".relative_attention_bias.embedding"].shape
    assert heads == (32, 8)
