"""Which decoded frames become training keyframes, and their descriptions.

Keyframes (`m3cvc_jax.codec.keyframes`): `interval` = its `fixed` method (every `interval`-th frame at the
target fps, no model needed); `semantic` = M3-CVC's rule with lambda2 = 0 (a new keyframe when
1 - cos(CLIP(F_n), CLIP(F_l)) exceeds the threshold, forced after `max_clip_length` frames), with CLIP
image embeddings from a converted CLIP checkpoint (`clip_weights`).
Descriptions: a captions JSON file (`{"video.mp4": "text"}` or `{"video.mp4": {"<frame>": "text", "*":
"default"}}`, keys by path relative to the folder or file name), else a describer of
`m3cvc_jax.lmm.describers` (`none` = empty text; `qwen2-vl` = the keyframe dialogue, with converted weights
in `describer_weights`).
"""

from __future__ import annotations

import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax import weights
from m3cvc_jax.codec import keyframes
from m3cvc_jax.lmm.describers import make_describer
from m3cvc_jax.nn import clip
from m3cvc_jax.errors import ConfigError

METHODS = ("interval", "semantic")


def select(frames: np.ndarray, *, method: str, interval: int, threshold: float, clip_weights: str,
           max_clip_length: int = 16) -> list[int]:
    """Keyframe positions among `frames` uint8 `(T, H, W, 3)`."""
    if method == "interval":
        cfg = keyframes.KeyframeConfig(method="fixed", interval=interval)
        return keyframes.keyframe_indices(keyframes.fixed_select(len(frames), cfg))
    if method == "semantic":
        if not clip_weights:
            raise ConfigError("keyframes=semantic needs clip_weights (a converted CLIP checkpoint folder)")
        cfg = keyframes.KeyframeConfig(method="semantic", lambda2=0.0, threshold=threshold,
                                       max_clip_length=max_clip_length)
        return keyframes.keyframe_indices(keyframes.select(clip_embeddings(frames, clip_weights), cfg))
    raise ConfigError(f"unknown keyframe method {method!r}; one of {', '.join(METHODS)}")


def clip_embeddings(frames: np.ndarray, clip_weights: str, chunk: int = 16) -> np.ndarray:
    model = weights.load_module(clip_weights, family="clip",
                                build=lambda cfg, rngs: clip.CLIPModel(clip.CLIPConfig.from_dict(cfg), rngs=rngs))
    embed = jax.jit(clip.image_embeddings)
    return np.concatenate([np.asarray(embed(model, jnp.asarray(frames[i:i + chunk])))
                           for i in range(0, len(frames), chunk)])


def captions_lookup(captions_file: str, root: str) -> Callable[[str, int], str | None]:
    """`(video path, frame index) -> text or None` from a captions JSON file."""
    if not captions_file:
        return lambda path, frame: None
    try:
        with open(captions_file, encoding="utf-8") as f:
            table = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read captions file {captions_file}: {e}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"captions file {captions_file} must hold a JSON object")

    def lookup(path: str, frame: int) -> str | None:
        entry = table.get(os.path.relpath(path, root), table.get(os.path.basename(path)))
        if isinstance(entry, dict):
            return entry.get(str(frame), entry.get("*"))
        return entry

    return lookup


def describer_fn(name: str, weights_dir: str = "") -> Callable[[np.ndarray, str], str]:
    """`(keyframe uint8, previous description) -> description`."""
    if name not in ("none", "qwen2-vl"):
        raise ConfigError(f"dataset describer must be 'none' or 'qwen2-vl' (or use a captions file), got {name!r}")
    describer = make_describer(name, weights_dir=weights_dir or None)
    return lambda frame, previous: describer.describe_keyframe(frame, previous or None)
