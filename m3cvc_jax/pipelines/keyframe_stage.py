"""The keyframe decision on real frames: CLIP image features and optical flow feed `codec.keyframes`.

`codec/keyframes.py` holds the decision rules over features; this runs the networks that produce them and
chooses jit: CLIP image embeddings of every frame (in fixed-size chunks, so one compilation serves any
length), and, for the M3-CVC rule with λ2 != 0, the motion magnitude of the flow from the current keyframe
to each frame (RAFT, or the classical Lucas-Kanade flow of `nn/lk_flow.py` with
`flow_model=classical`), computed inside the decision's scan, since the reference frame changes with every
new keyframe. RAFT's flows come up to `FLOW_BLOCK` frames at a time against the current keyframe in one
batched call (`codec.keyframes.m3cvc_select_blocks`; the frames after a new keyframe are recomputed against
it), so the decision is the sequential one; frames the rule decides without their motion (frame 0, forced
keyframes, keyframes by CLIP alone) get no flow, and NaN motion and score. RAFT needs frames of at least
16·2^(levels-1) pixels per side (128 for torchvision's 4-level pyramid) and multiples of 8: smaller frames
are upscaled for the flow only; the magnitude is relative to the frame diagonal, so this does not bias it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.codec import keyframes as kf
from m3cvc_jax.errors import ConfigError, VideoError
from m3cvc_jax.nn import clip as clip_nn
from m3cvc_jax.nn.lk_flow import lucas_kanade
from m3cvc_jax.nn.raft import preprocess_frames
from m3cvc_jax.nn.raft_corr import pyramid_bytes

CHUNK = 8  # frames per CLIP call


def components(cfg: kf.KeyframeConfig) -> tuple[str, ...]:
    """Weight folders the decision needs."""
    if cfg.method == "fixed":
        return ()
    if cfg.uses_motion and cfg.flow_model != "classical":
        return ("clip", "raft")
    return ("clip",)


_image_features = jax.jit(clip_nn.image_embeddings)


def image_embeddings(clip, frames: np.ndarray) -> jax.Array:
    """(T, D) CLIP image embeddings of uint8 frames (T, H, W, 3)."""
    t = frames.shape[0]
    pad = (-t) % CHUNK
    padded = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)]) if pad else frames
    out = [_image_features(clip, jnp.asarray(padded[i:i + CHUNK])) for i in range(0, len(padded), CHUNK)]
    return jnp.concatenate(out)[:t]


def flow_size(height: int, width: int, min_side: int) -> tuple[int, int]:
    scale = max(1.0, min_side / min(height, width))
    return 8 * math.ceil(height * scale / 8), 8 * math.ceil(width * scale / 8)


FLOW_BATCH = 8  # frames per encoder call: bounds the full-resolution activations of long clips
FLOW_BLOCK = 8  # flows against the current keyframe per batched call (measured: docs/performance.md)
BLOCK_MEMORY = 3 << 28  # bytes of correlation pyramids one block may hold: smaller blocks for large frames


def flow_frames(frames: np.ndarray, raft_config) -> jax.Array:
    """uint8 frames (T, H, W, 3) -> RAFT's input: [-1, 1], upscaled to a size its pyramid accepts."""
    t, h, w, _ = frames.shape
    x = preprocess_frames(jnp.asarray(frames))
    fh, fw = flow_size(h, w, 16 * 2 ** (raft_config.corr_block_num_levels - 1))
    return x if (fh, fw) == (h, w) else jax.image.resize(x, (t, fh, fw, 3), "bilinear")


