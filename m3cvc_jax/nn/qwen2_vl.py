"""Qwen2-VL (vision encoder + Qwen2 decoder + LM head) in Flax NNX, with config presets.

Mirrors transformers 5's `Qwen2VLForConditionalGeneration`: parameters live under `model.visual`,
`model.language_model` and `lm_head` (absent when the embeddings are tied), so a converted checkpoint's
keys read like the reference's. Multimodal rotary positions (`get_rope_index`) depend on the token ids
and the image/video grids only, so they are computed on the host in numpy.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.qwen2_vl_text import KVCache, Qwen2VLTextConfig, Qwen2VLTextModel
from m3cvc_jax.nn.qwen2_vl_vision import Grid, Qwen2VisionTransformer, Qwen2VLVisionConfig

__all__ = [
    "KVCache", "Qwen2VLConfig", "Qwen2VLTextConfig", "Qwen2VLVisionConfig", "Qwen2VLForConditionalGeneration",
    "get_rope_index", "mm_token_type_ids", "text_position_ids",
]


@dataclasses.dataclass(frozen=True)
class Qwen2VLConfig:
    text: Qwen2VLTextConfig = Qwen2VLTextConfig()
    vision: Qwen2VLVisionConfig = Qwen2VLVisionConfig()
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int = 151643
    eos_token_id: int = 151645
    tie_word_embeddings: bool = False

    @classmethod
    def preset(cls, name: str) -> "Qwen2VLConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown Qwen2-VL preset {name!r}; one of {', '.join(PRESETS)}")
        return PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Qwen2VLConfig":
        """Inverse of `dataclasses.asdict` (what a converted checkpoint stores)."""
        d = dict(d)
        text = dict(d.pop("text", {}))
        if "mrope_section" in text:
            text["mrope_section"] = tuple(text["mrope_section"])
        return cls(text=Qwen2VLTextConfig(**text), vision=Qwen2VLVisionConfig(**d.pop("vision", {})), **d)

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> "Qwen2VLConfig":
        """From a transformers `config.json` (nested `text_config`, or the flat layout of hub checkpoints)."""
        text_src = dict(hf.get("text_config") or hf)
        rope = text_src.get("rope_parameters") or text_src.get("rope_scaling") or hf.get("rope_scaling") or {}
        theta = rope.get("rope_theta", text_src.get("rope_theta", hf.get("rope_theta", 1000000.0)))
        text = Qwen2VLTextConfig(
            vocab_size=text_src["vocab_size"],
            hidden_size=text_src["hidden_size"],
            intermediate_size=text_src["intermediate_size"],
            num_hidden_layers=text_src["num_hidden_layers"],
            num_attention_heads=text_src["num_attention_heads"],
            num_key_value_heads=text_src.get("num_key_value_heads") or text_src["num_attention_heads"],
            rms_norm_eps=text_src.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            mrope_section=tuple(rope.get("mrope_section", (16, 24, 24))),
            hidden_act=text_src.get("hidden_act", "silu"),
        )
        v = dict(hf.get("vision_config") or {})
        vrope = v.get("rope_parameters") or {}
        vision = Qwen2VLVisionConfig(
            depth=v.get("depth", 32),
            embed_dim=v.get("embed_dim", 1280),
            hidden_size=v.get("hidden_size", text.hidden_size),
            hidden_act=v.get("hidden_act", "quick_gelu"),
            mlp_ratio=float(v.get("mlp_ratio", 4)),
            num_heads=v.get("num_heads", 16),
            in_channels=v.get("in_channels", v.get("in_chans", 3)),
            patch_size=v.get("patch_size", 14),
            spatial_merge_size=v.get("spatial_merge_size", 2),
            temporal_patch_size=v.get("temporal_patch_size", 2),
            rope_theta=float(vrope.get("rope_theta", 10000.0)),
        )
        eos = hf.get("eos_token_id", text_src.get("eos_token_id", 151645))
        tie = hf.get("tie_word_embeddings", False) or text_src.get("tie_word_embeddings", False)
        return cls(
            text=text,
            vision=vision,
            image_token_id=hf.get("image_token_id", 151655),
            video_token_id=hf.get("video_token_id", 151656),
            vision_start_token_id=hf.get("vision_start_token_id", 151652),
            vision_end_token_id=hf.get("vision_end_token_id", 151653),
            bos_token_id=hf.get("bos_token_id", text_src.get("bos_token_id", 151643)) or 151643,
            eos_token_id=eos[0] if isinstance(eos, (list, tuple)) else eos,
            tie_word_embeddings=bool(tie),
        )


PRESETS: dict[str, Qwen2VLConfig] = {
    # Random weights, real Qwen2 token ids (so the real tokenizer drives it): tests and the `tiny` codec preset.
    "tiny": Qwen2VLConfig(
        text=Qwen2VLTextConfig(
            vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, mrope_section=(2, 3, 3),
        ),
        vision=Qwen2VLVisionConfig(depth=2, embed_dim=32, hidden_size=64, num_heads=2),
        tie_word_embeddings=True,
    ),
    # Qwen/Qwen2-VL-2B-Instruct.
    "2b": Qwen2VLConfig(
        text=Qwen2VLTextConfig(
            vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
            num_attention_heads=12, num_key_value_heads=2,
        ),
        vision=Qwen2VLVisionConfig(hidden_size=1536),
        tie_word_embeddings=True,
    ),
    # Qwen/Qwen2-VL-7B-Instruct.
    "7b": Qwen2VLConfig(
        text=Qwen2VLTextConfig(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4,
        ),
        vision=Qwen2VLVisionConfig(hidden_size=3584),
    ),
}


class Qwen2VLModel(nnx.Module):
    def __init__(self, cfg: Qwen2VLConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        self.visual = Qwen2VisionTransformer(cfg.vision, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.language_model = Qwen2VLTextModel(cfg.text, rngs=rngs, dtype=dtype, param_dtype=param_dtype)


class Qwen2VLForConditionalGeneration(nnx.Module):
    def __init__(self, cfg: Qwen2VLConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        self.model = Qwen2VLModel(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        if not cfg.tie_word_embeddings:
            self.lm_head = nnx.Linear(
                cfg.text.hidden_size, cfg.text.vocab_size, use_bias=False,
                dtype=dtype, param_dtype=param_dtype, rngs=rngs,
            )
        self.cfg, self.dtype = cfg, dtype

    def embed(
        self,
        input_ids: jax.Array,
        *,
        pixel_values: jax.Array | None = None,
        image_grid_thw: Grid | None = None,
        pixel_values_videos: jax.Array | None = None,
        video_grid_thw: Grid | None = None,
    ) -> jax.Array:
        """Token embeddings with the vision features written over the image/video placeholder tokens."""
        x = self.model.language_model.embed_tokens(input_ids).astype(self.dtype)
        for pixels, grid, token in (
            (pixel_values, image_grid_thw, self.cfg.image_token_id),
            (pixel_values_videos, video_grid_thw, self.cfg.video_token_id),
        ):
            if pixels is None:
                continue
            feats = self.model.visual(pixels, grid).astype(x.dtype)
            # Placeholders take the features in reading order (batch-major), like masked_scatter.
            is_tok = (input_ids == token).reshape(-1)
            idx = jnp.clip(jnp.cumsum(is_tok) - 1, 0, feats.shape[0] - 1)
            flat = jnp.where(is_tok[:, None], feats[idx], x.reshape(-1, x.shape[-1]))
            x = flat.reshape(x.shape)
        return x

    def logits(self, hidden: jax.Array) -> jax.Array:
        if self.cfg.tie_word_embeddings:
            table = self.model.language_model.embed_tokens.embedding[...].astype(self.dtype)
            return jnp.einsum("...h,vh->...v", hidden.astype(self.dtype), table)
        return self.lm_head(hidden)

    def __call__(
        self,
        input_ids: jax.Array,
        position_ids: jax.Array | None = None,
        *,
        pixel_values: jax.Array | None = None,
        image_grid_thw: Grid | None = None,
        pixel_values_videos: jax.Array | None = None,
        video_grid_thw: Grid | None = None,
        attention_mask: jax.Array | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        """input_ids `(B, L)` -> logits `(B, L, V)` (or `(B, 1, V)` with last_only) and the updated cache.

        position_ids `(3, B, L)` from `get_rope_index`; without it (and without vision inputs) plain
        text positions counting from the cache end are used.
        """
        if position_ids is None:
            if image_grid_thw is not None or video_grid_thw is not None:
                position_ids, _ = get_rope_index(
                    np.asarray(input_ids), self.cfg,
                    image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                    attention_mask=None if attention_mask is None else np.asarray(attention_mask),
                )
            else:
                start = 0 if cache is None else cache.end
                position_ids = text_position_ids(input_ids.shape, start)
        x = self.embed(
            input_ids, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
        )
        hidden, cache = self.model.language_model(
            x, jnp.asarray(position_ids), attention_mask=attention_mask, cache=cache
        )
        if last_only:
            hidden = hidden[:, -1:]
        return self.logits(hidden), cache


def text_position_ids(shape: Sequence[int], start: Any = 0) -> jax.Array:
    """`(3, B, L)` positions `start, start+1, ...` on all three axes (text-only input)."""
    b, l = shape
    pos = jnp.arange(l)[None, :] + start
    return jnp.broadcast_to(pos, (3, b, l))


def mm_token_type_ids(input_ids: np.ndarray, cfg: Qwen2VLConfig) -> np.ndarray:
    """0 text, 1 image placeholder, 2 video placeholder — what transformers 5's processor returns."""
    ids = np.asarray(input_ids)
    return np.where(ids == cfg.image_token_id, 1, np.where(ids == cfg.video_token_id, 2, 0)).astype(np.int32)


