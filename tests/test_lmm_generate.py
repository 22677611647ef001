"""Qwen2-VL generation: KV cache vs full recomputation, padding, buckets, stop tokens, sampling filters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.lmm.generate import Generator, SamplingConfig, select_tokens
from m3cvc_jax.lmm.model_io import random_model
from m3cvc_jax.nn.qwen2_vl import Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig

CFG = Qwen2VLConfig(
    text=Qwen2VLTextConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, mrope_section=(1, 1, 2)),
    vision=Qwen2VLVisionConfig(depth=1, embed_dim=16, hidden_size=32, num_heads=2),
    image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253,
)


@pytest.fixture(scope="module")
def model():
    m = random_model(CFG, seed=3)
    # Larger logits than the default init so greedy choices are not near-ties.
    m.model.language_model.embed_tokens.embedding[...] *= 30.0
    return m


@pytest.fixture(scope="module")
def gen(model):
    return Generator(model, length_bucket=16)


# One sampling config and prompts within one bucket keep the jitted phases to a few compilations.
GREEDY = SamplingConfig(max_new_tokens=8)


def _naive_greedy(model, ids, n, pixel_values=None, image_grid_thw=None):
    """Greedy decoding by full forward passes without a cache (one jitted shape: right-padded buffer)."""
    from flax import nnx

    from m3cvc_jax.nn.qwen2_vl import get_rope_index

    b, l = ids.shape
    buf = np.zeros((b, l + n), np.int32)
    buf[:, :l] = ids
    # Padding after the prompt is text: its positions continue the sequence, whatever ids fill it later.
    positions, _ = get_rope_index(buf, model.cfg, image_grid_thw=image_grid_thw)

    @nnx.jit
    def forward(m, x, pixels):
        return m(x, jnp.asarray(positions), pixel_values=pixels, image_grid_thw=image_grid_thw)[0]

    for i in range(n):
        # Causal attention keeps the not-yet-generated slots out of the logits read at l + i - 1.
        logits = forward(model, jnp.asarray(buf), pixel_values)
        buf[:, l + i] = np.asarray(jnp.argmax(logits[:, l + i - 1], -1))
    return buf[:, l:]


def test_generate_cache_matches_recomputation(model, gen):
    ids = np.random.default_rng(0).integers(0, 240, size=(1, 11))
    out = gen.generate(ids, sampling=GREEDY)
    np.testing.assert_array_equal(out.tokens, _naive_greedy(model, ids, 8))
    assert out.lengths.tolist() == [8] and out.prompt_length == 11


def test_generate_bucket_size_does_not_matter(model, gen):
    ids = np.random.default_rng(1).integers(0, 240, size=(1, 14))
    a = gen.generate(ids, sampling=GREEDY).tokens
    b = Generator(model, length_bucket=5).generate(ids, sampling=GREEDY).tokens
    np.testing.assert_array_equal(a, b)


def test_generate_left_padded_batch_matches_single_rows(gen):
    rng = np.random.default_rng(2)
    long, short = rng.integers(0, 240, size=9), rng.integers(0, 240, size=5)
    ids = np.zeros((2, 9), np.int64)
    ids[0], ids[1, 4:] = long, short
    mask = np.ones((2, 9), bool)
    mask[1, :4] = False
    both = gen.generate(ids, attention_mask=mask, sampling=GREEDY).tokens
    np.testing.assert_array_equal(both[0], gen.generate(long[None], sampling=GREEDY).tokens[0])
    np.testing.assert_array_equal(both[1], gen.generate(short[None], sampling=GREEDY).tokens[0])


def test_generate_stops_at_stop_token(gen):
    ids = np.random.default_rng(3).integers(0, 240, size=(1, 7))
    free = gen.generate(ids, sampling=GREEDY).tokens[0]
    stop = int(free[4])
    first = int(np.nonzero(free == stop)[0][0])
    out = gen.generate(ids, sampling=SamplingConfig(max_new_tokens=8, stop_tokens=(stop,), pad_token=255))
    assert out.lengths[0] == first + 1
    np.testing.assert_array_equal(out.tokens[0, : first + 1], free[: first + 1])
    assert (out.tokens[0, first + 1:] == 255).all()  # the loop ended early: nothing after the stop but padding


def test_generate_with_image(model, gen):
    rng = np.random.default_rng(4)
    grid = ((1, 4, 4),)
    ids = np.asarray([[1, 2, 252] + [250] * 4 + [253, 3]])
    pixels = rng.standard_normal((16, 3 * 2 * 14 * 14)).astype(np.float32)
    out = gen.generate(ids, sampling=GREEDY, pixel_values=pixels, image_grid_thw=grid)
    # Reference: the same model's full forward pass (vision positions from get_rope_index) token by token.
    np.testing.assert_array_equal(out.tokens, _naive_greedy(model, ids, 8, pixel_values=pixels, image_grid_thw=grid))


def test_sampling_needs_key_and_is_reproducible(gen):
    ids = np.random.default_rng(5).integers(0, 240, size=(1, 6))
    s = SamplingConfig(max_new_tokens=8, temperature=1.5, top_p=0.95)
    with pytest.raises(ConfigError, match="key"):
        gen.generate(ids, sampling=s)
    a = gen.generate(ids, sampling=s, key=jax.random.key(1)).tokens
    b = gen.generate(ids, sampling=s, key=jax.random.key(1)).tokens
    c = gen.generate(ids, sampling=s, key=jax.random.key(2)).tokens
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_select_tokens_filters():
    logits = jnp.asarray([[0.0, 5.0, 4.0, 3.0, -1.0, 2.0]] * 1)
    keys = jax.random.split(jax.random.key(0), 400)
    assert select_tokens(logits, keys[0], SamplingConfig()).tolist() == [1]
    top2 = np.asarray(jax.vmap(lambda k: select_tokens(logits, k, SamplingConfig(temperature=1.0, top_k=2)))(keys))
    assert set(top2.ravel().tolist()) == {1, 2}
    # p(1) ~ 0.64, p(2) ~ 0.24: top_p 0.7 keeps exactly tokens 1 and 2.
    topp = np.asarray(jax.vmap(lambda k: select_tokens(logits, k, SamplingConfig(temperature=1.0, top_p=0.7)))(keys))
    assert set(topp.ravel().tolist()) == {1, 2}
    free = np.asarray(jax.vmap(lambda k: select_tokens(logits, k, SamplingConfig(temperature=1.0)))(keys))
    assert len(set(free.ravel().tolist())) >= 4


def test_sampling_config_validation():
    with pytest.raises(ConfigError):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(ConfigError):
        SamplingConfig(top_p=0.0)
