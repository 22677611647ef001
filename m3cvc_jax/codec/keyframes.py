"""Keyframe selection (pure, jittable over precomputed or on-the-fly features).

Methods (`KeyframeConfig.method`):
  m3cvc     M3-CVC's sequential rule. With F_l the current keyframe, frame n scores
              D(F_n, F_l) = λ1·(1 − cos(v_n, v_l)) + λ2·m(F_l, F_n) − D_th
            (v = CLIP image embeddings, m = motion magnitude of the flow F_l -> F_n) and becomes the new
            keyframe when D > 0, which then replaces F_l for the frames after it. Frame 0 is always a
            keyframe, and a keyframe is forced when the clip from F_l to F_n would exceed
            `max_clip_length` frames (the video model's window; clip counted keyframe to keyframe,
            both included, so keyframes are at most max_clip_length − 1 frames apart).
  semantic  the same with λ2 = 0 (the paper's ablation); no flow is computed.
  cmvc      CMVC: the first and last frames, and in each uniform interval in between the frame least
            CLIP-similar to the previous keyframe (chosen in order, so "previous" is the one just picked).
            The interior frames 1..T−2 are split into ceil((T − 1) / interval) − 1 near-equal intervals,
            so keyframes are `interval` apart on average, like `fixed`.
  fixed     every `interval`-th frame from 0.

Motion magnitude m: the mean over pixels of the flow vector length, divided by the frame diagonal
sqrt(H² + W²) (so 0.01 = an average displacement of 1% of the diagonal), independent of resolution.

Everything returns a `Decision` of per-frame arrays (T static); `keyframe_indices` turns it into a list
on the host.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.codec.keyframe_config import KeyframeConfig
from m3cvc_jax.errors import ConfigError

F32 = jnp.float32


class Decision(NamedTuple):
    is_keyframe: jax.Array  # (T,) bool
    score: jax.Array  # (T,) D before forcing (NaN where not defined: fixed/cmvc, frame 0; see below)
    semantic: jax.Array  # (T,) 1 − cos against the reference keyframe at that time
    motion: jax.Array  # (T,) motion magnitude against the reference keyframe (0 when not used; see below)
    # With a flow network (`m3cvc_select_blocks`, the RAFT stage) frames whose decision needs no motion
    # (frame 0, forced keyframes, keyframes by the semantic term alone: `decided_without_motion`) get no
    # flow: their `motion` and `score` are NaN, "not computed"; they are keyframes.


def keyframe_indices(decision: Decision) -> list[int]:
    """Host side: the sorted keyframe positions."""
    return [int(i) for i in np.flatnonzero(np.asarray(decision.is_keyframe))]


def motion_magnitude(flow: jax.Array) -> jax.Array:
    """Mean flow length over pixels / frame diagonal, for flow `(..., H, W, 2)` -> `(...)`."""
    h, w = flow.shape[-3], flow.shape[-2]
    length = jnp.sqrt(jnp.sum(jnp.square(flow.astype(F32)), axis=-1))
    return jnp.mean(length, axis=(-2, -1)) / math.hypot(h, w)


def _cosine_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    a, b = a.astype(F32), b.astype(F32)
    cos = jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-12)
    return 1.0 - cos


def _rule(cfg: KeyframeConfig, lam2: float, n, last, sem, mot) -> tuple[jax.Array, jax.Array]:
    """Frame n's score D against keyframe `last`, and whether n is a keyframe (D > 0, or forced)."""
    score = cfg.lambda1 * sem + lam2 * mot - cfg.threshold
    forced = (n == 0) | (n - last >= cfg.max_clip_length - 1)
    return score, forced | (score > 0)


