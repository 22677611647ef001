"""Bits per index of each entropy model on the bundled clips' keyframe maps, and the learned prior's ideal
code length vs its actual bytes.

    python -m benchmarks.index_coding              # demo weights (the shipped prior), then the tiny preset
    python -m benchmarks.index_coding --skip-tiny

Maps: every clip in assets/clips at 8 fps and the codec's frame size, encoded by the preset's post-encoder;
keyframes every 15 frames (the demo's interval: frames 0, 15, 30), each coded given the previous keyframe's
map as the codec does. Also "all frames": every frame's map, paired with the map 15 frames earlier.
Models: uniform (8 bits per index for 256 words), static (the word histogram stored with the weights),
adaptive (per-map KT counts), learned (the prior stored with the weights; for tiny, trained here by
`train.index_prior` with configs/index_prior.py:tiny). Bits are the real coded bytes x 8 (the 32-bit words
the range coder emits, without container overhead).

Caveat: the demo prior is trained on these same clips (as every demo weight is, docs/demo.md), so the demo
rows are in-sample; the trainer's logged loss (a prequential rate on batches not yet counted) is the
out-of-sample figure. The last line is `ratio=` learned (actual bytes, each clip's keyframe maps in one
payload as the codec writes them) / uniform 8-bit indices (8 bits per index) over the demo keyframes.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from m3cvc_jax.codec import entropy as ent
from m3cvc_jax.codec.index_prior import IndexPrior
from m3cvc_jax.pipelines import codec as pipeline
from m3cvc_jax.pipelines.models import Models
from m3cvc_jax.pipelines.settings import load_config

GAP = 15


def models_for(preset: str, prior: IndexPrior | None) -> list[ent.IndexModel]:
    config = load_config(preset, [])
    models = Models(config)
    size = models.codec_config.post_encoder.codebook_size
    out = [ent.IndexModel("uniform", size)]
    if models.root is not None:
        out.append(pipeline.index_model(config, models, "static"))
    out.append(ent.IndexModel("adaptive", size))
    out.append(pipeline.index_model(config, models, "learned") if prior is None
               else ent.IndexModel("learned", size, prior=prior))
    return out


def measure(name: str, pairs: list[tuple[np.ndarray, np.ndarray | None]], models: list[ent.IndexModel]) -> dict:
    n = sum(m.size for m, _ in pairs)
    result = {}
    for model in models:
        actual = sum(8 * len(ent.encode_indices(m, model, prev)) for m, prev in pairs)
        ideal = sum(ent.ideal_bits(m, model, prev) for m, prev in pairs)
        result[model.kind] = (actual / n, ideal / n)
        print(f"{name:>24} {model.kind:>9}: {actual / n:5.2f} bits/index actual, {ideal / n:5.2f} ideal"
              f"  ({actual / max(ideal, 1e-9):.4f} x ideal, {n} indices)")
    return result


def keyframe_pairs(maps: np.ndarray) -> list:
    keys = list(range(0, len(maps), GAP))
    return [(maps[k], maps[keys[i - 1]] if i else None) for i, k in enumerate(keys)]


def all_pairs(maps: np.ndarray) -> list:
    return [(maps[t], maps[t - GAP] if t >= GAP else None) for t in range(len(maps))]


def run(preset: str, prior: IndexPrior | None) -> dict:
    from configs.index_prior import get_config
    from train.index_prior import training_maps

    config = get_config("tiny" if preset == "tiny" else "demo")
    config.max_frames = 0
    config.exclude_clips = ""  # measured on every bundled clip, held-out ones included
    clip_maps = training_maps(config)[0]
    models = models_for(preset, prior)
    keyframes = [p for maps in clip_maps for p in keyframe_pairs(maps)]
    every = [p for maps in clip_maps for p in all_pairs(maps)]
    result = measure(f"{preset} keyframes", keyframes, models)
    # What the codec writes (container v2): each clip's keyframe maps in one range-coded payload.
    learned = models[-1]
    joint = [[maps[k] for k in range(0, len(maps), GAP)] for maps in clip_maps]
    bits = sum(8 * len(ent.encode_index_maps(kf, learned)) for kf in joint)
    n = sum(m.size for kf in joint for m in kf)
    result["learned-joint"] = (bits / n, result["learned"][1])
    print(f"{preset + ' keyframes':>24} {'learned':>9}: {bits / n:5.2f} bits/index actual, one payload per clip "
          f"({bits / n / result['learned'][1]:.4f} x ideal)")
    measure(f"{preset} all frames", every, models)
    return result


def tiny_prior() -> IndexPrior:
    from configs.index_prior import get_config
    from train.index_prior import train

    config = get_config("tiny")
    config.progress = False
    with tempfile.TemporaryDirectory() as workdir:
        return train(config, workdir)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tiny", action="store_true", help="only the demo weights")
    args = parser.parse_args()
    demo = run("demo", None)
    if not args.skip_tiny:
        run("tiny", tiny_prior())
    print(f"learned actual vs ideal (demo keyframes): {demo['learned'][0] / demo['learned'][1]:.4f} one payload "
          f"per map, {demo['learned-joint'][0] / demo['learned'][1]:.4f} one per clip (the codec's)")
    # Against plain 8-bit indices (log2 of the codebook size per index: the uniform model's ideal).
    print(f"ratio={demo['learned-joint'][0] / demo['uniform'][1]:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
