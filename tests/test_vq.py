"""VQ maths against a plain numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.codec import vq


def _np_nearest(z, cb):
    d = ((z[..., None, :].astype(np.float64) - cb.astype(np.float64)) ** 2).sum(-1)
    return d.argmin(-1)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 5, 7, 8)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)


def test_nearest_and_lookup_match_numpy(data):
    z, cb = data
    idx = np.asarray(jax.jit(vq.nearest)(z, cb))
    np.testing.assert_array_equal(idx, _np_nearest(z, cb))
    np.testing.assert_allclose(np.asarray(vq.lookup(idx, cb)), cb[idx])
    d = np.asarray(vq.squared_distances(z, cb))
    np.testing.assert_allclose(d, ((z[..., None, :] - cb) ** 2).sum(-1), rtol=1e-5, atol=1e-4)


def test_vmap_equals_batched(data):
    z, cb = data
    np.testing.assert_array_equal(jax.vmap(vq.nearest, in_axes=(0, None))(z, cb), vq.nearest(z, cb))
    # A stack of codebooks (one per item) is just a vmap too.
    cbs = np.stack([cb, cb[::-1]])
    idx = jax.vmap(vq.nearest)(z[:2], cbs)
    np.testing.assert_array_equal(idx[1], _np_nearest(z[1], cb[::-1]))


def test_straight_through_and_losses(data):
    z, cb = data
    out = vq.quantize(jnp.asarray(z), jnp.asarray(cb))
    ref_q = cb[_np_nearest(z, cb)]
    np.testing.assert_allclose(np.asarray(out.z_q), ref_q, atol=1e-6)
    ref_loss = ((z - ref_q) ** 2).sum(-1).mean()
    np.testing.assert_allclose(float(vq.commit_loss(z, out.codewords)), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(vq.codebook_loss(z, out.codewords)), ref_loss, rtol=1e-5)

    # Straight-through: d/dz sum(z_q * w) = w; the commit loss does not reach the codebook and vice versa.
    w = np.random.default_rng(1).normal(size=z.shape).astype(np.float32)
    g = jax.grad(lambda zz: jnp.sum(vq.quantize(zz, cb).z_q * w))(jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(g), w, atol=1e-6)
    g_cb = jax.grad(lambda c: vq.commit_loss(z, vq.quantize(z, c).codewords))(jnp.asarray(cb))
    assert float(jnp.abs(g_cb).max()) == 0.0
    g_z = jax.grad(lambda zz: vq.codebook_loss(zz, vq.quantize(zz, cb).codewords))(jnp.asarray(z))
    assert float(jnp.abs(g_z).max()) == 0.0
    g_z = jax.grad(lambda zz: vq.commit_loss(zz, vq.quantize(zz, cb).codewords))(jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(g_z), 2 * (z - ref_q) / np.prod(z.shape[:-1]), rtol=1e-4, atol=1e-7)


def test_code_stats_match_numpy():
    idx = np.array([0, 0, 1, 3, 3, 3, 3, 5])
    s = vq.code_stats(jnp.asarray(idx), 8)
    p = np.bincount(idx, minlength=8) / idx.size
    ent = -(p[p > 0] * np.log(p[p > 0])).sum()
    np.testing.assert_allclose(float(s.perplexity), np.exp(ent), rtol=1e-6)
    np.testing.assert_allclose(float(s.entropy_bits), ent / np.log(2), rtol=1e-6)
    assert float(s.usage) == 4 / 8 and int(s.dead) == 4
    collapsed = vq.code_stats(jnp.zeros(10, jnp.int32), 8)
    assert float(collapsed.perplexity) == pytest.approx(1.0)


def test_ema_update_matches_numpy(data):
    z, cb = data
    state = vq.ema_init(cb)
    idx = vq.nearest(z, cb)
    new_state, new_cb = jax.jit(lambda s, z, i: vq.ema_update(s, z, i, decay=0.9, eps=1e-5))(state, z, idx)

    flat, fi = z.reshape(-1, 8).astype(np.float64), np.asarray(idx).reshape(-1)
    counts = np.bincount(fi, minlength=16)
    sums = np.zeros((16, 8))
    np.add.at(sums, fi, flat)
    size = 0.9 * 1.0 + 0.1 * counts
    esum = 0.9 * cb + 0.1 * sums
    n = size.sum()
    ref = esum / ((size + 1e-5) / (n + 16e-5) * n)[:, None]
    np.testing.assert_allclose(np.asarray(new_state.cluster_size), size, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new_cb), ref, rtol=1e-4, atol=1e-5)


def test_ema_converges_to_cluster_means():
    # Two well separated clusters and two codes: EMA k-means must land on the means.
    rng = np.random.default_rng(2)
    z = np.concatenate([rng.normal(-3, 0.1, (200, 2)), rng.normal(3, 0.1, (200, 2))]).astype(np.float32)
    cb = np.array([[-1.0, -1.0], [1.0, 1.0]], np.float32)
    state = vq.ema_init(cb)
    for _ in range(60):
        state, cb = vq.ema_update(state, z, vq.nearest(z, cb), decay=0.8)
    np.testing.assert_allclose(np.asarray(cb), [z[:200].mean(0), z[200:].mean(0)], atol=0.05)


def test_dead_code_restart():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(50, 4)).astype(np.float32)
    cb = np.full((6, 4), 100.0, np.float32)
    cb[0] = 0.0
    usage = np.array([50.0, 0, 0, 0, 0, 0])
    new_cb, dead = vq.restart_dead_codes(jax.random.key(0), cb, usage, z, threshold=1.0)
    new_cb = np.asarray(new_cb)
    np.testing.assert_array_equal(np.asarray(dead), [False] + [True] * 5)
    np.testing.assert_array_equal(new_cb[0], cb[0])
    for row in new_cb[1:]:  # every restarted code is one of the batch's vectors
        assert np.isclose(z, row).all(-1).any()
    again, _ = vq.restart_dead_codes(jax.random.key(0), cb, usage, z, threshold=1.0)
    np.testing.assert_array_equal(np.asarray(again), new_cb)  # deterministic for a key
    st = vq.ema_reset(vq.ema_init(cb), jnp.asarray(new_cb), dead)
    np.testing.assert_allclose(np.asarray(st.embed_sum)[1:], new_cb[1:])


@pytest.mark.parametrize("n", [37, 512, 1500])
def test_nearest_ties_go_to_the_lowest_index(n):
    """Exact ties (small integers: every distance is exact in float32): duplicated codewords and vectors
    halfway between two codewords must give numpy's argmin (the first minimum), within a block, at a
    block edge, and across blocks with padding."""
    rng = np.random.default_rng(n)
    cb = rng.integers(-3, 4, size=(64, 8)).astype(np.float32)
    cb[40:] = cb[:24]  # duplicates at higher indices
    cb[7] = cb[3]
    z = rng.integers(-3, 4, size=(n, 8)).astype(np.float32)
    z[: n // 2] = cb[rng.integers(0, 64, n // 2)]  # exactly on codewords, some duplicated
    mid = (cb[5] + cb[6]) / 2  # equidistant from words 5 and 6 (and maybe others)
    z[-1] = mid
    want = _np_nearest(z, cb)
    got = np.asarray(jax.jit(vq.nearest)(jnp.asarray(z), jnp.asarray(cb)))
    np.testing.assert_array_equal(got, want)
    d = ((z[:, None] - cb[None]) ** 2).sum(-1)
    assert (np.sum(d == d.min(-1, keepdims=True), axis=-1) > 1).sum() > n // 4  # the ties are there


def test_nearest_blocked_equals_one_argmin_over_the_batch():
    """The blocked search returns what one argmin over the whole (N, K) table of the same distances does."""
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(3, 700, 32)).astype(np.float32))
    cb = jnp.asarray(rng.normal(size=(256, 32)).astype(np.float32))
    whole = jnp.argmin(jnp.sum(cb * cb, -1) - 2.0 * jnp.einsum("...d,kd->...k", z, cb), axis=-1)
    np.testing.assert_array_equal(np.asarray(jax.jit(vq.nearest)(z, cb)), np.asarray(whole))
