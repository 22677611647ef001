"""The speculative keyframe scan (flows of a block of frames against the current keyframe in one batched
RAFT call, the rest of the block discarded at a new keyframe) decides exactly as the one-frame-at-a-time
scan, on sequences that cut often."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from m3cvc_jax.codec import keyframes as kf
from m3cvc_jax.codec.keyframes import KeyframeConfig, keyframe_indices
from m3cvc_jax.nn import clip as clip_nn
from m3cvc_jax.pipelines.keyframe_stage import flow_block, flow_frames, select
from tests.test_keyframes import _models


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 40])
def test_blocks_decide_as_the_sequential_scan(block):
    """Random features and an asymmetric motion table m(F_l, F_n): the keyframes come every 1-4 frames
    (semantic and forced), so most blocks are cut short by a new keyframe."""
    t = 23
    rng = np.random.default_rng(5)
    emb = jnp.asarray(np.cumsum(rng.normal(size=(t, 16)), axis=0), jnp.float32)
    table = jnp.asarray(rng.uniform(0.0, 0.3, size=(t, t)), jnp.float32)
    cfg = KeyframeConfig(lambda1=1.0, lambda2=1.0, threshold=0.3, max_clip_length=5)
    want = jax.jit(lambda e, m: kf.m3cvc_select_table(e, m, cfg))(emb, table)
    got = jax.jit(lambda e, m: kf.m3cvc_select_blocks(e, cfg, block, lambda i: i, lambda ref, idx: m[ref, idx]))(
        emb, table)
    keys = keyframe_indices(want)
    gaps = np.diff(keys)
    assert 1 in gaps and (cfg.max_clip_length - 1) in gaps and len(keys) > t // 4  # semantic and forced cuts
    assert keyframe_indices(got) == keys
    np.testing.assert_array_equal(np.asarray(got.is_keyframe), np.asarray(want.is_keyframe))
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _cutting_clip(t=12, h=64, w=72):
    """A slow pan over four scenes that alternate every 1-4 frames."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    scenes = [127 + 60 * np.sin(xx / (4 + 2 * k) + k)[..., None] * np.cos(yy / (3 + k))[..., None]
              + rng.normal(0, 5, (h, w, 3)) for k in range(4)]
    order = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 0]
    frames = [np.roll(scenes[order[n]], (n, 2 * n), axis=(0, 1)) for n in range(t)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_stage_blocks_match_the_one_at_a_time_raft_scan():
    """Tiny CLIP + RAFT (random weights): the batched stage against the former path, RAFT called on each
    (keyframe, frame) pair inside the sequential scan. The weights make D = 1000 (1 - cos) + 1000 m - 1.4
    cross zero both ways (the random networks give small distances), and max_clip_length 5 forces cuts."""
    frames = _cutting_clip()
    cfg = KeyframeConfig(method="m3cvc", clip_model="tiny", flow_model="tiny", threshold=1.4, lambda1=1000.0,
                         lambda2=1000.0, max_clip_length=5, flow_updates=3)
    models = _models(cfg)
    raft = models.raft

    @jax.jit
    def one_at_a_time(frames_uint8):
        emb = clip_nn.image_embeddings(models.clip, frames_uint8)
        x = flow_frames(frames_uint8, raft.config)
        per_frame = jax.vmap(lambda f: (raft.features(f[None]), raft.context(f[None])))(x)

        def motion(ref, frame):
            (fmap1, context1), (fmap2, _) = ref, frame
            return kf.motion_magnitude(raft.flow_from_features(fmap1, context1, fmap2, cfg.flow_updates)[0])

        return kf.select(emb, cfg, frames=per_frame, motion_fn=motion)

    want = one_at_a_time(jnp.asarray(frames))
    keys = keyframe_indices(want)
    score = np.asarray(want.score)[1:]
    # Keyframes by score and by force, and no score so close to 0 that rounding could flip it.
    assert keys == [0, 1, 3, 7, 9, 11] and (score < 0).sum() >= 4 and np.abs(score).min() > 0.03
    assert np.asarray(want.motion).min() > 0
    for block in (1, 4):
        got = select(frames, cfg, models, block=block)
        assert keyframe_indices(got) == keys, block
        # 1 - cos of near-parallel embeddings: CLIP batched differently rounds cos by a few ulps of 1.
        np.testing.assert_allclose(np.asarray(got.semantic), np.asarray(want.semantic), rtol=0,
                                   atol=16 * np.finfo(np.float32).eps)
        mot = np.asarray(want.motion)
        np.testing.assert_allclose(np.asarray(got.motion), mot, rtol=0, atol=1e-4 * mot.max())


def test_batched_flows_against_one_reference_equal_pairwise_flows():
    """`flow_from_reference` with one reference frame and B second frames equals B pairwise flows."""
    frames = _cutting_clip(t=5)
    cfg = KeyframeConfig(method="m3cvc", clip_model="tiny", flow_model="tiny")
    raft = _models(cfg).raft
    x = flow_frames(frames, raft.config)

    @nnx.jit
    def flows(raft, x):
        fmaps = raft.features(x)
        context = raft.context(x[:1])
        batched = raft.flow_from_reference(raft.reference(fmaps[:1], context), fmaps[1:], 4)
        pairs = jnp.concatenate([raft.flow_from_features(fmaps[:1], context, fmaps[n:n + 1], 4)
                                 for n in range(1, len(x))])
        return batched, pairs

    batched, pairs = map(np.asarray, flows(raft, x))
    assert batched.shape == (4, 64, 72, 2) and np.abs(pairs).max() > 0.05
    np.testing.assert_allclose(batched, pairs, rtol=0, atol=1e-4 * np.abs(pairs).max())


def test_flow_block_size():
    cfg = KeyframeConfig(max_clip_length=16)
    assert flow_block(33, 320, 512, cfg, None) == 8
    assert flow_block(33, 320, 512, KeyframeConfig(max_clip_length=4), 8) == 3  # never past a forced keyframe
    assert flow_block(5, 320, 512, cfg, 8) == 5
    assert flow_block(33, 1088, 1920, cfg, None) == 1  # a 1080p pyramid is ~5.7 GB: one frame at a time


def test_block_schedule():
    """The batched calls of the benchmark's clip (keyframes forced at 0, 15, 30): 34 flows for 33 frames."""
    cfg = KeyframeConfig(max_clip_length=16)
    assert kf.block_sizes(8) == (8, 4, 2, 1) and kf.block_sizes(5) == (5, 4, 2, 1)
    assert kf.block_schedule([0, 15, 30], 33, cfg, 8) == [(0, 8), (8, 8), (16, 8), (24, 8), (31, 2)]
    assert kf.block_schedule([0, 3, 15], 17, cfg, 8) == [(0, 8), (4, 8), (12, 8), (16, 1)]
    assert kf.block_schedule([0, 3, 18], 20, cfg, 8) == [(0, 8), (4, 8), (12, 8), (19, 1)]
    assert kf.block_schedule([0, 15, 30], 33, cfg, 1) == [(n, 1) for n in range(33)]
