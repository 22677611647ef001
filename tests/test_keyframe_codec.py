"""Keyframe codec: configs, encode/decode shapes and determinism with tiny random weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from m3cvc_jax.codec import vq
from m3cvc_jax.decoders import keyframe as kd
from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.nn import keyframe_codec as kc
from m3cvc_jax.nn.keyframe_codec import KeyframeCodecConfig
from m3cvc_jax.random_weights import random_module


def test_presets_and_grid():
    paper = KeyframeCodecConfig.preset("paper")
    assert paper.grid == (20, 32) and paper.latent_size == (40, 64)  # 32x20 indices at 512x320
    assert paper.unet.extra_in_channels == paper.post_encoder.codebook_dim
    assert paper.unet.cross_attention_dim == paper.text.hidden_size == 768  # SD 1.5 + CLIP ViT-L/14
    p64 = KeyframeCodecConfig.preset("paper", pixels_per_index=8, width=512, height=512)
    assert p64.grid == (64, 64) and p64.post_encoder.num_stages == 0
    assert KeyframeCodecConfig.preset("paper", width=512, height=512).grid == (32, 32)
    with pytest.raises(ConfigError):
        KeyframeCodecConfig.preset("paper", pixels_per_index=12)
    with pytest.raises(ConfigError):
        dataclasses.replace(paper, unet=dataclasses.replace(paper.unet, extra_in_channels=4))
    with pytest.raises(ConfigError):
        KeyframeCodecConfig.preset("nope")


@pytest.fixture(scope="module")
def codec():
    cfg = KeyframeCodecConfig.preset("tiny", width=64, height=32)
    # numpy-filled (eager init compiles a program per parameter shape); the UNet's zero-initialised
    # conv_in extension is restored, as the trainers do.
    codec = random_module(lambda rngs: kc.KeyframeCodec(cfg, rngs=rngs), 0, "codec")
    k = codec.unet.conv_in.kernel
    k.set_value(k.get_value().at[:, :, cfg.unet.in_channels:].set(0))
    return codec


def test_encode(codec):
    frames = jax.random.uniform(jax.random.key(1), (2, 32, 64, 3), minval=-1, maxval=1)
    idx = jax.jit(kc.encode_keyframe)(codec, frames)
    assert idx.shape == (2, *codec.config.grid) and idx.dtype == jnp.int32
    ref = jax.jit(lambda c, f: vq.nearest(c.post_encoder(kc.frame_latent(c.vae, f)), c.codebook()))(codec, frames)
    np.testing.assert_array_equal(idx, ref)
    assert int(idx.min()) >= 0 and int(idx.max()) < codec.config.post_encoder.codebook_size


def test_decode_shapes_determinism_and_condition(codec):
    cfg = codec.config
    sched = kd.make_scheduler(2)
    run = jax.jit(lambda c, i, t, k, n: kd.decode_keyframe(c, i, t, k, null_text_emb=n, scheduler=sched,
                                                           guidance_scale=3.0))
    b, (gh, gw) = 2, cfg.grid
    idx = jax.random.randint(jax.random.key(2), (b, gh, gw), 0, cfg.post_encoder.codebook_size)
    text = jax.random.normal(jax.random.key(3), (b, 7, cfg.text.hidden_size))
    null = jnp.zeros_like(text)
    out = run(codec, idx, text, jax.random.key(4), null)
    assert out.shape == (b, cfg.height, cfg.width, 3) and bool(jnp.all(jnp.abs(out) <= 1))
    np.testing.assert_array_equal(out, run(codec, idx, text, jax.random.key(4), null))
    assert not np.allclose(out, run(codec, idx, text, jax.random.key(5), null))
    # conv_in's new channels start at zero: the indices cannot matter until fine-tuning moves them.
    other = (idx + 1) % cfg.post_encoder.codebook_size
    np.testing.assert_allclose(out, run(codec, other, text, jax.random.key(4), null), atol=1e-6)
    k = codec.unet.conv_in.kernel
    k.set_value(k.get_value().at[:, :, cfg.unet.in_channels:].set(0.5))
    assert not np.allclose(out, run(codec, other, text, jax.random.key(4), null), atol=1e-3)
    k.set_value(k.get_value().at[:, :, cfg.unet.in_channels:].set(0.0))


def test_condition_upsamples_codewords():
    cb = jnp.arange(12.0).reshape(6, 2)
    idx = jnp.array([[[0, 5], [2, 3]]])
    z = kc.condition(cb, idx, (4, 4))
    assert z.shape == (1, 4, 4, 2)
    np.testing.assert_array_equal(z[0, :2, :2], jnp.broadcast_to(cb[0], (2, 2, 2)))
    np.testing.assert_array_equal(z[0, 2:, 2:], jnp.broadcast_to(cb[3], (2, 2, 2)))


def test_extend_conv_in():
    base = jnp.ones((3, 3, 4, 5))
    wide = kc.extend_conv_in(base, 4, 8)
    assert wide.shape == (3, 3, 12, 5) and float(wide[:, :, 4:].sum()) == 0 and float(wide[:, :, :4].min()) == 1
    assert kc.extend_conv_in(wide, 4, 8) is wide
    with pytest.raises(WeightsError):
        kc.extend_conv_in(jnp.ones((3, 3, 6, 5)), 4, 8)
