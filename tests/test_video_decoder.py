"""SEINE reconstruction pipeline on tiny random networks: shapes, keyframes kept, chaining, retiming,
determinism for a key. (Numerical agreement with SEINE is tests/test_seine_parity.py.)"""

import jax
import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
from m3cvc_jax.random_weights import random_module
from m3cvc_jax.decoders.video import (
    VideoReconstructionConfig,
    VideoReconstructor,
    retime,
    seine_chain,
    seine_scheduler,
    subsample,
)
from m3cvc_jax.decoders.video_decoding import VideoDecoding

H, W = 16, 24  # latent 2x3: the tiny UNet's skip sizes are not multiples of 2 (reference's forced size)
DECODING = VideoDecoding(sampler="ddpm", steps=2)


@pytest.fixture(scope="module")
def rec():
    unet = random_module(lambda r: VideoUNet(VideoUNetConfig.tiny(), rngs=r), 0, "seine")
    vae = random_module(lambda r: AutoencoderKL(VAEConfig.preset("tiny"), rngs=r), 1, "sd-vae")
    cfg = VideoReconstructionConfig(height=H, width=W, out_fps=4.0, out_height=32, out_width=48)
    return VideoReconstructor(unet, vae, cfg)


@pytest.fixture(scope="module")
def inputs():
    k = jax.random.split(jax.random.key(0), 4)
    first = jax.random.uniform(k[0], (1, H, W, 3), minval=-1, maxval=1)
    last = jax.random.uniform(k[1], (1, H, W, 3), minval=-1, maxval=1)
    text = jax.random.normal(k[2], (1, 7, 32))
    null = jax.random.normal(k[3], (1, 7, 32))
    return first, last, text, null


def encoded(rec, first, last, mask_type, key):
    """The masked-video latents the window conditions on (same key split as `window`)."""
    from m3cvc_jax.diffusion import seine_masks

    video = seine_masks.window_video(first, last, mask_type, 16)
    masked = seine_masks.masked_video(video, seine_masks.frame_mask(mask_type, 16))
    return rec._encode(rec.vae_state, masked, jax.random.split(key)[0])


def test_window_shapes_keyframes_and_determinism(rec, inputs):
    first, last, text, null = inputs
    key = jax.random.key(7)
    frames, lat = rec.window(first, None, "prediction", text, null, key, DECODING)
    assert frames.shape == (1, 16, H, W, 3) and lat.shape == (1, 16, 2, 3, 4)
    assert np.isfinite(np.asarray(frames)).all() and np.abs(np.asarray(frames)).max() <= 1
    np.testing.assert_array_equal(np.asarray(lat[:, 0]), np.asarray(encoded(rec, first, None, "first1", key)[:, 0]))
    frames2, lat2 = rec.window(first, None, "prediction", text, null, key, DECODING)
    np.testing.assert_array_equal(np.asarray(lat), np.asarray(lat2))
    np.testing.assert_array_equal(np.asarray(frames), np.asarray(frames2))
    _, lat3 = rec.window(first, None, "prediction", text, null, jax.random.key(8), DECODING)
    assert np.abs(np.asarray(lat3[:, 1:]) - np.asarray(lat[:, 1:])).max() > 1e-3

    _, lat = rec.window(first, last, "interpolation", text, null, key, DECODING)
    enc = np.asarray(encoded(rec, first, last, "onelast1", key))
    np.testing.assert_array_equal(np.asarray(lat[:, [0, 15]]), enc[:, [0, 15]])
    # The generated frames are the sampler's, not the conditioning latents.
    assert np.abs(np.asarray(lat[:, 1:15]) - enc[:, 1:15]).max() > 1e-3


