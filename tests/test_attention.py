"""The shared attention and rotary functions against plain numpy."""

import numpy as np
import jax.numpy as jnp

from m3cvc_jax.nn.attention import BLOCKED_ATTENTION_MIN_LOGITS, blocked_attention, dot_product_attention
from m3cvc_jax.nn.rotary import apply_rotary, inverse_frequencies, rotary_angles


def reference(q, k, v, bias=None, mask=None, scale=None):
    n, kv = q.shape[2], k.shape[2]
    k, v = np.repeat(k, n // kv, axis=2), np.repeat(v, n // kv, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("blnd,bsnd->bnls", q, k) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, -1e30)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnls,bsnd->blnd", p, v)


def test_attention_gqa_bias_mask_causal():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 4, 8)).astype(np.float32)
    k = rng.normal(size=(2, 7, 2, 8)).astype(np.float32)
    v = rng.normal(size=(2, 7, 2, 8)).astype(np.float32)
    bias = rng.normal(size=(1, 4, 5, 7)).astype(np.float32)
    mask = rng.random((2, 1, 5, 7)) > 0.3
    mask[..., 0] = True
    got = dot_product_attention(*map(jnp.asarray, (q, k, v)), bias=jnp.asarray(bias), mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), reference(q, k, v, bias, mask), atol=1e-5)
    causal = np.tril(np.ones((5, 7), bool), k=2)
    got = dot_product_attention(*map(jnp.asarray, (q, k, v)), is_causal=True)
    np.testing.assert_allclose(np.asarray(got), reference(q, k, v, mask=causal), atol=1e-5)


def test_long_sequences_take_the_blocked_path_with_the_same_result():
    rng = np.random.default_rng(1)
    length = 520  # not a multiple of the block: padded queries must not leak
    assert length * length >= BLOCKED_ATTENTION_MIN_LOGITS
    q, k, v = (rng.normal(size=(1, length, 2, 8)).astype(np.float32) for _ in range(3))
    want = reference(q, k, v, scale=0.3)
    np.testing.assert_allclose(np.asarray(blocked_attention(*map(jnp.asarray, (q, k, v)), scale=0.3, block=128)),
                               want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dot_product_attention(*map(jnp.asarray, (q, k, v)), scale=0.3)),
                               want, atol=1e-5)


def test_rotary_pairings():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 10)).astype(np.float32)
    angles = np.asarray(rotary_angles(jnp.arange(3), inverse_frequencies(8)))  # rotates 8 of 10 dims
    c, s = np.cos(angles), np.sin(angles)
    half = x.copy()
    half[:, :4], half[:, 4:8] = x[:, :4] * c - x[:, 4:8] * s, x[:, 4:8] * c + x[:, :4] * s
    inter = x.copy()
    inter[:, 0:8:2], inter[:, 1:8:2] = x[:, 0:8:2] * c - x[:, 1:8:2] * s, x[:, 1:8:2] * c + x[:, 0:8:2] * s
    np.testing.assert_allclose(np.asarray(apply_rotary(jnp.asarray(x), jnp.asarray(angles), interleaved=False)), half, atol=1e-6)
    np.testing.assert_allclose(np.asarray(apply_rotary(jnp.asarray(x), jnp.asarray(angles), interleaved=True)), inter, atol=1e-6)