def flow_block(num_frames: int, height: int, width: int, cfg: kf.KeyframeConfig, requested: int | None,
               raft_config) -> int:
    """Frames per batched flow call: `requested` (default FLOW_BLOCK), at most the frames between two
    forced keyframes (the forced one gets no flow), the clip, and what BLOCK_MEMORY holds of the pyramids."""
    if requested is not None and requested < 1:
        raise ConfigError(f"flow block must be >= 1, got {requested}")
    per_frame = pyramid_bytes(height // 8, width // 8, raft_config.corr_block_num_levels, raft_config.corr_block_radius)
    fits = max(1, BLOCK_MEMORY // per_frame)
    return max(1, min(FLOW_BLOCK if requested is None else requested, cfg.max_clip_length - 2, num_frames, fits))


@functools.partial(jax.jit, static_argnames=("cfg", "block"))
def _select_raft(clip, raft, frames_uint8, cfg: kf.KeyframeConfig, block: int) -> tuple[kf.Decision, jax.Array]:
    # One program for the whole decision: CLIP over the frames in batches of CHUNK (the last batch only
    # as long as the frames left, no padding), then RAFT. Every frame's features are computed once, in
    # small batches, not once per pair as RAFT(keyframe, frame) would; the context and the GRU plan only
    # for keyframes, when they become one. The scan then runs the correlation and the GRU updates of
    # up to `block` frames at a time against the current keyframe, for the frames whose decision needs
    # their motion (`kf.m3cvc_select_blocks`).
    embeddings = jax.lax.map(lambda f: clip_nn.image_embeddings(clip, f[None])[0], frames_uint8, batch_size=CHUNK)
    frames = flow_frames(frames_uint8, raft.config)
    fmaps = jax.lax.map(lambda f: raft.features(f[None])[0], frames, batch_size=FLOW_BATCH)

    def reference(i):
        return raft.reference(fmaps[i][None], raft.context(frames[i][None]))

    def motions(ref, idx):
        return kf.motion_magnitude(raft.flow_from_reference(ref, fmaps[idx], num_flow_updates=cfg.flow_updates))

    return kf.m3cvc_select_blocks(embeddings, cfg, block, reference, motions)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _select_classical(embeddings, frames, cfg: kf.KeyframeConfig) -> kf.Decision:
    return kf.select(embeddings, cfg, frames=frames, motion_fn=lambda a, b: kf.motion_magnitude(lucas_kanade(a, b)))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _select_features(embeddings, cfg: kf.KeyframeConfig) -> kf.Decision:
    return kf.select(embeddings, cfg)


def select_raft(frames: np.ndarray, cfg: kf.KeyframeConfig, models, *,
                block: int | None = None) -> tuple[kf.Decision, jax.Array]:
    """The RAFT decision of `select` and the batched flow calls it made (`kf.block_schedule` lists them)."""
    t, h, w, _ = frames.shape
    fh, fw = flow_size(h, w, 16 * 2 ** (models.raft.config.corr_block_num_levels - 1))
    return _select_raft(models.clip, models.raft, jnp.asarray(frames), cfg, flow_block(t, fh, fw, cfg, block, models.raft.config))


def select(frames: np.ndarray, cfg: kf.KeyframeConfig, models, *, block: int | None = None) -> kf.Decision:
    """The decision for uint8 frames (T, H, W, 3). `models` has `.clip` and `.raft` (a
    `pipelines.models.Models`, or any object with those attributes); neither is touched when the
    method does not need it. `block`: RAFT flows per batched call (`flow_block`); the decision does not
    depend on it."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"keyframe selection needs (T, H, W, 3) frames, got shape {frames.shape}")
    if cfg.method == "fixed":
        return kf.fixed_select(len(frames), cfg)
    if models.clip is None:
        raise ConfigError(f"keyframes.method={cfg.method} needs a CLIP model")
    if cfg.uses_motion and cfg.flow_model != "classical":
        return select_raft(frames, cfg, models, block=block)[0]
    embeddings = image_embeddings(models.clip, frames)
    if not cfg.uses_motion:
        return _select_features(embeddings, cfg)
    return _select_classical(embeddings, jnp.asarray(frames, jnp.float32) / 127.5 - 1.0, cfg)
