"""Autoregressive generation for Qwen2-VL: jitted prefill, then a jitted `lax.while_loop` decode.

Shapes are static: the prompt is right-padded to a multiple of `length_bucket` and the KV cache is
preallocated for prompt + `max_new_tokens`, so a dialogue with prompts of varying length recompiles only
when a prompt crosses a bucket. Right padding is free: real tokens never attend to later slots (causal
mask), and decoding starts writing at the true prompt length, overwriting the padding.

A dialogue re-sends its whole history every turn. `generate(..., session=...)` keeps what the previous
call left in the KV cache (its prompt and answer) and prefills only the tokens after the longest common
prefix with the new prompt, so the image or video and every earlier turn are encoded once per dialogue.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.qwen2_vl import KVCache, Qwen2VLForConditionalGeneration, get_rope_index


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 = greedy. top_k 0 and top_p 1 disable those filters (applied in HF's order)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop_tokens: tuple[int, ...] = ()
    pad_token: int = 0  # written after a row has stopped

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ConfigError(
                f"bad sampling options: temperature={self.temperature} top_k={self.top_k} top_p={self.top_p}"
            )


def select_tokens(logits: jax.Array, key: jax.Array, s: SamplingConfig) -> jax.Array:
    """logits `(B, V)` -> token ids `(B,)`: argmax when greedy, else filtered categorical sampling."""
    if s.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / s.temperature
    neg = jnp.finfo(jnp.float32).min
    if s.top_k:
        kth = jax.lax.top_k(logits, min(s.top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if s.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
        drop_sorted = before > s.top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, neg, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass
class GenerationOutput:
    tokens: np.ndarray  # (B, n) generated ids, pad after a stop token
    lengths: np.ndarray  # (B,) generated tokens per row, the stop token included
    prompt_length: int
    prefilled: int = 0  # prompt tokens run through the model (fewer than prompt_length when a session was reused)
    session: "Session | None" = None  # what the cache holds now, for the next turn (batch 1 only)


@dataclasses.dataclass(frozen=True)
class Session:
    """A single-row KV cache after a generation: `ids` are the tokens whose keys and values fill its first
    `len(ids)` slots; `vision` identifies the pixels their placeholders were given."""

    ids: np.ndarray
    vision: tuple
    cache: KVCache


def _vision_key(*arrays) -> tuple:
    return tuple(None if a is None else (np.shape(a), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())
                 for a in arrays)


class Generator:
    """Holds a model split into (graphdef, state) and the two jitted phases."""

    def __init__(self, model: Qwen2VLForConditionalGeneration, *, length_bucket: int = 64):
        self.graphdef, self.state = nnx.split(model)
        self.cfg = model.cfg
        self.dtype = model.dtype
        self.length_bucket = length_bucket
        self._prefill = jax.jit(
            self._prefill_impl, static_argnames=("image_grid_thw", "video_grid_thw", "max_len", "sampling")
        )
        self._decode = jax.jit(self._decode_impl, static_argnames=("sampling",))
        self._extend = jax.jit(self._extend_impl, static_argnames=("sampling",))

    def _prefill_impl(self, state, ids, positions, valid, true_len, pixel_values, pixel_values_videos, key,
                      *, image_grid_thw, video_grid_thw, max_len, sampling):
        model = nnx.merge(self.graphdef, state)
        b = ids.shape[0]
        x = model.embed(
            ids, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
        )
        cache = KVCache.empty(self.cfg.text, b, max_len, self.dtype)
        hidden, cache = model.model.language_model(x, positions, attention_mask=valid, cache=cache)
        last = jax.lax.dynamic_index_in_dim(hidden, true_len - 1, axis=1, keepdims=False)
        logits = model.logits(last)
        cache = cache.replace(end=true_len)
        first = select_tokens(logits, jax.random.fold_in(key, 0), sampling)
        return first, cache, logits

    def _decode_impl(self, state, first, cache, base_pos, valid, key, *, sampling):
        model = nnx.merge(self.graphdef, state)
        b, n = first.shape[0], sampling.max_new_tokens
        stops = jnp.asarray(sampling.stop_tokens or (-1,), jnp.int32)
        tokens = jnp.full((b, n), sampling.pad_token, jnp.int32).at[:, 0].set(first)
        done = jnp.isin(first, stops)

        def cond(carry):
            i, _, _, _, done = carry
            return jnp.logical_and(i < n, jnp.logical_not(jnp.all(done)))

        def body(carry):
            i, tokens, last, cache, done = carry
            pos = jnp.broadcast_to((base_pos + i - 1)[None, :, None], (3, b, 1))
            logits, cache = model(last[:, None], pos, attention_mask=valid, cache=cache)
            tok = select_tokens(logits[:, 0], jax.random.fold_in(key, i), sampling)
            tok = jnp.where(done, sampling.pad_token, tok)
            tokens = tokens.at[:, i].set(tok)
            done = jnp.logical_or(done, jnp.isin(tok, stops))
            return i + 1, tokens, tok, cache, done

        i, tokens, _, cache, done = jax.lax.while_loop(cond, body, (jnp.int32(1), tokens, first, cache, done))
        return tokens, i, cache

    def _extend_impl(self, state, cache, ids, positions, valid, true_len, key, *, sampling):
        # A text-only continuation of a cached prefix: the new tokens are written from `cache.end` on.
        model = nnx.merge(self.graphdef, state)
        x = model.model.language_model.embed_tokens(ids).astype(self.dtype)
        hidden, cache = model.model.language_model(x, positions, attention_mask=valid, cache=cache)
        last = jax.lax.dynamic_index_in_dim(hidden, true_len - 1, axis=1, keepdims=False)
        logits = model.logits(last)
        cache = cache.replace(end=cache.end - ids.shape[1] + true_len)
        first = select_tokens(logits, jax.random.fold_in(key, 0), sampling)
        return first, cache, logits

    def prepare(self, input_ids, *, attention_mask=None, image_grid_thw=None, video_grid_thw=None,
                max_new_tokens: int = 64) -> dict[str, Any]:
        """Host-side inputs of the two phases: padded ids, rotary positions, key mask, sizes."""
        image_grid_thw, video_grid_thw = _grid(image_grid_thw), _grid(video_grid_thw)
        ids = np.asarray(input_ids, np.int32)
        if ids.ndim != 2:
            raise ConfigError(f"input_ids must be (batch, length), got shape {ids.shape}")
        b, l = ids.shape
        mask = np.ones((b, l), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        positions, deltas = get_rope_index(
            ids, self.cfg, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw, attention_mask=mask
        )
        bucket = self.length_bucket
        padded = -(-l // bucket) * bucket
        max_len = -(-(padded + max_new_tokens) // bucket) * bucket
        ids_p = np.zeros((b, padded), np.int32)
        ids_p[:, :l] = ids
        pos_p = np.zeros((3, b, padded), np.int32)
        pos_p[:, :, :l] = positions
        valid = np.ones((b, max_len), bool)
        valid[:, :l] = mask
        # The next token's position on every axis: one past the prompt's largest position.
        base_pos = (mask.sum(-1) + deltas[:, 0]).astype(np.int32)
        return dict(ids=ids_p, positions=pos_p, valid=valid, true_len=l, max_len=max_len, base_pos=base_pos,
                    image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw)

    def prefill(self, p: dict[str, Any], sampling: SamplingConfig, key: jax.Array, *, pixel_values=None,
                pixel_values_videos=None) -> tuple[jax.Array, KVCache]:
        """Phase 1 on `prepare`'s output: the prompt through the model -> (first new token, filled cache)."""
        first, cache, _ = self._prefill(
            self.state, p["ids"], p["positions"], p["valid"], jnp.int32(p["true_len"]),
            _opt(pixel_values), _opt(pixel_values_videos), key,
            image_grid_thw=p["image_grid_thw"], video_grid_thw=p["video_grid_thw"], max_len=p["max_len"],
            sampling=sampling,
        )
        return first, cache

    def decode(self, p: dict[str, Any], first: jax.Array, cache: KVCache, sampling: SamplingConfig,
               key: jax.Array) -> tuple[jax.Array, jax.Array, KVCache]:
        """Phase 2: the jitted while-loop -> (tokens `(B, max_new_tokens)`, number of steps run, cache)."""
        return self._decode(self.state, first, cache, p["base_pos"], p["valid"], key, sampling=sampling)

    def _reusable(self, session: Session | None, ids: np.ndarray, vision: tuple) -> int:
        """How many leading prompt tokens `session` already holds (0: prefill everything)."""
        if session is None or ids.shape[0] != 1 or session.vision != vision:
            return 0
        prompt, held = ids[0], session.ids
        n = min(len(held), len(prompt) - 1)  # at least one token must run to give the next-token logits
        lcp = int(np.argmin(np.concatenate([held[:n] == prompt[:n], [False]])))
        # Vision features are written over their placeholders only by a full prefill.
        vision_ids = (self.cfg.image_token_id, self.cfg.video_token_id)
        return 0 if np.isin(prompt[lcp:], vision_ids).any() else lcp

    def _extend_prefill(self, session: Session, reuse: int, p: dict[str, Any], sampling: SamplingConfig,
                        key: jax.Array) -> tuple[jax.Array, KVCache, jax.Array, dict[str, Any]]:
        """(first new token, cache, its logits, `p` with the key mask of the grown cache)."""
        bucket, l = self.length_bucket, p["true_len"]
        n = l - reuse
        padded = -(-n // bucket) * bucket
        max_len = -(-(reuse + padded + sampling.max_new_tokens) // bucket) * bucket
        old = session.cache
        have = old.keys[0].shape[1]
        if have < max_len:  # grow the buffers; the held slots keep their place
            def grow(a):
                return jnp.zeros((a.shape[0], max_len, *a.shape[2:]), a.dtype).at[:, :have].set(a)
            old = KVCache(keys=tuple(map(grow, old.keys)), values=tuple(map(grow, old.values)), end=old.end)
        cache = old.replace(end=jnp.int32(reuse))
        cap = cache.keys[0].shape[1]
        ids = np.zeros((1, padded), np.int32)
        ids[:, :n] = p["ids"][:, reuse:l]
        pos = np.zeros((3, 1, padded), np.int32)
        pos[:, :, :n] = p["positions"][:, :, reuse:l]
        valid = np.ones((1, cap), bool)
        first, cache, logits = self._extend(self.state, cache, ids, pos, valid, jnp.int32(n), key, sampling=sampling)
        return first, cache, logits, {**p, "valid": valid}

    def generate(
        self,
        input_ids,
        *,
        sampling: SamplingConfig = SamplingConfig(),
        key: jax.Array | None = None,
        attention_mask=None,
        pixel_values=None,
        image_grid_thw=None,
        pixel_values_videos=None,
        video_grid_thw=None,
        session: Session | None = None,
    ) -> GenerationOutput:
        """Prompt `(B, L)` (left-padded if rows differ, with attention_mask) -> generated tokens.

        Sampling needs `key` (explicit randomness); greedy ignores it. `session`: the previous turn's
        `GenerationOutput.session` (batch 1): its cached prefix is reused when the prompt extends it with
        the same pixels; otherwise everything is prefilled as without it.
        """
        if sampling.temperature > 0 and key is None:
            raise ConfigError("sampling with temperature > 0 needs an explicit PRNG key")
        key = jax.random.key(0) if key is None else key
        p = self.prepare(input_ids, attention_mask=attention_mask, image_grid_thw=image_grid_thw,
                         video_grid_thw=video_grid_thw, max_new_tokens=sampling.max_new_tokens)
        ids = np.asarray(input_ids, np.int32)
        vision = _vision_key(pixel_values, pixel_values_videos, p["image_grid_thw"], p["video_grid_thw"])
        reuse = self._reusable(session, ids, vision) if attention_mask is None else 0
        if reuse:
            first, cache, _, p = self._extend_prefill(session, reuse, p, sampling, key)
        else:
            first, cache = self.prefill(p, sampling, key, pixel_values=pixel_values,
                                        pixel_values_videos=pixel_values_videos)
        tokens, n, cache = self.decode(p, first, cache, sampling, key)
        tokens = np.asarray(tokens)[:, : int(n)]
        # The last sampled token is never fed back: the cache holds the prompt and all answer tokens but it.
        held = Session(np.concatenate([ids[0], tokens[0, : int(n) - 1]]), vision, cache) if ids.shape[0] == 1 else None
        return GenerationOutput(tokens=tokens, lengths=_lengths(tokens, sampling.stop_tokens),
                                prompt_length=p["true_len"], prefilled=p["true_len"] - reuse, session=held)


def _grid(grid) -> tuple[tuple[int, int, int], ...] | None:
    if grid is None:
        return None
    return tuple(tuple(int(v) for v in g) for g in np.asarray(grid).reshape(-1, 3))


def _opt(x):
    return None if x is None else jnp.asarray(x)


def _lengths(tokens: np.ndarray, stops: tuple[int, ...]) -> np.ndarray:
    out = np.full(tokens.shape[0], tokens.shape[1])
    for row in range(tokens.shape[0]):
        hits = np.nonzero(np.isin(tokens[row], stops))[0] if stops else []
        if len(hits):
            out[row] = hits[0] + 1
    return out
