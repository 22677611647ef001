"""SEINE's masks and masked-video conditioning (pure functions; `utils.mask_generation_before` and
`sample_scripts/with_mask_sample.py` of Vchitect/SEINE).

A frame mask is 0 on given frames and 1 on frames to generate. Mask types: `firstN` (prediction: the
first N frames given), `onelastN` (interpolation: the first N and last N given), `all` (nothing given).
Given frames are kept in the pixel video; the others become 0 (mid-grey in [-1, 1]) before VAE
encoding. The UNet input is `[x_t (4), mask (1), masked-video latent (4)]` on the channel axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.errors import ConfigError

MODES = {"prediction": "first1", "interpolation": "onelast1"}


def mask_type_for(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown video reconstruction mode {mode!r}; expected one of {', '.join(MODES)}")
    return MODES[mode]


def frame_mask(mask_type: str, num_frames: int) -> np.ndarray:
    """(T,) float32: 0 where the frame is given, 1 where it is generated."""
    def count(prefix: str) -> int:
        try:
            return int(mask_type[len(prefix):])
        except ValueError:
            raise ConfigError(f"bad SEINE mask type {mask_type!r}") from None

    if mask_type.startswith("first"):
        n = count("first")
        if not 0 <= n <= num_frames:
            raise ConfigError(f"mask {mask_type!r} needs at most {num_frames} given frames")
        m = np.ones(num_frames, np.float32)
        m[:n] = 0
        return m
    if mask_type.startswith("onelast"):
        n = count("onelast")
        if not 0 <= 2 * n <= num_frames:
            raise ConfigError(f"mask {mask_type!r} needs at most {num_frames} given frames")
        m = np.ones(num_frames, np.float32)
        m[:n] = 0
        m[num_frames - n:] = 0
        return m
    if mask_type.startswith("all"):
        return np.ones(num_frames, np.float32)
    raise ConfigError(f"bad SEINE mask type {mask_type!r}; expected firstN, onelastN or all")


def given_frames(mask: np.ndarray) -> np.ndarray:
    """Indices of the given frames of a frame mask."""
    return np.flatnonzero(np.asarray(mask) == 0)


def masked_video(video: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, T, H, W, C) video with generated frames set to 0, as `video * (mask == 0)`."""
    keep = (jnp.asarray(mask) == 0).astype(video.dtype)
    return video * keep.reshape(1, -1, 1, 1, 1)


def latent_mask(mask: jax.Array, batch: int, latent_hw: tuple[int, int], dtype=jnp.float32) -> jax.Array:
    """(B, T, h, w, 1): the frame mask at latent size (a nearest resize of a per-frame constant)."""
    m = jnp.asarray(mask, dtype).reshape(1, -1, 1, 1, 1)
    return jnp.broadcast_to(m, (batch, m.shape[1], *latent_hw, 1))


def unet_input(x: jax.Array, mask: jax.Array, masked_latent: jax.Array) -> jax.Array:
    """`[x_t, mask, masked-video latent]` on the channel axis: SEINE's 9-channel input."""
    return jnp.concatenate([x, mask.astype(x.dtype), masked_latent.astype(x.dtype)], axis=-1)


def window_video(first: jax.Array, last: jax.Array | None, mask_type: str, num_frames: int) -> jax.Array:
    """The pixel window SEINE's script builds: `first` on the leading given frames, `last` on the trailing
    ones (`onelastN`), -1 (black) elsewhere. first/last: `(B, H, W, C)`; returns `(B, T, H, W, C)`."""
    given = frame_mask(mask_type, num_frames) == 0
    frames = jnp.full((first.shape[0], num_frames, *first.shape[1:]), -1.0, first.dtype)
    if mask_type.startswith("onelast"):
        if last is None:
            raise ConfigError("interpolation needs the last keyframe")
        n = int(mask_type[len("onelast"):])
        given[:n] = False  # the leading block takes `first`, the trailing block `last`
        frames = frames.at[:, np.flatnonzero(given)].set(last[:, None])
        given = np.arange(num_frames) < n
    return frames.at[:, np.flatnonzero(given)].set(first[:, None])
