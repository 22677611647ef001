"""Training of the learned index prior (`coding.entropy_model=learned`, `codec/index_prior.py`).

    python -m train.index_prior --config configs/index_prior.py --workdir runs/demo/prior        # demo weights
    python -m train.index_prior --config configs/index_prior.py:tiny --workdir /tmp/prior_tiny   # < 1 min

Variants: `demo` (the bundled demo weights, maps of the bundled clips not held out at 8 fps, paired 15
frames apart: the demo's keyframe interval), `tiny` (random tiny-preset weights, 16 frames of each clip).
`--config.weights=DIR` uses a `paper` weights folder instead (set `preset=paper`).
"""

from __future__ import annotations

import os

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.preset = "demo"  # codec preset whose post-encoder makes the maps
    c.weights = ""  # weights folder for preset paper
    c.weights_root = ""  # a folder laid out as the preset's own weights (e.g. a freshly packed demo), used instead
    c.clips_dir = os.path.join(REPO, "assets", "clips")
    # Clips the demo's weights never train on (assets/clips/README.md, "Held out"): comma-separated names.
    # The bundled prior of the earlier recipe was trained on bikes_4s.mp4 and carphone.mp4 (give "").
    c.exclude_clips = "bikes_4s.mp4"
    c.fps = 8.0
    c.max_frames = 0  # per clip; 0: all
    c.gap = 15  # frames between a map and its "previous keyframe" (the codec's keyframe interval)
    c.num_clusters = 16
    c.alpha = 4  # smoothing of the context counts towards the global cluster counts
    c.boost_grid = (0, 1, 2, 4, 8, 16)  # candidate "copy a neighbour" weights, sixteenths of a cluster's mass
    c.num_steps = 5  # one pass over the 33 maps of carphone.mp4 at 8 fps
    c.batch_size = 8
    c.log_every = 1
    c.checkpoint_every = 4
    c.max_to_keep = 2
    c.progress = True
    if arg == "demo":
        pass
    elif arg == "tiny":
        c.preset = "tiny"
        c.max_frames = 16
        c.gap = 8
        c.num_clusters = 8
        c.boost_grid = (0, 4, 16)
        c.num_steps = 4
        c.batch_size = 4
        c.checkpoint_every = 2
    else:
        raise ValueError(f"unknown variant {arg!r}; one of demo, tiny")
    return c