def _sequential(embeddings: jax.Array, payload: Any, motion: Callable[[Any, Any], jax.Array] | None,
                cfg: KeyframeConfig) -> Decision:
    """The M3-CVC scan. payload: per-frame pytree (frames, or indices into a table); the carry keeps the
    keyframe's embedding and payload, `motion(ref_payload, payload_n)` scores the pair."""
    lam2 = 0.0 if cfg.method == "semantic" else cfg.lambda2
    t = embeddings.shape[0]
    first = jax.tree.map(lambda x: x[0], payload)

    def step(carry, x):
        last, v_ref, p_ref = carry
        n, v_n, p_n = x
        sem = _cosine_distance(v_n, v_ref)
        mot = motion(p_ref, p_n).astype(F32) if (motion is not None and lam2 != 0) else jnp.zeros((), F32)
        score, key = _rule(cfg, lam2, n, last, sem, mot)
        new = jax.tree.map(lambda a, b: jnp.where(key, a, b), (n, v_n, p_n), (last, v_ref, p_ref))
        return new, (key, jnp.where(n == 0, jnp.nan, score), sem, mot)

    init = (jnp.zeros((), jnp.int32), embeddings[0], first)
    xs = (jnp.arange(t, dtype=jnp.int32), embeddings, payload)
    _, (key, score, sem, mot) = jax.lax.scan(step, init, xs)
    return Decision(key, score, sem, mot)


def m3cvc_select(embeddings: jax.Array, frames: Any, motion_fn: Callable[[Any, Any], jax.Array] | None,
                 cfg: KeyframeConfig) -> Decision:
    """M3-CVC / semantic selection with flow computed on the fly against the current keyframe.

    embeddings (T, D); frames: per-frame pytree with leading axis T (e.g. (T, H, W, 3) images, or cached
    per-frame flow features); motion_fn(ref, frame) -> scalar motion magnitude (e.g. RAFT + `motion_magnitude`).
    The motion function runs once per frame (T calls in one `lax.scan`); with λ2 = 0 it is not traced.
    """
    return _sequential(embeddings, frames, motion_fn, cfg)


def block_sizes(block: int) -> tuple[int, ...]:
    """The batch sizes `m3cvc_select_blocks` compiles: `block` and the powers of two below it."""
    return (block,) + tuple(2 ** k for k in range(block.bit_length() - 1, -1, -1) if 2 ** k < block)


def decided_without_motion(cfg: KeyframeConfig, lam2: float, n, last, sem) -> jax.Array:
    """Whether `_rule` makes frame n a keyframe whatever its motion: frame 0 (its own keyframe), a forced
    keyframe, and, when λ2 >= 0, a frame whose semantic term alone crosses the threshold. The motion is a
    mean length, never negative, so λ2·m only adds to D; float rounding is monotone, so λ1·sem > D_th
    implies (λ1·sem + λ2·m) − D_th > 0 as `_rule` rounds it. Every such frame is a keyframe."""
    forced = (n == 0) | (n - last >= cfg.max_clip_length - 1)
    if lam2 < 0:
        return forced
    return forced | (cfg.lambda1 * sem - cfg.threshold > 0)