def get_rope_index(
    input_ids: np.ndarray,
    cfg: Qwen2VLConfig,
    *,
    image_grid_thw: Grid | None = None,
    video_grid_thw: Grid | None = None,
    attention_mask: np.ndarray | None = None,
    token_types: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multimodal rotary positions `(3, B, L)` and per-row deltas `(B, 1)` (transformers 5.23 semantics).

    Text runs count up on all axes; a vision run of grid (t, h, w) gets (t, h/m, w/m) coordinates offset
    by the running position, which then advances by max(h, w)/m. Decode positions are
    `step + delta` on every axis. Padding (attention_mask 0) gets position 0.
    """
    ids = np.asarray(input_ids)
    types = mm_token_type_ids(ids, cfg) if token_types is None else np.asarray(token_types)
    merge = cfg.vision.spatial_merge_size
    grids = {1: iter(image_grid_thw or ()), 2: iter(video_grid_thw or ())}
    b, l = ids.shape
    positions = np.zeros((3, b, l), np.int64)
    deltas = np.zeros((b, 1), np.int64)
    for row in range(b):
        keep = np.ones(l, bool) if attention_mask is None else np.asarray(attention_mask[row]).astype(bool)
        row_types = types[row][keep]
        parts, current = [], 0
        start = 0
        for kind, group in itertools.groupby(row_types.tolist()):
            n = len(list(group))
            if kind == 0:
                parts.append(np.broadcast_to(np.arange(n) + current, (3, n)))
                current += n
            else:
                try:
                    t, h, w = (int(v) for v in next(grids[kind]))
                except StopIteration:
                    raise ConfigError("more image/video placeholder runs than grids given") from None
                gh, gw = h // merge, w // merge
                tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
                vis = np.stack([tt, hh, ww]).reshape(3, -1) + current
                if vis.shape[1] != n:
                    raise ConfigError(f"a vision run has {n} placeholder tokens but its grid needs {vis.shape[1]}")
                parts.append(vis)
                current += max(h, w) // merge
            start += n
        pos = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), np.int64)
        positions[:, row, keep] = pos
        deltas[row, 0] = (pos.max() + 1 if pos.size else 0) - int(keep.sum())
    return positions, deltas
