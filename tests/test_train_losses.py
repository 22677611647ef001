"""The training objectives against numpy formulas on fixed inputs: the epsilon (and v) fine-tuning loss, SEINE's
masked-window loss, and the VQ objective with its commitment weight beta (values and stop-gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.diffusion.schedules import NoiseSchedule
from train.decoder_finetune import denoising_loss
from train.video_pretrain import masked_video_loss
from train.vq_pretrain import vq_objective

RNG = np.random.default_rng(0)


def _sd_alpha_bar():
    betas = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000, dtype=np.float64) ** 2  # "scaled_linear"
    return np.cumprod(1 - betas)


def _seine_alpha_bar():
    return np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_loss_matches_numpy(prediction_type):
    b, h, w, c = 3, 4, 5, 4
    x0 = RNG.normal(size=(b, h, w, c)).astype(np.float32)
    noise = RNG.normal(size=(b, h, w, c)).astype(np.float32)
    t = np.array([0, 417, 999])
    mix = RNG.normal(size=(c, c)).astype(np.float32)

    def predict(x_t, t):  # a stand-in network that depends on x_t and t
        return x_t @ mix + 1e-3 * t.reshape(-1, 1, 1, 1)

    ab = _sd_alpha_bar()[t].reshape(-1, 1, 1, 1)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    target = noise if prediction_type == "epsilon" else np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0
    want = np.mean((x_t @ mix + 1e-3 * t.reshape(-1, 1, 1, 1) - target) ** 2)
    levels = NoiseSchedule.stable_diffusion().level()
    got = jax.jit(lambda *a: denoising_loss(predict, *a, prediction_type=prediction_type))(
        jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t), levels)
    np.testing.assert_allclose(float(got), want, rtol=2e-5)


def test_masked_video_loss_matches_numpy():
    """[x_t, mask, masked latent] on channels, loss over every frame (given frames included)."""
    b, f, h, w, c = 2, 4, 3, 3, 4
    z = RNG.normal(size=(b, f, h, w, c)).astype(np.float32)
    noise = RNG.normal(size=(b, f, h, w, c)).astype(np.float32)
    frame_mask = np.array([[0, 1, 1, 1], [0, 1, 1, 0]], np.float32)  # first1, onelast1
    mask = np.broadcast_to(frame_mask[:, :, None, None, None], (b, f, h, w, 1)).astype(np.float32)
    masked = np.where(mask == 0, z, RNG.normal(size=z.shape)).astype(np.float32)
    t = np.array([5, 800])
    mix = RNG.normal(size=(2 * c + 1, c)).astype(np.float32) / 3

    ab = _seine_alpha_bar()[t].reshape(-1, 1, 1, 1, 1)
    x_t = np.sqrt(ab) * z + np.sqrt(1 - ab) * noise
    eps = np.concatenate([x_t, mask, masked], axis=-1) @ mix
    want = np.mean((eps - noise) ** 2)
    levels = NoiseSchedule.seine().level()
    got = jax.jit(lambda *a: masked_video_loss(lambda x_in, t: x_in @ mix, *a))(
        jnp.asarray(z), jnp.asarray(noise), jnp.asarray(t), levels, jnp.asarray(mask), jnp.asarray(masked))
    np.testing.assert_allclose(float(got), want, rtol=2e-5)


@pytest.mark.parametrize("codebook_term", [False, True])
def test_vq_objective_matches_numpy_with_beta(codebook_term):
    n, d, beta = 12, 6, 0.37
    h = RNG.normal(size=(2, 2, 3, d)).astype(np.float32)
    codewords = (h + 0.3 * RNG.normal(size=h.shape)).astype(np.float32)
    latent = RNG.normal(size=(2, 4, 6, 4)).astype(np.float32) * 2.0
    rec = (latent + RNG.normal(size=latent.shape)).astype(np.float32)

    diff = h.astype(np.float64) - codewords
    commit = np.mean(np.sum(diff ** 2, -1))
    rec_loss = np.mean((rec.astype(np.float64) - latent) ** 2) / (np.var(latent.astype(np.float64)) + 1e-12)
    want = rec_loss + beta * commit / d + (commit / d if codebook_term else 0.0)

    def loss(h, codewords):
        return vq_objective(h, codewords, jnp.asarray(rec), jnp.asarray(latent), beta, codebook_term=codebook_term)

    (got, parts), (g_h, g_c) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(jnp.asarray(h), jnp.asarray(codewords))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(float(parts["commit_loss"]), commit, rtol=1e-5)
    np.testing.assert_allclose(float(parts["rec_loss"]), rec_loss, rtol=1e-5)
    # The commitment term pulls only the encoder output (stop-gradient on z_q), scaled by beta; the
    # codebook moves only through its own term, unscaled.
    np.testing.assert_allclose(np.asarray(g_h), beta * 2 * diff / (n * d), rtol=1e-4, atol=1e-7)
    want_c = -2 * diff / (n * d) if codebook_term else np.zeros_like(diff)
    np.testing.assert_allclose(np.asarray(g_c), want_c, rtol=1e-4, atol=1e-7)