def m3cvc_select_blocks(embeddings: jax.Array, cfg: KeyframeConfig, block: int,
                        reference: Callable[[jax.Array], Any],
                        motions: Callable[[Any, jax.Array], jax.Array]) -> tuple[Decision, jax.Array]:
    """`m3cvc_select`'s keyframes with the motion of up to `block` frames at a time against the current
    keyframe, and only of the frames whose decision needs it.

    Frames the rule decides without their motion (`decided_without_motion`: frame 0, forced keyframes,
    and with λ2 >= 0 those CLIP alone makes keyframes) get no flow: they are keyframes, their `motion` and
    `score` are NaN (not computed). Keyframes are rare, so the motion of the next frames up to the next
    such frame is computed in one batched call against the current keyframe (`reference(l)` prepares
    keyframe l once; `motions(ref, idx)` returns the magnitudes m(F_l, F_idx) of a static number of
    indices), in calls of the largest of `block_sizes(block)` that the frames left fill (each size is
    compiled once; no rounding up). The frames are then decided one by one as in the sequential scan; at
    a new keyframe the rest of the block is discarded and the next block starts after it, against the new
    keyframe. Decisions and magnitudes are those of the sequential scan up to the rounding of a batched
    network. Wasted work: the frames of a block after a keyframe that its motion made.

    Returns the decision and `calls` (T,) int32: the batch size of the motion call that started at each
    frame (0: none), what `block_schedule` lists.
    """
    lam2 = 0.0 if cfg.method == "semantic" else cfg.lambda2
    t = embeddings.shape[0]
    sizes = block_sizes(block)
    offsets = jnp.arange(block, dtype=jnp.int32)
    frames = jnp.arange(t, dtype=jnp.int32)

    def batch(size):
        def run(ref, n):
            idx = jnp.minimum(n + jnp.arange(size, dtype=jnp.int32), t - 1)
            return jnp.pad(motions(ref, idx).astype(F32), (0, block - size))
        return run

    def no_flow(ref, n):
        return jnp.full((block,), jnp.nan, F32)

    def body(carry):
        n, last, ref, out, calls = carry
        sem_all = _cosine_distance(embeddings, embeddings[last][None])
        free_all = decided_without_motion(cfg, lam2, frames, last, sem_all)
        stop = jnp.min(jnp.where((frames >= n) & free_all, frames, t))  # the next frame needing no flow
        left = jnp.minimum(stop - n, block)
        # Branch 0: frame n needs no flow; else the largest size the frames left fill.
        branch = jnp.where(left == 0, 0, jnp.sum(jnp.asarray(sizes) > left, dtype=jnp.int32) + 1)
        count = jnp.where(left == 0, 1, jnp.asarray((0,) + sizes)[branch])
        mot_block = jax.lax.switch(branch, [no_flow] + [batch(s) for s in sizes], ref, n)
        idx = n + offsets
        safe = jnp.minimum(idx, t - 1)

        def decide(c, x):
            last, open_ = c
            i, s, mot = x
            sem, free = sem_all[s], free_all[s]
            score, key = _rule(cfg, lam2, i, last, sem, mot)
            key = key | free  # a keyframe whatever its motion (NaN here: not computed)
            take = open_ & (i - n < count)
            new_key = take & key & (i != last)  # frame 0 is the keyframe it is compared against
            return (jnp.where(new_key, i, last), open_ & ~new_key), (take, key, jnp.where(free, jnp.nan, score),
                                                                      sem, jnp.where(free, jnp.nan, mot))

        (new_last, _), (take, key, score, sem, mot) = jax.lax.scan(decide, (last, jnp.bool_(True)),
                                                                    (idx, safe, mot_block))
        at = jnp.where(take, idx, t)  # frames not taken fall outside and are dropped
        out = Decision(*(o.at[at].set(v, mode="drop") for o, v in zip(out, (key, score, sem, mot))))
        ref = jax.lax.cond(new_last != last, lambda: reference(new_last), lambda: ref)
        calls = calls.at[n].set(jnp.where(left == 0, 0, count))
        return n + jnp.sum(take, dtype=jnp.int32), new_last, ref, out, calls

    zero = jnp.zeros((), jnp.int32)
    init_out = Decision(jnp.zeros((t,), bool), jnp.full((t,), jnp.nan, F32), jnp.zeros((t,), F32),
                        jnp.full((t,), jnp.nan, F32))
    init = (zero, zero, reference(zero), init_out, jnp.zeros((t,), jnp.int32))
    _, _, _, out, calls = jax.lax.while_loop(lambda c: c[0] < t, body, init)
    return out, calls


def block_schedule(calls: jax.Array) -> list[tuple[int, int]]:
    """Host side: the (first frame, batch size) of every batched motion call, from the `calls` that
    `m3cvc_select_blocks` returns (their sizes summed are the flows computed)."""
    calls = np.asarray(calls)
    return [(int(n), int(calls[n])) for n in np.flatnonzero(calls)]


