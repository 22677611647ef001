"""What both builders share: the builder config, the feature spec and the example generator."""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from train.data import frames as frames_lib
from train.data import keyframe_source


class KeyframeConfig(tfds.core.BuilderConfig):
    """Resolution, frame rate, keyframe rule and description source of a keyframe dataset."""

    def __init__(self, *, width: int = 512, height: int = 320, fps: float = 8.0, keyframes: str = "interval",
                 interval: int = 8, threshold: float = 0.15, max_clip_length: int = 16, clip_weights: str = "", captions: str = "",
                 describer: str = "none", describer_weights: str = "", max_frames: int = 0, name: str | None = None, **kw):
        settings = [width, height, fps, keyframes, interval, threshold, max_clip_length, clip_weights, captions,
                    describer, describer_weights, max_frames]
        # Every setting is in the name, so a dataset built with other settings is never silently reused.
        digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:8]
        name = name or f"{width}x{height}_{fps:g}fps_{keyframes}_{digest}"
        super().__init__(name=name, **kw)
        self.width, self.height, self.fps = width, height, fps
        self.keyframes, self.interval, self.threshold = keyframes, interval, threshold
        self.max_clip_length = max_clip_length
        self.clip_weights, self.captions, self.max_frames = clip_weights, captions, max_frames
        self.describer, self.describer_weights = describer, describer_weights


def features(cfg: KeyframeConfig) -> tfds.features.FeaturesDict:
    # Tensor (raw bytes), Text and Scalar read back without TensorFlow; Image/Video would need it.
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(cfg.height, cfg.width, 3), dtype=np.uint8),
        "text": tfds.features.Text(),
        "video": tfds.features.Text(),
        "frame": tfds.features.Scalar(dtype=np.int32),
    })


def examples(cfg: KeyframeConfig, videos: Iterable[str], root: str,
             caption: Callable[[str, int], str | None]) -> Iterator[tuple[str, dict]]:
    """(key, example) for every keyframe of every video; texts from `caption`, else the describer."""
    describe = None
    for path in videos:
        frames = frames_lib.read_frames(path, width=cfg.width, height=cfg.height, fps=cfg.fps,
                                        max_frames=cfg.max_frames)
        chosen = keyframe_source.select(frames, method=cfg.keyframes, interval=cfg.interval,
                                        threshold=cfg.threshold, clip_weights=cfg.clip_weights,
                                        max_clip_length=cfg.max_clip_length)
        name, previous = os.path.relpath(path, root), ""
        for i in chosen:
            text = caption(path, i)
            if text is None:
                # Built lazily: a captioned dataset never loads the LMM.
                describe = describe or keyframe_source.describer_fn(cfg.describer, cfg.describer_weights)
                text = describe(frames[i], previous)
            previous = text
            yield f"{name}#{i}", {"image": frames[i], "text": text, "video": name, "frame": i}
