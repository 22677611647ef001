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
from m3cvc_jax.nn.raft import RAFTConfig
from m3cvc_jax.nn.raft_corr import pyramid_bytes
from m3cvc_jax.pipelines.keyframe_stage import flow_block, flow_frames, select, select_raft
from tests.test_keyframes import _models

SMALL = RAFTConfig.preset("small")


def _needs_flow(want, cfg):
    """From the sequential decision alone: the frames whose decision depends on their motion (not frame 0,
    not forced, and with λ2 >= 0 not made keyframes by λ1·(1 − cos) > D_th), against the keyframe of the
    time."""
    keys, sem = np.asarray(want.is_keyframe), np.asarray(want.semantic, np.float32)
    need, last = np.zeros(len(keys), bool), 0
    for n in range(1, len(keys)):
        forced = n - last >= cfg.max_clip_length - 1
        by_clip = cfg.lambda2 >= 0 and np.float32(cfg.lambda1) * sem[n] - np.float32(cfg.threshold) > 0
        need[n] = not (forced or by_clip)
        last = n if keys[n] else last
    return need


@pytest.mark.parametrize("lambda2", [1.0, -0.5])
@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 40])
def test_blocks_decide_as_the_sequential_scan(block, lambda2):
    """Random features with four scene cuts and an asymmetric motion table m(F_l, F_n): the keyframes come
    every 1-4 frames (by CLIP alone, by motion, and forced), so most blocks are cut short by a new
    keyframe. Only the frames whose decision needs their motion get one (recorded call by call); the
    others have NaN motion and score. With λ2 < 0 the motion can undo the semantic term (frames 18 and 19
    here): only frame 0 and forced keyframes are skipped."""
    t = 23
    rng = np.random.default_rng(5)
    steps = rng.normal(size=(t, 16))
    steps[[4, 11, 12, 18]] *= 30
    emb = jnp.asarray(np.cumsum(steps, axis=0), jnp.float32)
    table = jnp.asarray(rng.uniform(0.0, 0.3, size=(t, t)), jnp.float32)
    cfg = KeyframeConfig(lambda1=1.0, lambda2=lambda2, threshold=0.3 if lambda2 > 0 else 0.2, max_clip_length=5)
    want = jax.jit(lambda e, m: kf.m3cvc_select_table(e, m, cfg))(emb, table)
    calls = []

    def motions(ref, idx):
        jax.debug.callback(lambda r, i: calls.append((int(r), np.asarray(i).tolist())), ref, idx)
        return table[ref, idx]

    got, sizes = jax.jit(lambda e: kf.m3cvc_select_blocks(e, cfg, block, lambda i: i, motions))(emb)
    jax.effects_barrier()
    keys = keyframe_indices(want)
    gaps = np.diff(keys)
    assert 1 in gaps and (cfg.max_clip_length - 1) in gaps and len(keys) > t // 4  # semantic and forced cuts
    assert keyframe_indices(got) == keys
    np.testing.assert_array_equal(np.asarray(got.is_keyframe), np.asarray(want.is_keyframe))
    need = _needs_flow(want, cfg)
    sem = np.asarray(want.semantic)
    by_clip = np.asarray(want.is_keyframe) & ~need & (cfg.lambda1 * sem > cfg.threshold)
    by_motion = np.asarray(want.is_keyframe) & need
    if lambda2 > 0:
        assert by_clip[1:].sum() >= 2 and by_motion.sum() >= 2
    else:  # CLIP alone over the threshold, yet no keyframe: skipping its flow would change the decision
        assert (~np.asarray(want.is_keyframe) & (cfg.lambda1 * sem > cfg.threshold)).any() and by_motion.sum() >= 2
    # The skipped frames are exactly those the rule does not need; each needed one is computed in the
    # calls, against the keyframe of its time, and only those (plus a block's tail after a new keyframe).
    np.testing.assert_array_equal(np.isnan(np.asarray(got.motion)), ~need)
    np.testing.assert_array_equal(np.isnan(np.asarray(got.score)), ~need)
    last_of = np.maximum.accumulate(np.where(np.asarray(want.is_keyframe), np.arange(t), 0))
    ref_of = np.concatenate([[0], last_of[:-1]])
    computed = {(r, i) for r, idx in calls for i in idx}
    assert {(int(ref_of[n]), n) for n in np.flatnonzero(need)} <= computed
    assert all(need[i] for _, i in computed)
    assert [(idx[0], len(idx)) for _, idx in calls] == kf.block_schedule(sizes)
    if block == 1:
        assert len(calls) == need.sum()
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_allclose(np.asarray(a)[need], np.asarray(b)[need], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got.semantic), sem, rtol=1e-6, atol=1e-7)


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
    need = _needs_flow(want, cfg)
    assert list(np.flatnonzero(~need)) == [0, 7]  # frame 0 and the forced keyframe get no flow
    for block in (1, 4):
        got, calls = select_raft(frames, cfg, models, block=block)
        assert keyframe_indices(got) == keys, block
        np.testing.assert_array_equal(np.isnan(np.asarray(got.motion)), ~need)
        assert sum(s for _, s in kf.block_schedule(calls)) >= need.sum()
        # 1 - cos of near-parallel embeddings: CLIP batched differently rounds cos by a few ulps of 1.
        np.testing.assert_allclose(np.asarray(got.semantic), np.asarray(want.semantic), rtol=0,
                                   atol=16 * np.finfo(np.float32).eps)
        mot = np.asarray(want.motion)[need]
        np.testing.assert_allclose(np.asarray(got.motion)[need], mot, rtol=0, atol=1e-4 * mot.max())


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
    assert pyramid_bytes(40, 64, 4, 3) == 4 * 2560 * (54 * 78 + 34 * 46 + 24 * 30 + 19 * 22)  # borders of 7
    cfg = KeyframeConfig(max_clip_length=16)
    assert flow_block(33, 320, 512, cfg, None, SMALL) == 8
    assert flow_block(33, 320, 512, KeyframeConfig(max_clip_length=4), 8, SMALL) == 2  # between forced keyframes
    assert flow_block(33, 320, 512, KeyframeConfig(max_clip_length=2), 8, SMALL) == 1  # all forced: none needed
    assert flow_block(5, 320, 512, cfg, 8, SMALL) == 5
    assert flow_block(33, 1088, 1920, cfg, None, SMALL) == 1  # a 1080p pyramid is ~6.7 GB: one frame at a time


@pytest.mark.parametrize("block", [1, 8])
def test_benchmark_clip_schedule(block):
    """The benchmark's case, a static scene of 33 frames (keyframes forced at 0, 15, 30): 30 flows, none
    for the keyframes, in the largest batches the frames between them fill."""
    t = 33
    cfg = KeyframeConfig(max_clip_length=16)
    emb = jnp.ones((t, 8), jnp.float32)
    got, calls = kf.m3cvc_select_blocks(emb, cfg, block, lambda i: i, lambda ref, idx: jnp.zeros(idx.shape))
    assert keyframe_indices(got) == [0, 15, 30]
    assert kf.block_sizes(8) == (8, 4, 2, 1) and kf.block_sizes(5) == (5, 4, 2, 1)
    want = ([(1, 8), (9, 4), (13, 2), (16, 8), (24, 4), (28, 2), (31, 2)] if block == 8
            else [(n, 1) for n in range(t) if n not in (0, 15, 30)])
    assert kf.block_schedule(calls) == want
    np.testing.assert_array_equal(np.flatnonzero(np.isnan(np.asarray(got.motion))), [0, 15, 30])
