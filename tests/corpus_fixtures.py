"""A tiny corpus for tests: two generated pictures (one held out by the split rule) and one short clip."""

import os
from fractions import Fraction

import numpy as np
from PIL import Image

from m3cvc_jax.io.video import Video, write_mp4
from train.data import corpus_build

SETTINGS = corpus_build.Settings(seed=3, heldout_fraction=0.5, clips_per_photo=2, clip_frames=9, clip_fps=8,
                                 clip_width=64, clip_height=40, work_side=160)


def picture(w, h, phase):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(x / 40.0 + phase)
    g = 127 + 120 * np.cos(y / 30.0 - phase)
    b = 255 * (x + y) / (w + h)
    return np.stack([r, g, b], -1).astype(np.uint8)


def make_sources(folder) -> list:
    out = []
    for i, (w, h) in enumerate([(400, 260), (300, 420)]):
        p = os.path.join(folder, f"pic{i}.png")
        Image.fromarray(picture(w, h, i)).save(p)
        out.append(corpus_build.Source(p, f"pic{i}.png", "photo", "test-backgrounds", "1.0", "CC0-1.0",
                                       f"/usr/share/backgrounds/pic{i}.png"))
    frames = np.stack([picture(96, 64, 0.2 * t) for t in range(12)])
    clip = os.path.join(folder, "clip.mp4")
    write_mp4(clip, Video(frames, Fraction(8)))
    out.append(corpus_build.Source(clip, "clip.mp4", "clip", "test-video", "0.1", "BSD-3-Clause",
                                   "data/clip.mp4", split="train"))
    return out