def m3cvc_select_table(embeddings: jax.Array, motion_table: jax.Array, cfg: KeyframeConfig) -> Decision:
    """M3-CVC / semantic selection from a precomputed table `motion_table[l, n] = m(F_l, F_n)` (T, T)."""
    idx = jnp.arange(embeddings.shape[0], dtype=jnp.int32)
    return _sequential(embeddings, idx, lambda ref, n: motion_table[ref, n], cfg)


def _cmvc_intervals(t: int, interval: int) -> tuple[np.ndarray, np.ndarray]:
    """Static (K, L) frame indices of CMVC's interior intervals and their validity mask."""
    count = max(0, math.ceil((t - 1) / interval) - 1) if t > 2 else 0
    count = min(count, t - 2) if t > 2 else 0
    if count == 0:
        return np.zeros((0, 1), np.int32), np.zeros((0, 1), bool)
    edges = np.linspace(1, t - 1, count + 1).round().astype(int)  # interior frames 1..t-2 split evenly
    length = int(max(np.diff(edges)))
    idx = np.zeros((count, length), np.int32)
    valid = np.zeros((count, length), bool)
    for k in range(count):
        span = np.arange(edges[k], edges[k + 1])
        idx[k, :len(span)] = span
        valid[k, :len(span)] = True
    return idx, valid


def cmvc_select(embeddings: jax.Array, cfg: KeyframeConfig) -> Decision:
    """CMVC: first, last, and per uniform interval the frame least similar to the previous keyframe."""
    t = embeddings.shape[0]
    idx, valid = _cmvc_intervals(t, cfg.interval)
    key = jnp.zeros((t,), bool).at[0].set(True).at[t - 1].set(True)
    sem = jnp.zeros((t,), F32)
    if idx.shape[0]:
        def step(v_ref, x):
            frames, ok = x
            dist = _cosine_distance(embeddings[frames], v_ref[None])
            pick = frames[jnp.argmax(jnp.where(ok, dist, -jnp.inf))]
            return embeddings[pick], (pick, dist)

        _, (picks, dists) = jax.lax.scan(step, embeddings[0], (jnp.asarray(idx), jnp.asarray(valid)))
        key = key.at[picks].set(True)
        sem = sem.at[idx[valid]].set(dists[valid])  # static numpy mask: fine under jit
    nan = jnp.full((t,), jnp.nan, F32)
    return Decision(key, nan, sem, jnp.zeros((t,), F32))


def fixed_select(num_frames: int, cfg: KeyframeConfig) -> Decision:
    """Every `interval`-th frame, from frame 0."""
    key = (jnp.arange(num_frames) % cfg.interval) == 0
    zeros = jnp.zeros((num_frames,), F32)
    return Decision(key, jnp.full((num_frames,), jnp.nan, F32), zeros, zeros)


def select(embeddings: jax.Array, cfg: KeyframeConfig, *, frames: Any = None,
           motion_fn: Callable[[Any, Any], jax.Array] | None = None,
           motion_table: jax.Array | None = None) -> Decision:
    """Dispatch on `cfg.method`. m3cvc needs `motion_table`, or `frames` and `motion_fn` (unless λ2 = 0)."""
    if cfg.method == "fixed":
        return fixed_select(embeddings.shape[0], cfg)
    if cfg.method == "cmvc":
        return cmvc_select(embeddings, cfg)
    if cfg.uses_motion:
        if motion_table is not None:
            return m3cvc_select_table(embeddings, motion_table, cfg)
        if frames is None or motion_fn is None:
            raise ConfigError("keyframes.method=m3cvc with lambda2 != 0 needs a flow model (frames and motion_fn)")
    return m3cvc_select(embeddings, jnp.zeros((embeddings.shape[0],)) if frames is None else frames,
                        motion_fn, cfg)