def test_clip_chains_windows_then_retimes_and_resizes(rec, inputs):
    first, last, text, null = inputs
    key = jax.random.key(3)
    # 20 frames at 8 fps = two windows; shown at 4 fps -> 10 frames, resized to 32x48.
    video = rec.clip(first, None, 20, "prediction", text, null, key, DECODING)
    assert video.shape == (1, 10, 32, 48, 3)
    assert np.isfinite(np.asarray(video)).all()
    again = rec.clip(first, None, 20, "prediction", text, null, key, DECODING)
    np.testing.assert_array_equal(np.asarray(video), np.asarray(again))
    video = rec.clip(first, last, 24, "interpolation", text, null, key, DECODING)
    assert video.shape == (1, 12, 32, 48, 3)
    with pytest.raises(ConfigError):
        rec.clip(first, last, 1, "interpolation", text, null, key, DECODING)


def test_frame_index_helpers():
    np.testing.assert_array_equal(retime(8, 8.0, 4.0), [0, 2, 4, 6])
    np.testing.assert_array_equal(retime(4, 8.0, 16.0), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(retime(5, 8.0, None), np.arange(5))
    np.testing.assert_array_equal(subsample(16, 4), [0, 5, 10, 15])
    np.testing.assert_array_equal(subsample(16, 16), np.arange(16))


def test_seine_scheduler_defaults():
    ddpm = seine_scheduler()
    assert ddpm.num_steps == 250 and int(ddpm.timesteps[0]) == 999 and int(ddpm.timesteps[-1]) == 0
    ddim = seine_scheduler("ddim", 250)
    np.testing.assert_array_equal(np.asarray(ddim.timesteps), np.asarray(ddpm.timesteps))
    assert VideoDecoding().guidance_scale == 8.0 and VideoDecoding().steps == 250
    assert VideoReconstructionConfig().window == 16


def test_strength_starts_late_in_the_chain_from_the_blended_keyframes(inputs):
    """strength < 1 (SDEdit): the last steps of the chain only, from the given frames' latents blended
    across the window; with no denoising left to do, the start itself is what comes back."""
    unet = random_module(lambda r: VideoUNet(VideoUNetConfig.tiny(), rngs=r), 0, "seine")
    vae = random_module(lambda r: AutoencoderKL(VAEConfig.preset("tiny"), rngs=r), 1, "sd-vae")
    rec = VideoReconstructor(unet, vae, VideoReconstructionConfig(height=H, width=W))
    decoding = VideoDecoding(sampler="ddim", steps=10, strength=0.3)
    full = seine_scheduler("ddim", 10)
    assert seine_chain(decoding).num_steps == 3
    np.testing.assert_array_equal(np.asarray(seine_chain(decoding).timesteps), np.asarray(full.timesteps[7:]))
    masked = jax.random.normal(jax.random.key(1), (1, 16, 2, 3, 4))
    level = full.level[full.num_steps - 1]  # almost no noise: the start is the blend itself
    start = np.asarray(VideoReconstructor._start(masked, "interpolation", level, jax.random.key(2)))
    w = np.linspace(0, 1, 16)[None, :, None, None, None]
    blend = (1 - w) * np.asarray(masked[:, :1]) + w * np.asarray(masked[:, -1:])
    np.testing.assert_allclose(start, blend, atol=0.05)
    held = np.asarray(VideoReconstructor._start(masked, "prediction", level, jax.random.key(2)))
    np.testing.assert_allclose(held, np.broadcast_to(np.asarray(masked[:, :1]), held.shape), atol=0.05)
    first, last, text, null = inputs
    frames, _ = rec.window(first, last, "interpolation", text, null, jax.random.key(3), decoding)
    assert frames.shape == (1, 16, H, W, 3) and np.isfinite(np.asarray(frames)).all()


@pytest.mark.parametrize("kw", [dict(height=520), dict(width=100), dict(out_width=600), dict(window=2)])
def test_config_errors(kw):
    with pytest.raises(ConfigError):
        VideoReconstructionConfig(**kw)


@pytest.mark.parametrize("kw", [dict(sampler="euler"), dict(steps=0), dict(steps=1001), dict(strength=0.0),
                                dict(strength=1.5), dict(guidance_scale=float("nan")), dict(guidance_scale=-1.0)])
def test_decoding_errors(kw):
    with pytest.raises(ConfigError):
        VideoDecoding(**kw)
