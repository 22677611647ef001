"""The research API: M3-CVC's stages as pure, jitted functions of the models (NNX modules are pytrees).

    from m3cvc_jax.pipelines import api
    from m3cvc_jax.pipelines.codec import Codec
    codec = Codec.load("tiny")
    params, spec = codec.params, codec.spec               # {"codec", "clip", "seine"} modules + settings
    idx = api.encode_keyframe(params, frame)              # (H, W, 3) in [-1, 1] -> (h, w) int32
    emb = api.encode_text(params, api.tokenize(["a red bike"]))[0]
    img = api.decode_keyframe(params, idx, emb, key, spec.keyframe)          # -> (H, W, 3)
    vid = api.reconstruct_clip(params, img, img2, emb, key, spec.clip, "interpolation", 16,
                               decoding=spec.clip_decoding)

Every function is pure and runs compiled programs with its settings static (`spec.keyframe`, `spec.clip`,
`spec.clip_decoding` are frozen and hashable; the schedulers inside are rebuilt from them), so calls with the same shapes and
settings compile once; they also work inside the caller's own `jax.jit`. The `*_batch` forms map over a
leading axis with `jax.vmap` (one key per item, so item i of a batch equals the single call with key i) and
can be sharded like any jitted function. The `Codec` (`pipelines/codec.py`) loads the models these take and
calls these same functions; see docs/api.md.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.decoders import keyframe as kd
from m3cvc_jax.decoders.keyframe_decoding import KeyframeDecoding
from m3cvc_jax.decoders.video import VideoReconstructionConfig, VideoReconstructor
from m3cvc_jax.decoders.video_decoding import VideoDecoding
from m3cvc_jax.nn import clip_tokenizer
from m3cvc_jax.nn import keyframe_codec as kc


@dataclasses.dataclass(frozen=True)
class Spec:
    """Static settings of a loaded model set: frame size, keyframe decoding, clip reconstruction (the
    decoder's shape `clip` and how it samples, `clip_decoding`)."""

    width: int
    height: int
    keyframe: KeyframeDecoding
    clip: VideoReconstructionConfig
    grid: tuple[int, int]
    codebook_size: int
    clip_decoding: VideoDecoding = VideoDecoding()


# ------------------------------------------------------------------------------------------- text


def tokenize(texts: str | Sequence[str]) -> np.ndarray:
    """Host side: CLIP token ids `(N, 77)`, padded with <|endoftext|> as Stable Diffusion 1.x does."""
    return clip_tokenizer.tokenize(texts)


@jax.jit
def encode_text(params, token_ids: jax.Array) -> jax.Array:
    """CLIP text hidden states `(N, 77, D)` (after the final layer norm): the UNets' cross-attention input."""
    return params["clip"].text_model(jnp.asarray(token_ids, jnp.int32)).last_hidden_state


# ------------------------------------------------------------------------------------------- keyframes


@jax.jit
def encode_keyframe(params, frame: jax.Array) -> jax.Array:
    """A frame `(H, W, 3)` in [-1, 1] -> its VQ index map `(H/p, W/p)` int32 (p pixels per index)."""
    return kc.encode_keyframe(params["codec"], jnp.asarray(frame, jnp.float32)[None])[0]


@jax.jit
def encode_keyframe_batch(params, frames: jax.Array) -> jax.Array:
    """`(B, H, W, 3)` -> `(B, h, w)`."""
    return kc.encode_keyframe(params["codec"], jnp.asarray(frames, jnp.float32))


@jax.jit
def keyframe_distances(params, frame: jax.Array) -> jax.Array:
    """A frame `(H, W, 3)` in [-1, 1] -> `(h, w, K)` squared distances of its post-encoder vectors to the
    codewords, per dimension: what `codec.index_rdo.rd_index_map` trades against the prior's bits."""
    return kc.keyframe_distances(params["codec"], jnp.asarray(frame, jnp.float32)[None])[0]


def empty_text(params) -> jax.Array:
    """Hidden states `(77, D)` of the empty prompt: the unconditional branch of guidance."""
    return encode_text(params, tokenize([""]))[0]


def _decode_keyframe(params, indices, text_emb, key, null_text_emb, decoding: KeyframeDecoding):
    codec = params["codec"]
    scheduler = kd.make_scheduler(decoding.steps, decoding.sampler)
    out = kd.decode_keyframe(codec, indices[None], text_emb[None], key, null_text_emb=null_text_emb[None],
                             scheduler=scheduler, guidance_scale=decoding.guidance_scale)
    return out[0]


_decode_keyframe_jit = jax.jit(_decode_keyframe, static_argnames=("decoding",))


@functools.partial(jax.jit, static_argnames=("decoding",))
def _decode_keyframe_batch_jit(params, indices, text_emb, keys, null_text_emb, decoding):
    return jax.vmap(lambda i, t, k: _decode_keyframe(params, i, t, k, null_text_emb, decoding))(indices, text_emb, keys)


def decode_keyframe(params, indices: jax.Array, text_emb: jax.Array, key: jax.Array,
                    decoding: KeyframeDecoding = KeyframeDecoding(), null_text_emb: jax.Array | None = None):
    """Index map `(h, w)` + description hidden states `(77, D)` -> frame `(H, W, 3)` in [-1, 1].

    Denoises from noise drawn with `key` (DDIM, guidance against `null_text_emb`, by default the empty
    prompt's hidden states), then decodes with the VAE. One compiled program per shape and `decoding`.
    """
    null = empty_text(params) if null_text_emb is None else null_text_emb
    return _decode_keyframe_jit(params, indices, text_emb, key, null, decoding=decoding)


def decode_keyframe_batch(params, indices: jax.Array, text_emb: jax.Array, keys: jax.Array,
                          decoding: KeyframeDecoding = KeyframeDecoding(), null_text_emb: jax.Array | None = None):
    """`(B, h, w)`, `(B, 77, D)`, keys `(B,)` -> `(B, H, W, 3)`; item i = `decode_keyframe(..., keys[i])`."""
    null = empty_text(params) if null_text_emb is None else null_text_emb
    return _decode_keyframe_batch_jit(params, indices, text_emb, keys, null, decoding=decoding)


# ------------------------------------------------------------------------------------------- clips


def reconstruct_clip(params, first: jax.Array, last: jax.Array | None, text_emb: jax.Array, key: jax.Array,
                     config, mode: str = "interpolation", num_frames: int = 16,
                     null_text_emb: jax.Array | None = None, *,
                     decoding: VideoDecoding = VideoDecoding()) -> jax.Array:
    """SEINE: `num_frames` frames `(N, H, W, 3)` in [-1, 1] from keyframe `first` (and `last` in
    interpolation mode; None in prediction mode), guided by the clip description `text_emb` `(77, D)`.

    config: a `VideoReconstructionConfig` (`spec.clip`); decoding: how SEINE samples (`spec.clip_decoding`;
    the default is SEINE's 250 DDPM steps at guidance 8). Clips longer than the window are chained over
    windows, each one jitted program (VAE encode, guided sampling, VAE decode) compiled once per shape.
    Pure: the output depends only on the arguments; works under `jax.jit`, `jax.vmap` and `jax.grad`.
    """
    null = empty_text(params) if null_text_emb is None else null_text_emb
    # Cheap to build: its jitted pieces are module-level, keyed on the networks' graphdefs and settings.
    recon = VideoReconstructor(params["seine"], params["codec"].vae, config)
    video = recon.clip(first[None], None if last is None else last[None], num_frames, mode, text_emb[None],
                       null[None], key, decoding)
    return video[0]


def reconstruct_clip_batch(params, first: jax.Array, last: jax.Array | None, text_emb: jax.Array, keys: jax.Array,
                           config, mode: str = "interpolation", num_frames: int = 16,
                           null_text_emb: jax.Array | None = None, *,
                           decoding: VideoDecoding = VideoDecoding()) -> jax.Array:
    """`(B, H, W, 3)` keyframes (and `last`), `(B, 77, D)` texts, keys `(B,)` -> `(B, N, H, W, 3)`;
    item i = `reconstruct_clip(..., keys[i])`."""
    null = empty_text(params) if null_text_emb is None else null_text_emb

    def one(f, l, t, k):
        return reconstruct_clip(params, f, l, t, k, config, mode, num_frames, null, decoding=decoding)

    return jax.vmap(one, in_axes=(0, None if last is None else 0, 0, 0))(first, last, text_emb, keys)
