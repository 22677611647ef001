"""PSNR, SSIM and MS-SSIM against independent numpy / scikit-image computations; CLIP-sim on a known embedder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

from m3cvc_jax.eval import metrics

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# Jitted once per shape and shared by the tests (eager MS-SSIM dispatches hundreds of small ops).
ms_ssim = jax.jit(metrics.ms_ssim)
ssim = jax.jit(metrics.ssim)
psnr = jax.jit(metrics.psnr)
MS_SHAPE = (2, 171, 197, 3)  # odd sides: exercises the padded 2x2 pooling


def _pair(shape, seed=0, noise=20.0):
    rng = np.random.default_rng(seed)
    # Smooth content plus noise, so SSIM sits well inside (0, 1) rather than near 0.
    base = rng.uniform(0, 255, size=shape[:-3] + (shape[-3] // 8 + 1, shape[-2] // 8 + 1, 3))
    base = np.repeat(np.repeat(base, 8, axis=-3), 8, axis=-2)[..., : shape[-3], : shape[-2], :]
    a = base.astype(np.uint8)
    b = np.clip(base + rng.normal(0, noise, size=shape), 0, 255).astype(np.uint8)
    return a, b


def _np_ssim_maps(x, y):
    """x, y: (H, W) float64 in [0, 255]; returns the SSIM and CS maps with valid filtering."""
    win = metrics.gaussian_window().astype(np.float64)
    r = len(win) // 2

    def f(z):
        z = correlate1d(correlate1d(z, win, axis=0), win, axis=1)
        return z[r:-r, r:-r]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs, cs


def _np_ms_ssim(x, y):
    """Wang et al. MS-SSIM of one channel, written out independently of the JAX code."""
    vals = []
    for level in range(5):
        s, cs = _np_ssim_maps(x, y)
        if level < 4:
            vals.append(max(cs.mean(), 0.0))
            pad = [(x.shape[0] % 2,) * 2, (x.shape[1] % 2,) * 2]
            # torch's avg_pool2d(2, 2, padding=1) on an odd side: pad both ends, drop the last odd row.
            x, y = np.pad(x, pad), np.pad(y, pad)
            h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x, y = x[:h, :w], y[:h, :w]
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
    vals.append(max(s.mean(), 0.0))
    return float(np.prod(np.asarray(vals) ** np.asarray(WEIGHTS)))


def test_psnr_matches_numpy_per_frame():
    a, b = _pair((3, 32, 48, 3))
    got = np.asarray(psnr(jnp.asarray(a), jnp.asarray(b)))
    mse = ((a.astype(np.float64) - b) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got, 10 * np.log10(255**2 / mse), rtol=1e-5)
    assert got.shape == (3,)


def test_psnr_signed_input_equals_uint8_input():
    a, b = _pair((2, 16, 16, 3))
    s = lambda x: jnp.asarray(x, jnp.float32) / 127.5 - 1
    np.testing.assert_allclose(metrics.psnr(s(a), s(b)), metrics.psnr(jnp.asarray(a), jnp.asarray(b)), rtol=1e-5)
    assert float(metrics.psnr(jnp.asarray(a), jnp.asarray(a))[0]) == 100.0


def test_ssim_matches_skimage():
    a, b = _pair((2, 40, 56, 3), seed=1)
    got = np.asarray(ssim(jnp.asarray(a), jnp.asarray(b)))
    for i in range(2):
        ref = structural_similarity(
            a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
        )
        np.testing.assert_allclose(got[i], ref, atol=1e-5)
    assert 0.05 < got.min() < 0.99


def test_ms_ssim_matches_numpy_reference_with_odd_sizes():
    a, b = _pair(MS_SHAPE, seed=2)
    got = np.asarray(ms_ssim(jnp.asarray(a), jnp.asarray(b)))
    for i in range(2):
        ref = np.mean([_np_ms_ssim(a[i, ..., c].astype(np.float64), b[i, ..., c].astype(np.float64)) for c in range(3)])
        np.testing.assert_allclose(got[i], ref, atol=1e-5)
    assert 0.1 < got.min() < 0.99
    np.testing.assert_allclose(ms_ssim(jnp.asarray(a), jnp.asarray(a)), 1.0, atol=1e-6)


def test_ms_ssim_matches_pytorch_msssim():
    torch = pytest.importorskip("torch")
    pm = pytest.importorskip("pytorch_msssim", reason="pytorch_msssim (optional cross-check) is not installed")
    a, b = _pair(MS_SHAPE, seed=3)
    t = lambda x: torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)
    ref = pm.ms_ssim(t(a), t(b), data_range=255, size_average=False).numpy()
    np.testing.assert_allclose(ms_ssim(jnp.asarray(a), jnp.asarray(b)), ref, atol=1e-5)


def test_ms_ssim_rejects_small_frames():
    a, _ = _pair((1, 64, 64, 3))
    with pytest.raises(ValueError, match="160"):
        metrics.ms_ssim(jnp.asarray(a), jnp.asarray(a))


def test_metrics_keep_leading_axes():
    a, b = _pair((2, 3, 24, 24, 3))
    assert psnr(jnp.asarray(a), jnp.asarray(b)).shape == (2, 3)
    assert ssim(jnp.asarray(a), jnp.asarray(b)).shape == (2, 3)


def test_clip_similarity_is_per_frame_cosine():
    rng = np.random.default_rng(0)
    proj = jnp.asarray(rng.normal(size=(8 * 8 * 3, 5)), jnp.float32)
    embed = lambda x: x.reshape(x.shape[0], -1) @ proj
    a, b = _pair((4, 8, 8, 3), seed=4)
    got = np.asarray(metrics.clip_similarity(embed, jnp.asarray(a), jnp.asarray(b)))
    ea = np.asarray(embed(metrics.to_signed(jnp.asarray(a))))
    eb = np.asarray(embed(metrics.to_signed(jnp.asarray(b))))
    ref = (ea * eb).sum(-1) / np.linalg.norm(ea, axis=-1) / np.linalg.norm(eb, axis=-1)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(metrics.clip_similarity(embed, jnp.asarray(a), jnp.asarray(a)), 1.0, atol=1e-5)
