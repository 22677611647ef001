"""`dtype=bfloat16` (`--set dtype=...`): every network the codec runs (the M3-CVC modes' and CMVC TT2V's
AnimateDiff) computes in bf16 with float32
parameters, float32 norms and softmax; and a bf16 decode stays close to the float32 one.

The dtype checks read the traced programs (`jax.make_jaxpr`, nothing compiled): every matmul and
convolution takes bf16 operands, every normalisation statistic (`rsqrt`), softmax (`exp`, `reduce_max`)
and sum runs in float32. RAFT's correlation volume and flow upsampling (`nn/raft_corr.py`) are float32
on purpose: they produce pixel coordinates.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jcore

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn import clip as clip_nn
from m3cvc_jax.nn.qwen2_vl import get_rope_index
from m3cvc_jax.pipelines import api
from m3cvc_jax.pipelines.codec import Codec, read_input
from m3cvc_jax.pipelines.models import Models
from m3cvc_jax.pipelines.settings import load_config
from tests.pipeline_fixtures import CLIP

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
MATMULS = ("dot_general", "conv_general_dilated")
FLOAT32_ONLY = ("rsqrt", "exp", "reduce_max", "reduce_sum")  # norm statistics, softmax, sums
FLOAT32_BY_DESIGN = ("raft_corr.py",)  # files whose matmuls are float32 whatever the dtype


def walk(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    yield from walk(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    yield from walk(sub)


def from_file(eqn, names) -> bool:
    tb = eqn.source_info.traceback
    return tb is not None and any(f.file_name.endswith(names) for f in tb.frames)


def dtypes(eqn) -> tuple:
    return tuple(jnp.dtype(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype"))


def networks(models: Models) -> dict:
    """name -> zero-argument forward of each network the codec runs, on tiny-preset shapes."""
    # Built here, not inside a trace: a module first built under `make_jaxpr` would keep its tracers.
    codec, cc, clip, raft, seine = models.codec, models.codec_config, models.clip, models.raft, models.seine
    t2v_unet, t2v_vae = models.t2v_unet, models.vae  # CMVC's TT2V decoder (AnimateDiff)
    h, w = cc.height, cc.width
    latent = jnp.zeros((1, h // 8, w // 8, cc.vae.latent_channels))
    text = jnp.zeros((1, 77, cc.text.hidden_size))
    unet_in = jnp.zeros((1, h // 8, w // 8, cc.unet.in_channels + cc.unet.extra_in_channels))
    seine_in = jnp.zeros((1, 3, h // 8, w // 8, models.seine_config.in_channels))
    chat = models.describer().chat.generator
    qwen = nnx.merge(chat.graphdef, chat.state)
    q = qwen.cfg
    grid = ((1, 4, 4),)
    ids = np.asarray([[q.vision_start_token_id] + [q.image_token_id] * 4 + [q.vision_end_token_id, 13, 14]])
    positions, _ = get_rope_index(ids, q, image_grid_thw=grid)
    pixels = jnp.zeros((16, 3 * q.vision.temporal_patch_size * q.vision.patch_size ** 2))
    frames = jnp.zeros((1, 128, 128, 3))
    t2v_in = jnp.zeros((1, 3, h // 8, w // 8, t2v_unet.config.in_channels))
    return {
        "sd_vae_encode": lambda: codec.vae.encode(jnp.zeros((1, h, w, 3))),
        "sd_vae_decode": lambda: codec.vae.decode(latent),
        "post_encoder": lambda: codec.post_encoder(latent),
        "sd_unet": lambda: codec.unet(unet_in, jnp.ones((1,)), text),
        "clip_image": lambda: clip.vision_model(jnp.zeros((2, 224, 224, 3))).pooler_output,
        "clip_text": lambda: api.encode_text({"clip": clip}, api.tokenize(["a"])),
        "raft": lambda: raft(frames, frames, num_flow_updates=2),
        "seine": lambda: seine(seine_in, jnp.ones((1,)), text),
        "animatediff": lambda: t2v_unet(t2v_in, jnp.ones((1,)), text),
        "t2v_sd_vae_decode": lambda: t2v_vae.decode(latent),
        "qwen2_vl": lambda: qwen(jnp.asarray(ids), jnp.asarray(positions), pixel_values=pixels,
                                 image_grid_thw=grid)[0],
    }


@pytest.fixture(scope="module")
def bf16_models():
    return Models(load_config("tiny", {"dtype": "bfloat16"}))


NAMES = ("sd_vae_encode", "sd_vae_decode", "post_encoder", "sd_unet", "clip_image", "clip_text", "raft", "seine",
         "qwen2_vl", "animatediff", "t2v_sd_vae_decode")


@pytest.mark.parametrize("name", NAMES)
def test_bf16_compute_fp32_norms_and_softmax(bf16_models, name):
    jaxpr = jax.make_jaxpr(networks(bf16_models)[name])().jaxpr
    seen = collections.Counter()
    for eqn in walk(jaxpr):
        prim = eqn.primitive.name
        if prim in MATMULS and not from_file(eqn, FLOAT32_BY_DESIGN):
            assert dtypes(eqn) == (BF16, BF16), f"{name}: {prim} on {dtypes(eqn)} at {eqn.source_info.traceback}"
            seen["bf16 matmul"] += 1
        elif prim in FLOAT32_ONLY:
            assert set(dtypes(eqn)) == {F32}, f"{name}: {prim} on {dtypes(eqn)} at {eqn.source_info.traceback}"
            seen[prim] += 1
    assert seen["bf16 matmul"] >= 3, seen
    if name not in ("post_encoder", "raft"):  # the post-encoder has no norm; RAFT's norms are instance/batch
        assert seen["rsqrt"] >= 1, seen


def test_every_module_of_the_codec_is_bf16_with_fp32_params(bf16_models):
    modules = {"codec": bf16_models.codec, "clip": bf16_models.clip, "raft": bf16_models.raft,
               "seine": bf16_models.seine, "animatediff": bf16_models.t2v_unet, "t2v_vae": bf16_models.vae,
               "qwen2_vl": nnx.merge(*(lambda g: (g.graphdef, g.state))(bf16_models.describer().chat.generator))}
    for top, module in modules.items():
        checked = 0
        for path, node in nnx.iter_graph(module):
            if isinstance(node, nnx.Module) and hasattr(node, "dtype") and node.dtype is not None:
                assert jnp.dtype(node.dtype) == BF16, f"{top}.{'.'.join(map(str, path))}: dtype {node.dtype}"
                checked += 1
            if isinstance(node, nnx.Param):
                assert jnp.dtype(node.get_value().dtype) == F32, f"{top}.{'.'.join(map(str, path))}"
        assert checked > 5, (top, checked)


def test_float32_default_has_no_bf16():
    models = Models(load_config("tiny"))
    for name in ("sd_unet", "seine"):
        for eqn in walk(jax.make_jaxpr(networks(models)[name])().jaxpr):
            assert BF16 not in dtypes(eqn), (name, eqn.primitive.name)


@pytest.mark.parametrize("value", ["float16", "bf16", "int8", ""])
def test_dtype_validated(value):
    with pytest.raises(ConfigError, match=r"^dtype=.*expected one of float32, bfloat16$"):
        load_config("tiny", [f"dtype={value}"])


def test_dtype_is_not_part_of_the_stream():
    # A decoder-side choice: the bf16 encoder writes the same header and settings as the fp32 one.
    from m3cvc_jax.pipelines.settings import decoder_overrides

    assert decoder_overrides(load_config("tiny", {"dtype": "bfloat16"})) == []
    assert Models(load_config("tiny", {"dtype": "bfloat16"})).fingerprint() == Models(load_config("tiny")).fingerprint()


@pytest.mark.parametrize("name", ["sd_unet", "seine"])
def test_bf16_network_output_close_to_fp32(bf16_models, name):
    # The per-network form of the decode check below (which is `slow`): one denoiser call each.
    want = np.asarray(jax.jit(networks(Models(load_config("tiny")))[name])(), np.float64)
    got = np.asarray(jax.jit(networks(bf16_models)[name])().astype(jnp.float32), np.float64)
    err = np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2))
    # Relative RMS error measured here: SD UNet 0.018, SEINE 0.027 (random weights amplify the roundings
    # through the depth); a network left in float32 gives exactly 0.
    assert 0 < err < 0.06, err


# Measured on this configuration: max |diff| 4/255, RMS 0.70/255 (51 dB between the two decodes) on frames of
# standard deviation 46/255; on 17 frames of the plain tiny preset: max 14, RMS 1.6 (44 dB).
MAX_RMS_FRACTION = 0.02  # of the output's [0, 255] range


@pytest.mark.slow
def test_bf16_decode_close_to_fp32():
    overrides = {"keyframes.method": "fixed", "keyframes.interval": 4, "dialogue.describer": "none",
                 "video.max_frames": 5, "video_model.window": 5}
    encoder = Codec.load("tiny", overrides=overrides)
    stream, _ = encoder.encode(read_input(CLIP, encoder.config))
    out = {dt: Codec.for_stream(stream, overrides={"dtype": dt}, store=encoder.store).decode(stream).video.frames
           for dt in ("float32", "bfloat16")}
    diff = out["float32"].astype(np.float64) - out["bfloat16"].astype(np.float64)
    rms = np.sqrt(np.mean(diff ** 2))
    assert 0 < rms <= MAX_RMS_FRACTION * 255, rms  # 0: the bf16 decode did not run in bf16
    assert np.std(out["float32"]) > 10 * rms
