"""Post-encoder shapes for the paper's grids, its blocks' algebra, and the stage rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn import post_encoder as pe
from m3cvc_jax.random_weights import random_module

# numpy-filled weights and jitted forwards: eager init and eager ops compile one program per shape.
_apply = jax.jit(lambda m, x: m(x))


@pytest.mark.parametrize("pixels_per_index,grid", [(16, (20, 32)), (8, (40, 64))])
def test_grid_at_512x320(pixels_per_index, grid):
    # 512x320 frame -> SD latent 40x64 -> index grid 20x32 (32x20 in WxH) or 40x64.
    cfg = pe.PostEncoderConfig.tiny(num_stages=pe.stages_for_grid(pixels_per_index))
    enc = random_module(lambda rngs: pe.PostEncoder(cfg, rngs=rngs), 0, "pe")
    h = _apply(enc, jnp.zeros((1, 40, 64, 4)))
    assert h.shape == (1, *grid, cfg.codebook_dim)
    dec = random_module(lambda rngs: pe.PostDecoder(cfg, rngs=rngs), 0, "pd")
    assert _apply(dec, h).shape == (1, 40, 64, 4)


def test_stage_rule_and_errors():
    assert pe.stages_for_grid(16) == 1 and pe.stages_for_grid(8) == 0 and pe.stages_for_grid(32) == 2
    for bad in (12, 4):
        with pytest.raises(ConfigError):
            pe.stages_for_grid(bad)
    enc = nnx.eval_shape(lambda: pe.PostEncoder(pe.PostEncoderConfig.tiny(num_stages=2), rngs=nnx.Rngs(0)))
    with pytest.raises(ConfigError):
        enc(jnp.zeros((1, 6, 8, 4)))


def test_attention_block_is_gated_residual():
    blk = random_module(lambda rngs: pe.AttentionBlock(6, rngs=rngs), 0, "att")
    x = jax.random.normal(jax.random.key(1), (2, 5, 4, 6))

    @jax.jit
    def manual(blk, x):
        a = x
        for u in blk.conv_a:
            a = jax.nn.relu(u.block(a))
        b = x
        for u in blk.conv_b:
            b = jax.nn.relu(u.block(b))
        return x + a * jax.nn.sigmoid(blk.conv_b_out(b))

    np.testing.assert_allclose(_apply(blk, x), manual(blk, x), atol=1e-6)
    # ResidualBottleneck: zeroing the last conv makes it the identity.
    rb = random_module(lambda rngs: pe.ResidualBottleneckBlock(6, rngs=rngs), 0, "rb")
    rb.conv3.kernel[...] = jnp.zeros_like(rb.conv3.kernel[...])
    rb.conv3.bias[...] = jnp.zeros_like(rb.conv3.bias[...])
    np.testing.assert_allclose(_apply(rb, x), x)


def test_bf16_compute_keeps_f32_params():
    cfg = pe.PostEncoderConfig.tiny()
    enc = random_module(lambda rngs: pe.PostEncoder(cfg, dtype=jnp.bfloat16, rngs=rngs), 0, "pe")
    out = _apply(enc, jnp.ones((1, 8, 8, 4)))
    assert out.dtype == jnp.bfloat16 and enc.conv_in.kernel[...].dtype == jnp.float32
    cb = pe.Codebook(cfg, rngs=nnx.Rngs(0))()
    assert float(jnp.abs(cb).max()) <= 1.0 / cfg.codebook_size
    assert cb.shape == (cfg.codebook_size, cfg.codebook_dim)
