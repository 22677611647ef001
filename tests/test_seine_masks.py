"""SEINE's masks and masked-video conditioning against tensors built by the reference code
(`utils.mask_generation_before` and its sampling script; tests/fixtures/seine/golden.npz)."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.diffusion import seine_masks
from m3cvc_jax.errors import ConfigError

GOLD = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "seine", "golden.npz"))
MASK_TYPES = ["first1", "onelast1", "first2", "onelast2"]


def cl(a):
    """(B, T, C, H, W) pixel video or (B, C, T, H, W) latent -> channels last."""
    return np.moveaxis(np.asarray(a), 2 if a.shape[2] == 3 else 1, -1)


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_frame_mask_matches_reference(mask_type):
    ref = GOLD[f"mask_{mask_type}"]
    np.testing.assert_array_equal(seine_masks.frame_mask(mask_type, 16), ref[0, :, 0, 0, 0])
    # The reference's mask is constant within a frame.
    assert np.all(ref == ref[:, :, :1, :1, :1])


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_masked_video_and_latent_mask_match_reference(mask_type):
    mask = seine_masks.frame_mask(mask_type, 16)
    video = np.moveaxis(GOLD["mask_video"], 2, -1)
    np.testing.assert_array_equal(np.asarray(seine_masks.masked_video(jnp.asarray(video), mask)),
                                  np.moveaxis(GOLD[f"masked_video_{mask_type}"], 2, -1))
    ref = np.moveaxis(GOLD[f"latent_mask_{mask_type}"], 1, -1)
    np.testing.assert_array_equal(np.asarray(seine_masks.latent_mask(mask, 1, (2, 3))), ref)


def test_modes_and_given_frames():
    assert seine_masks.mask_type_for("prediction") == "first1"
    assert seine_masks.mask_type_for("interpolation") == "onelast1"
    np.testing.assert_array_equal(seine_masks.given_frames(seine_masks.frame_mask("onelast1", 16)), [0, 15])
    np.testing.assert_array_equal(seine_masks.frame_mask("all", 4), np.ones(4))
    with pytest.raises(ConfigError):
        seine_masks.mask_type_for("extrapolation")
    for bad in ("first", "lastone1", "first17", "onelast9"):
        with pytest.raises(ConfigError):
            seine_masks.frame_mask(bad, 16)


def test_unet_input_order_is_latent_mask_masked():
    """SEINE's p_mean_variance: th.concat([x, mask, x_start], dim=1)."""
    x = jnp.full((1, 2, 1, 1, 4), 1.0)
    mask = jnp.full((1, 2, 1, 1, 1), 2.0)
    masked = jnp.full((1, 2, 1, 1, 4), 3.0)
    out = np.asarray(seine_masks.unet_input(x, mask, masked))
    assert out.shape == (1, 2, 1, 1, 9)
    np.testing.assert_array_equal(out[0, 0, 0, 0], [1, 1, 1, 1, 2, 3, 3, 3, 3])


def test_window_video_places_keyframes_like_the_script():
    """Script: keyframe(s) repeated N times, black (uint8 0 -> -1 after normalisation) elsewhere."""
    first = jnp.full((1, 2, 2, 3), 0.5)
    last = jnp.full((1, 2, 2, 3), -0.25)
    v = np.asarray(seine_masks.window_video(first, last, "onelast2", 8))
    np.testing.assert_array_equal(v[0, :, 0, 0, 0], [0.5, 0.5, -1, -1, -1, -1, -0.25, -0.25])
    v = np.asarray(seine_masks.window_video(first, None, "first1", 4))
    np.testing.assert_array_equal(v[0, :, 0, 0, 0], [0.5, -1, -1, -1])
    # After masking the generated frames are 0 (grey), whatever they held.
    m = np.asarray(seine_masks.masked_video(jnp.asarray(v), seine_masks.frame_mask("first1", 4)))
    np.testing.assert_array_equal(m[0, :, 0, 0, 0], [0.5, 0, 0, 0])
    with pytest.raises(ConfigError):
        seine_masks.window_video(first, None, "onelast1", 4)
