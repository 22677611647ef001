"""The videos of a folder, decoded to the training resolution and frame rate by `m3cvc_jax.io.video`."""

from __future__ import annotations

import os

import numpy as np

from m3cvc_jax.errors import VideoError
from m3cvc_jax.io.video import PreprocessConfig, load_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".y4m")


def list_videos(folder: str) -> list[str]:
    """Video files under `folder` (recursive), sorted so a dataset build is reproducible."""
    if not os.path.isdir(folder):
        raise VideoError(f"video folder {folder} does not exist")
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.join(root, f) for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
    if not found:
        raise VideoError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {folder}")
    return sorted(found)


def read_frames(path: str, *, width: int, height: int, fps: float, max_frames: int = 0) -> np.ndarray:
    """uint8 `(T, height, width, 3)`: the paper's preprocessing (centre crop, resize, resample)."""
    cfg = PreprocessConfig(width=width, height=height, fps=fps, max_frames=max_frames or None)
    return load_video(path, cfg).frames
