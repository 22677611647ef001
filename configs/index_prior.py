"""Training of the learned index prior (`coding.entropy_model=learned`, `codec/index_prior.py`).

    python -m train.index_prior --config configs/index_prior.py:corpus --workdir runs/demo/prior   # demo weights
    python -m train.index_prior --config configs/index_prior.py:tiny --workdir /tmp/prior_tiny     # < 1 min

Variants: `corpus` (the default; the demo weights' maps of every video of the demo corpus's `train` split,
configs/demo/corpus.py: $M3CVC_CORPUS/train/videos, at 8 fps, paired 15 frames apart (the demo's keyframe
interval), one pass, the expert weights chosen on every 5th photograph's camera paths), `tiny` (random
tiny-preset weights, 16 frames of the bundled training clip). `--config.weights=DIR` uses a `paper`
weights folder instead (set `preset=paper`); `--config.clips_dir=DIR` another folder of videos.
"""

from __future__ import annotations

import os

import ml_collections

from configs.demo.corpus import video_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(arg: str = "corpus") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.preset = "demo"  # codec preset whose post-encoder makes the maps
    c.weights = ""  # weights folder for preset paper
    c.weights_root = ""  # a folder laid out as the preset's own weights (e.g. a freshly packed demo), used instead
    c.clips_dir = video_folder()  # read recursively
    c.exclude_clips = ""  # comma-separated file names left out
    c.fps = 8.0
    c.max_frames = 0  # per clip; 0: all
    c.gap = 15  # frames between a map and its "previous keyframe" (the codec's keyframe interval)
    # Pseudo-counts of the word distribution in each bigram, and cost units per bit: chosen by the validation
    # code length (docs/training.md 1b).
    c.alpha = 256.0
    c.scale = 32
    c.initial_weights = (0.7, 0.6, 0.6)  # left, up, previous: the prequential loss's, and the search's start
    c.weight_grid = tuple(i / 10 for i in range(13))
    c.validation_every = 5  # every 5th source (photograph) chooses the weights; 0: the training maps do
    c.num_steps = 0  # 0: one pass over the maps (ceil(maps / batch_size) steps)
    c.batch_size = 64
    c.log_every = 10
    c.checkpoint_every = 50
    c.max_to_keep = 2
    c.progress = True
    if arg == "corpus":
        pass
    elif arg == "tiny":
        c.preset = "tiny"
        c.clips_dir = os.path.join(REPO, "assets", "clips")
        c.exclude_clips = "bikes_4s.mp4"  # held out (assets/clips/README.md)
        c.max_frames = 16
        c.gap = 8
        c.alpha = 16.0
        c.weight_grid = (0.0, 0.5, 1.0)
        c.validation_every = 0
        c.num_steps = 4
        c.batch_size = 4
        c.log_every = 1
        c.checkpoint_every = 2
    else:
        raise ValueError(f"unknown variant {arg!r}; one of corpus, tiny")
    return c
