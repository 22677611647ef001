"""Keyframe decisions on constructed feature sequences with known answers, and jit/no-jit equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.codec.keyframes import (
    KeyframeConfig, cmvc_select, fixed_select, keyframe_indices, m3cvc_select, m3cvc_select_table,
    motion_magnitude, select,
)
from m3cvc_jax.errors import ConfigError

D = 16


def _unit(i, noise=0.0, seed=0):
    v = np.zeros(D, np.float32)
    v[i] = 1.0
    return v + noise * np.random.default_rng(seed).normal(size=D).astype(np.float32)


def _scene(n, i, seed):
    return np.stack([_unit(i, 0.01, seed * 100 + k) for k in range(n)])


def _linear_motion(speed):
    """Motion grows with the distance to the reference: what a slow pan gives against a fixed keyframe."""
    return lambda ref, n: speed * jnp.abs(n - ref).astype(jnp.float32)


def test_scene_cut_starts_a_keyframe():
    emb = np.concatenate([_scene(10, 0, 1), _scene(10, 1, 2)])
    table = np.zeros((20, 20), np.float32)
    d = m3cvc_select_table(jnp.asarray(emb), jnp.asarray(table), KeyframeConfig())
    assert keyframe_indices(d) == [0, 10]
    assert float(d.semantic[10]) > 0.9 and float(d.semantic[11]) < 0.01  # the reference switched at 10


def test_static_scene_only_forced_keyframes():
    emb = np.repeat(_unit(3)[None], 40, axis=0)
    cfg = KeyframeConfig(max_clip_length=16)
    d = m3cvc_select_table(jnp.asarray(emb), jnp.zeros((40, 40)), cfg)
    # Clips are at most 16 frames keyframe-to-keyframe inclusive: keyframes 15 apart.
    assert keyframe_indices(d) == [0, 15, 30]
    assert np.all(np.asarray(d.score)[1:] < 0)


def test_slow_pan_motion_triggers_and_resets_against_new_keyframe():
    t = 30
    emb = np.repeat(_unit(2)[None], t, axis=0)
    cfg = KeyframeConfig(lambda1=1.0, lambda2=1.0, threshold=0.25, max_clip_length=100)
    frames = jnp.arange(t, dtype=jnp.int32)
    d = m3cvc_select(jnp.asarray(emb), frames, _linear_motion(0.03), cfg)
    # 0.03 * 9 = 0.27 > 0.25 first at 9 frames from the current keyframe, and again 9 after each new one.
    assert keyframe_indices(d) == [0, 9, 18, 27]
    np.testing.assert_allclose(np.asarray(d.motion)[9:12], [0.27, 0.03, 0.06], rtol=1e-5)
    # The precomputed-table variant gives the same decision.
    n = np.arange(t)
    table = 0.03 * np.abs(n[None] - n[:, None]).astype(np.float32)
    d2 = m3cvc_select_table(jnp.asarray(emb), jnp.asarray(table), cfg)
    assert keyframe_indices(d2) == keyframe_indices(d)
    np.testing.assert_allclose(np.asarray(d2.score), np.asarray(d.score), rtol=1e-6)


def test_semantic_only_ignores_motion():
    t = 30
    emb = np.repeat(_unit(2)[None], t, axis=0)
    calls = []

    def motion(ref, n):
        calls.append(1)
        return 10.0 * jnp.abs(n - ref).astype(jnp.float32)

    d = select(jnp.asarray(emb), KeyframeConfig(method="semantic", max_clip_length=100),
               frames=jnp.arange(t), motion_fn=motion)
    assert keyframe_indices(d) == [0] and not calls
    assert float(jnp.max(d.motion)) == 0.0


def test_semantic_drift_is_measured_against_the_keyframe_not_the_previous_frame():
    # A slow rotation: each step is tiny (consecutive cos ~ 1) but it accumulates against the keyframe.
    t = 40
    angles = np.linspace(0, np.pi / 2, t)
    emb = np.zeros((t, D), np.float32)
    emb[:, 0], emb[:, 1] = np.cos(angles), np.sin(angles)
    cfg = KeyframeConfig(method="semantic", threshold=0.1, max_clip_length=100)
    d = select(jnp.asarray(emb), cfg)
    keys = keyframe_indices(d)
    step = angles[1]
    first = int(np.ceil(np.arccos(0.9) / step))  # 1 - cos > 0.1 first here
    assert keys[:2] == [0, first] and len(keys) >= 3
    assert keys[2] - keys[1] == first


def test_cmvc_picks_least_similar_frame_per_interval():
    t = 33  # interval 8: interior 1..31 split into [1, 11), [11, 22), [22, 32)
    emb = np.repeat(_unit(0)[None], t, axis=0)
    emb[5] = _unit(1)  # the least similar to frame 0 in [1, 11)
    emb[7] = 0.7 * _unit(0) + 0.3 * _unit(1)
    emb[11:22] = _unit(1)  # like the new reference (frame 5) ...
    emb[13] = 0.5 * _unit(1) + 0.5 * _unit(2)
    emb[17] = _unit(2)  # ... except 17: picked
    emb[22:32] = _unit(2)
    emb[25] = 0.5 * _unit(2) + 0.5 * _unit(0)
    emb[30] = _unit(0)  # least similar to frame 17 (not to frame 0, which it equals)
    d = cmvc_select(jnp.asarray(emb), KeyframeConfig(method="cmvc", interval=8))
    assert keyframe_indices(d) == [0, 5, 17, 30, 32]


def test_cmvc_short_videos():
    # ceil((T - 1) / interval) - 1 interior intervals: none up to T = interval + 1.
    for t, want in [(1, [0]), (2, [0, 1]), (3, [0, 2]), (9, [0, 8])]:
        emb = np.random.default_rng(t).normal(size=(t, D)).astype(np.float32)
        d = cmvc_select(jnp.asarray(emb), KeyframeConfig(method="cmvc", interval=8))
        assert keyframe_indices(d) == want, t
    emb = np.repeat(_unit(0)[None], 10, axis=0)
    emb[4] = _unit(1)
    assert keyframe_indices(cmvc_select(jnp.asarray(emb), KeyframeConfig(method="cmvc", interval=8))) == [0, 4, 9]


def test_fixed_interval():
    assert keyframe_indices(fixed_select(33, KeyframeConfig(method="fixed", interval=8))) == [0, 8, 16, 24, 32]


def test_motion_magnitude_is_mean_length_over_diagonal():
    flow = np.zeros((30, 40, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, 4.0  # length 5 everywhere
    np.testing.assert_allclose(float(motion_magnitude(jnp.asarray(flow))), 5.0 / 50.0, rtol=1e-6)


def test_config_errors():
    with pytest.raises(ConfigError, match="method"):
        KeyframeConfig(method="nope")
    with pytest.raises(ConfigError, match="unknown keyframes option"):
        KeyframeConfig.from_mapping({"method": "m3cvc", "lambda3": 1})
    assert KeyframeConfig.from_mapping({"method": "fixed", "interval": 4}).interval == 4
    with pytest.raises(ConfigError, match="flow model"):
        select(jnp.zeros((4, D)), KeyframeConfig())


@pytest.mark.parametrize("method", ["m3cvc", "semantic", "cmvc", "fixed"])
def test_jit_equals_no_jit(method):
    t = 13
    rng = np.random.default_rng(7)
    emb = jnp.asarray(np.cumsum(rng.normal(size=(t, D)), axis=0).astype(np.float32))
    frames = jnp.asarray(rng.normal(size=(t, 8, 8, 2)).astype(np.float32))
    cfg = KeyframeConfig(method=method, threshold=0.05, lambda2=0.5, interval=4)

    def run(emb, frames):
        return select(emb, cfg, frames=frames, motion_fn=lambda a, b: motion_magnitude(b - a))

    with jax.disable_jit():
        eager = run(emb, frames)
    jitted = jax.jit(run)(emb, frames)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-6)
    keys = keyframe_indices(jitted)
    assert keys[0] == 0 and len(keys) >= 2


def _clip_with_cut(t=6, cut=3, h=64, w=96, shift=(0, 0)):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    a = 127 + 60 * np.sin(xx / 6.0)[..., None] * np.cos(yy / 5.0)[..., None] + rng.normal(0, 5, (h, w, 3))
    b = rng.uniform(0, 255, (h, w, 3))
    frames = []
    for n in range(t):
        base = a if n < cut else b
        frames.append(np.roll(base, (n * shift[1], n * shift[0]), axis=(0, 1)))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _models(cfg, seed=0):
    """Random-weight CLIP (and RAFT unless the classical flow is asked for), as the tiny preset builds them."""
    from types import SimpleNamespace

    from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel
    from m3cvc_jax.nn.raft import RAFT, RAFTConfig
    from m3cvc_jax.random_weights import random_module

    clip = random_module(lambda r: CLIPModel(CLIPConfig.preset(cfg.clip_model), rngs=r), seed, "clip")
    raft = None
    if cfg.flow_model != "classical":
        raft = random_module(lambda r: RAFT(RAFTConfig.preset(cfg.flow_model), rngs=r), seed, "raft")
    return SimpleNamespace(clip=clip, raft=raft)


def test_stage_measures_flow_against_the_current_keyframe():
    """The on-the-fly RAFT scan (tiny random weights) against RAFT called pair by pair afterwards."""
    from flax import nnx

    from m3cvc_jax.pipelines.keyframe_stage import flow_frames, select

    frames = _clip_with_cut(t=4, cut=2, h=64, w=72)
    cfg = KeyframeConfig(method="m3cvc", clip_model="tiny", flow_model="tiny", threshold=0.0, lambda1=0.0,
                         lambda2=1.0, max_clip_length=3, flow_updates=2)
    models = _models(cfg)
    d = select(frames, cfg, models)
    keys = keyframe_indices(d)
    # threshold 0 and lambda1 0: any motion makes a keyframe; max_clip_length=3 forces every 2nd anyway.
    assert keys[0] == 0 and len(keys) >= 3
    x = np.asarray(flow_frames(frames, models.raft.config))
    assert x.shape[1:3] == (64, 72)  # the tiny RAFT has 3 pyramid levels: 64 px suffice, no resize
    ref = 0
    raft = nnx.jit(lambda m, a, b: m(a, b, num_flow_updates=2))
    for n in range(1, len(frames)):
        want = float(motion_magnitude(raft(models.raft, x[ref][None], x[n][None])[0]))
        np.testing.assert_allclose(float(d.motion[n]), want, rtol=1e-4, atol=1e-6)
        if n in keys:
            ref = n


def test_stage_semantic_and_classical_fallback():
    from m3cvc_jax.pipelines.keyframe_stage import select

    static = _clip_with_cut(t=4, cut=10)
    panning = _clip_with_cut(t=4, cut=10, shift=(2, 1))
    cfg = KeyframeConfig(method="m3cvc", clip_model="tiny", flow_model="classical", lambda1=0.0, lambda2=1.0,
                         threshold=0.01, max_clip_length=100)
    models = _models(cfg, seed=3)
    d_static, d_pan = select(static, cfg, models), select(panning, cfg, models)
    assert keyframe_indices(d_static) == [0] and float(jnp.max(d_static.motion)) < 1e-3
    # ~2.2 px per frame against frame 0 over a 115 px diagonal: 0.019, 0.039 -> a keyframe at frame 1.
    assert keyframe_indices(d_pan)[:2] == [0, 1]
    np.testing.assert_allclose(float(d_pan.motion[1]), np.hypot(2, 1) / np.hypot(64, 96), rtol=0.35)
    # Fixed intervals touch no network at all.
    from types import SimpleNamespace

    fixed = select(static, KeyframeConfig(method="fixed", interval=2), SimpleNamespace(clip=None, raft=None))
    assert keyframe_indices(fixed) == [0, 2]


def test_config_block_of_the_codec_config_builds_a_keyframe_config():
    """`--set keyframes.method=...` edits this block; every field must be one KeyframeConfig knows."""
    from m3cvc_jax.pipelines.presets import get_config

    for preset in ("tiny", "paper"):
        block = get_config(preset).keyframes
        block.method = "cmvc"
        cfg = KeyframeConfig.from_mapping(block.to_dict())
        assert cfg.method == "cmvc"


def _numpy_m3cvc(emb, table, lam1, lam2, threshold, max_clip):
    """M3-CVC's rule written out in float64: D = lam1 (1 - cos(v_n, v_l)) + lam2 m(F_l, F_n) - D_th."""
    keys, scores, last = [0], [np.nan], 0
    for n in range(1, len(emb)):
        v_n, v_l = emb[n].astype(np.float64), emb[last].astype(np.float64)
        cos = v_n @ v_l / (np.linalg.norm(v_n) * np.linalg.norm(v_l))
        d = lam1 * (1.0 - cos) + lam2 * float(table[last, n]) - threshold
        scores.append(d)
        if d > 0 or n - last >= max_clip - 1:
            keys.append(n)
            last = n
    return keys, np.asarray(scores)


