"""Qwen2-VL image/video preprocessing in numpy/jnp: smart resize, CLIP normalisation, patchify.

Output layout equals transformers' `Qwen2VLImageProcessor`/`Qwen2VLVideoProcessor`: rows are patches in
merge-block-major order, each flattened as (C, T, P, P); a still image is repeated over the temporal patch.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ProcessorConfig:
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    video_min_pixels: int = 128 * 28 * 28
    video_max_pixels: int = 28 * 28 * 768

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Nearest size with both sides multiples of `factor` and area within [min_pixels, max_pixels]."""
    if min(height, width) <= 0:
        raise ConfigError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ConfigError(f"aspect ratio must be below 200, got {height}x{width}")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def to_unit_range(frames: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """uint8 frames -> [0, 1]; float frames mapped from `value_range` (use (-1, 1) for network tensors)."""
    x = np.asarray(frames)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    lo, hi = value_range
    return (x.astype(np.float32) - lo) / (hi - lo)


def _resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic, antialiased when shrinking (what the reference's torchvision resize does), clipped to [0, 1]."""
    if frames.shape[-3:-1] == (h, w):
        return frames
    out = jax.image.resize(jnp.asarray(frames), (*frames.shape[:-3], h, w, frames.shape[-1]), "bicubic")
    return np.clip(np.asarray(out), 0.0, 1.0)


def _normalise(frames: np.ndarray) -> np.ndarray:
    return (frames - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)


def _patchify(frames: np.ndarray, cfg: ProcessorConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(T, H, W, C) with T a multiple of the temporal patch -> (gt*gh*gw, C*T*P*P), grid."""
    t, h, w, c = frames.shape
    tp, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    gt, gh, gw = t // tp, h // p, w // p
    x = frames.reshape(gt, tp, gh // m, m, p, gw // m, m, p, c)
    # -> (gt, gh/m, gw/m, m, m, C, T, P, P)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return np.ascontiguousarray(x.reshape(gt * gh * gw, c * tp * p * p)), (gt, gh, gw)


def process_image(image: np.ndarray, cfg: ProcessorConfig = ProcessorConfig(), *,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One RGB image `(H, W, 3)` -> (patches, grid (1, gh, gw))."""
    x = to_unit_range(image, value_range)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ConfigError(f"expected an RGB image (H, W, 3), got shape {x.shape}")
    h, w = smart_resize(x.shape[0], x.shape[1], cfg.factor, cfg.min_pixels, cfg.max_pixels)
    x = _normalise(_resize(x, h, w))
    return _patchify(np.repeat(x[None], cfg.temporal_patch_size, axis=0), cfg)


def process_video(frames: np.ndarray, cfg: ProcessorConfig = ProcessorConfig(), *,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Frames `(T, H, W, 3)` -> (patches, grid (ceil(T/2), gh, gw)); an odd count repeats the last frame."""
    x = to_unit_range(frames, value_range)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[0] < 1:
        raise ConfigError(f"expected RGB frames (T, H, W, 3), got shape {x.shape}")
    h, w = smart_resize(x.shape[1], x.shape[2], cfg.factor, cfg.video_min_pixels, cfg.video_max_pixels)
    x = _normalise(_resize(x, h, w))
    if pad := -x.shape[0] % cfg.temporal_patch_size:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0)
    return _patchify(x, cfg)
