"""What the reports show of a decode: a few frames as PNG and the whole clip as a browser-playable MP4.

Per sequence, `OUT/frames/<sequence>/grid/<name>_<frame>.png` holds frames spread evenly over the
sequence and `OUT/clips/<sequence>/<name>.mp4` the clip (H.264 High, yuv420p, index first: what every
browser plays from disk), where `<name>` is `original` or `<codec>_<rate point>`. The MP4 is a
near-lossless (CRF 12) copy for viewing only; every number in the reports comes from the real decode.
"""

from __future__ import annotations

import os

import numpy as np

from m3cvc_jax.io.video import Video, write_mp4

ORIGINAL = "original"
GRID_FRAMES = 4


def point_name(codec: str, rate_point) -> str:
    return f"{codec}_{rate_point}"


def grid_indices(num_frames: int) -> list[int]:
    """Frame indices of the grid: first, last and evenly between (fewer for short sequences)."""
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, min(GRID_FRAMES, num_frames))})


def clip_path(out: str, sequence: str, name: str) -> str:
    return os.path.join(out, "clips", sequence, f"{name}.mp4")


def frame_path(out: str, sequence: str, name: str, index: int) -> str:
    return os.path.join(out, "frames", sequence, "grid", f"{name}_{index:05d}.png")


def save(out: str, sequence: str, name: str, video: Video) -> None:
    """Write the grid frames and the playable clip of one decode (or of the original)."""
    from PIL import Image

    for i in grid_indices(len(video.frames)):
        path = frame_path(out, sequence, name, i)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp.png"
        Image.fromarray(np.asarray(video.frames[i], np.uint8)).save(tmp)
        os.replace(tmp, path)
    path = clip_path(out, sequence, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_mp4(path, video)
