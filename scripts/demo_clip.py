"""Write the `demo` preset's CLIP: the tiny CLIP layout with deterministic random weights (seed 0).

    python scripts/demo_clip.py runs/demo/clip

Nothing here can train a CLIP; the demo only needs a fixed text encoder (the keyframe UNet and the video
model are trained on its embedding of the empty prompt) and keyframes chosen without CLIP features.
"""

from __future__ import annotations

import dataclasses
import sys

from m3cvc_jax.nn.clip import PRESETS, CLIPModel
from m3cvc_jax.random_weights import random_module
from m3cvc_jax.weights import flat_params, save_checkpoint


def main(dst: str, seed: int = 0) -> str:
    cfg = PRESETS["tiny"]
    model = random_module(lambda rngs: CLIPModel(cfg, rngs=rngs), seed, "clip")
    return save_checkpoint(dst, family="clip", config={"kind": "full", **dataclasses.asdict(cfg)},
                           params=flat_params(model))


if __name__ == "__main__":
    print(main(sys.argv[1]))