@pytest.mark.parametrize("lam1, lam2, threshold", [(0.6, 2.5, 0.6), (1.7, 0.4, 0.5)])
def test_m3cvc_decision_with_both_terms_weighted_matches_numpy(lam1, lam2, threshold):
    """Both terms non-zero and non-unit: a weight applied to the wrong term, or dropped, changes D."""
    t = 24
    rng = np.random.default_rng(11)
    emb = np.cumsum(rng.normal(size=(t, D)), axis=0).astype(np.float32)  # a drifting scene
    table = rng.uniform(0.0, 0.2, size=(t, t)).astype(np.float32)  # asymmetric: m(F_l, F_n) != m(F_n, F_l)
    cfg = KeyframeConfig(lambda1=lam1, lambda2=lam2, threshold=threshold, max_clip_length=8)
    want_keys, want_scores = _numpy_m3cvc(emb, table, lam1, lam2, threshold, 8)
    d = jax.jit(lambda e, m: m3cvc_select_table(e, m, cfg))(jnp.asarray(emb), jnp.asarray(table))
    np.testing.assert_allclose(np.asarray(d.score), want_scores, rtol=1e-5, atol=1e-6)
    assert keyframe_indices(d) == want_keys
    # Both terms carry weight in this sequence, and neither alone decides every frame.
    sem, mot = np.asarray(d.semantic)[1:], np.asarray(d.motion)[1:]
    assert (lam1 * sem).max() > 0.05 and (lam2 * mot).max() > 0.05
    assert 2 < len(want_keys) < t // 2
    swapped, _ = _numpy_m3cvc(emb, table, lam2, lam1, threshold, 8)
    assert swapped != want_keys  # the weights are not interchangeable here
    # The on-the-fly variant (motion as a function of the keyframe and the frame) decides the same.
    frames = jnp.arange(t, dtype=jnp.int32)
    d2 = m3cvc_select(jnp.asarray(emb), frames, lambda ref, n: jnp.asarray(table)[ref, n], cfg)
    assert keyframe_indices(d2) == want_keys
