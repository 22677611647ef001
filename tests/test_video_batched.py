"""All SEINE windows of a stream in one batched program per round (`VideoReconstructor.clips`): the same
frames as clip-by-clip `clip`, and one trace for every round and call of the same clip count."""

import chex
import jax
import numpy as np

from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
from m3cvc_jax.decoders import video
from m3cvc_jax.decoders.video import VideoReconstructionConfig, VideoReconstructor, window_plan
from m3cvc_jax.decoders.video_decoding import VideoDecoding
from m3cvc_jax.random_weights import random_module

H, W = 16, 24


def _counting(decode, shapes):
    """`decoders.video._decode` unjitted, recording the number of frames of each call it traces."""
    def f(graphdef, scale, state, latents):
        shapes.append(latents.shape[1])
        return decode.__wrapped__(graphdef, scale, state, latents)
    return f


def _reconstructor():
    unet = random_module(lambda r: VideoUNet(VideoUNetConfig.tiny(), rngs=r), 0, "seine")
    vae = random_module(lambda r: AutoencoderKL(VAEConfig.preset("tiny"), rngs=r), 1, "sd-vae")
    return VideoReconstructor(unet, vae, VideoReconstructionConfig(height=H, width=W))


def _inputs(count):
    k = jax.random.split(jax.random.key(0), 4)
    frames = jax.random.uniform(k[0], (count + 1, H, W, 3), minval=-1, maxval=1)
    texts = jax.random.normal(k[1], (count, 7, 32))
    null = jax.random.normal(k[2], (1, 7, 32))
    keys = jax.random.split(k[3], count)
    return frames, texts, null, keys


def test_clips_batched_equal_clip_by_clip_with_one_trace(monkeypatch):
    # Count traces of the batched program: a retrace (recompile) between rounds or calls fails the test.
    chex.clear_trace_counter()
    monkeypatch.setattr(video, "_windows", jax.jit(chex.assert_max_traces(video._windows_impl, n=1),
                                                   static_argnums=(0, 1, 2)))
    decodes = []
    monkeypatch.setattr(video, "_decode", jax.jit(_counting(video._decode, decodes), static_argnums=(0, 1)))
    # Guided (scale 2) and started part-way (strength 0.5: the per-window blend of the start is data).
    rec = _reconstructor()
    decoding = VideoDecoding(sampler="dpmpp2m", steps=3, strength=0.5, guidance_scale=2.0)
    # Interpolation over one window, interpolation over two (chained), prediction of 2 frames: rounds of
    # 3 windows then 1 (padded to 3).
    lengths, modes = [16, 24, 2], ["interpolation", "interpolation", "prediction"]
    frames, texts, null, keys = _inputs(3)
    lasts = [frames[1], frames[2], None]
    got = rec.clips(frames[:3], lasts, lengths, modes, texts, null, keys, decoding)
    for c in range(3):
        want = rec.clip(frames[c][None], None if lasts[c] is None else lasts[c][None], lengths[c], modes[c],
                        texts[c][None], null, keys[c], decoding)[0]
        assert got[c].shape == want.shape == (lengths[c], H, W, 3)
        # The given keyframes come back as given (not VAE-decoded); the sampled frames as `clip`'s, where
        # batched convolutions round differently from batch-1 ones: frames in [-1, 1] agree to 1e-4.
        given = [0] + ([lengths[c] - 1] if modes[c] == "interpolation" else [])
        np.testing.assert_array_equal(np.asarray(got[c][0]), np.asarray(frames[c]))
        if lasts[c] is not None:
            np.testing.assert_array_equal(np.asarray(got[c][-1]), np.asarray(lasts[c]))
        sampled = [i for i in range(lengths[c]) if i not in given]
        np.testing.assert_allclose(np.asarray(got[c])[sampled], np.asarray(want)[sampled], atol=1e-4, rtol=0,
                                   err_msg=f"clip {c}")
    # Another stream with as many clips but other lengths and modes runs the same program (no retrace).
    again = rec.clips(frames[1:], [None, frames[3], None], [5, 30, 16], ["prediction", "interpolation",
                      "prediction"], texts, null, keys, decoding)
    assert [v.shape[0] for v in again] == [5, 30, 16]
    # Only kept, sampled frames are decoded, padded to a multiple of 8: the first stream's round 1 decodes
    # 14 + 15 (window 1 of the chained clip) + 1 frames, its round 2 the chained clip's 8 - 1; the second
    # stream's round 1 4 + 15 + 15, its round 2 14; `clip` decodes whole windows (16). One trace per shape.
    assert sorted(decodes) == [8, 16, 32, 40]


def test_window_plan_covers_the_clip():
    for n, mode in [(2, "prediction"), (16, "interpolation"), (17, "interpolation"), (40, "prediction")]:
        plan = window_plan(n, mode, 16)
        assert 1 + sum(len(take) - 1 for _, take in plan) == n
        assert plan[-1][0] == ("interpolation" if mode == "interpolation" else "prediction")
        assert all(m == "prediction" for m, _ in plan[:-1])
