"""Qwen2-VL chat format and model inputs, as the reference chat template and processor produce them.

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n
    <|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n
    <|im_start|>assistant\n

Each `<|image_pad|>` / `<|video_pad|>` is then repeated once per merged vision token (grid t*h*w / 4), and
`mm_token_type_ids` marks them (1 image, 2 video), which transformers 5 needs for multimodal positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.lmm.processor import ProcessorConfig, process_image, process_video

DEFAULT_SYSTEM = "You are a helpful assistant."
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"


def format_chat(messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool = True,
                default_system: str = DEFAULT_SYSTEM) -> str:
    """Messages `{"role", "content": str | [{"type": "image"|"video"|"text", "text": ...}]}` -> prompt text."""
    out = []
    for i, msg in enumerate(messages):
        if i == 0 and msg["role"] != "system":
            out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
        content = msg["content"]
        if isinstance(content, str):
            body = content
        else:
            parts = []
            for item in content:
                kind = item.get("type")
                if kind == "image":
                    parts.append(IMAGE)
                elif kind == "video":
                    parts.append(VIDEO)
                elif kind == "text":
                    parts.append(item["text"])
                else:
                    raise ConfigError(f"unknown message content type {kind!r}")
            body = "".join(parts)
        out.append(f"<|im_start|>{msg['role']}\n{body}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def build_inputs(
    tokenizer,
    messages: Sequence[dict[str, Any]],
    *,
    images: Sequence[np.ndarray] = (),
    videos: Sequence[np.ndarray] = (),
    processor: ProcessorConfig = ProcessorConfig(),
    value_range: tuple[float, float] = (0.0, 1.0),
    image_token_id: int | None = None,
    video_token_id: int | None = None,
) -> dict[str, Any]:
    """Token ids `(1, L)` with expanded placeholders, patches, grids and `mm_token_type_ids`."""
    image_id = image_token_id if image_token_id is not None else tokenizer.token_to_id("<|image_pad|>")
    video_id = video_token_id if video_token_id is not None else tokenizer.token_to_id("<|video_pad|>")
    ids = tokenizer.encode(format_chat(messages))
    out: dict[str, Any] = {"pixel_values": None, "image_grid_thw": None,
                           "pixel_values_videos": None, "video_grid_thw": None}
    merge = processor.merge_size**2
    expanded: dict[int, list[int]] = {}
    for name, items, fn, token in (("image", images, process_image, image_id),
                                   ("video", videos, process_video, video_id)):
        n_slots = ids.count(token)
        if n_slots != len(items):
            raise ConfigError(f"the messages have {n_slots} {name} slots but {len(items)} {name}s were given")
        if not items:
            continue
        done = [fn(x, processor, value_range=value_range) for x in items]
        key = "pixel_values" if name == "image" else "pixel_values_videos"
        out[key] = np.concatenate([p for p, _ in done], 0)
        out[f"{name}_grid_thw"] = tuple(g for _, g in done)
        expanded[token] = [int(np.prod(g)) // merge for _, g in done]
    counters = {t: iter(v) for t, v in expanded.items()}
    final: list[int] = []
    for t in ids:
        final.extend([t] * next(counters[t]) if t in counters else [t])
    input_ids = np.asarray([final], np.int32)
    out["input_ids"] = input_ids
    out["mm_token_type_ids"] = np.where(input_ids == image_id, 1, np.where(input_ids == video_id, 2, 0))
    return out
