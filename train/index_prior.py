"""Index-prior training: the integer tables of `coding.entropy_model=learned` (`codec/index_prior.py`).

    python -m train.index_prior --config configs/index_prior.py:tiny --workdir /tmp/prior_tiny
    python -m train.index_prior --config configs/index_prior.py:corpus --workdir runs/demo/prior   # the demo's

The training videos (every video under `clips_dir`, recursively) are encoded into VQ index maps with the
given post-encoder weights (every frame at `fps`); each map is paired with the map `gap` frames earlier
(the previous keyframe at the codec's keyframe interval; none for the first `gap` frames). Every step
adds one batch of maps to the counts: for each of the left, upper and previous words (or "none") the
counts of the word that follows it, and the words' own counts. The logged `loss` is the batch's code
length in bits per index under the tables of the counts before the batch (a prequential rate: what a
coder trained on the earlier batches would have spent), with the initial expert weights.

At the end the experts' weights (the exponents of the product of the three smoothed bigrams) are chosen
from `weight_grid` by coordinate descent on a validation part of the clips: every `validation_every`-th
source (the camera paths of one photograph are one source), its maps' counts subtracted from the tables
while it is scored, so the choice is made on maps the tables have not seen; the exported tables count
every map. The post-encoder checkpoint is re-exported to `<workdir>/export` with the prior's tables (so
the weights fingerprint covers them).
"""

from __future__ import annotations

import copy
import json
import os
import re

import jax
import numpy as np

from m3cvc_jax import weights
from m3cvc_jax.codec import index_prior
from m3cvc_jax.codec.index_prior import MAX_COST, NEIGHBOURS, IndexPrior
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io.video import PreprocessConfig, load_video
from m3cvc_jax.pipelines import api
from m3cvc_jax.pipelines.models import FolderSource, Models
from m3cvc_jax.pipelines.settings import load_config
from train import cli, loop, sharding

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m")


def video_files(root: str, excluded: set[str]) -> list[str]:
    """Every video under `root` (recursively, sorted, relative paths) whose file name is not excluded."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        out += [os.path.relpath(os.path.join(d, f), root) for f in sorted(files)
                if f.lower().endswith(VIDEO_SUFFIXES) and f not in excluded]
    return sorted(out)


def source_of(clip: str) -> str:
    """The clip's source: `photo_2.y4m` (camera path 2 across a photograph) -> `photo`."""
    return re.sub(r"_\d+$", "", os.path.splitext(clip)[0])


def map_encoder(config):
    """(a function video path -> its index maps (N, h, w) at `config.fps`, the codebook, the post-encoder
    directory or '') for the post-encoder the config names."""
    codec_cfg = load_config(config.preset, [f"weights={config.weights}"] if config.weights else [])
    models = Models(codec_cfg, FolderSource(config.weights_root) if config.weights_root else None)
    models.require(("sd-vae", "post-encoder"))
    params = {"codec": models.codec}
    pre = PreprocessConfig(width=codec_cfg.video.width, height=codec_cfg.video.height, fps=config.fps,
                           max_frames=config.max_frames or None)

    def maps_of(path: str) -> np.ndarray:
        images = np.asarray(load_video(path, pre).frames, np.float32) / 127.5 - 1.0
        return np.concatenate([np.asarray(api.encode_keyframe_batch(params, images[i:i + 8]))
                               for i in range(0, len(images), 8)])

    codebook = np.asarray(models.codec.codebook.embedding.get_value(), np.float64)
    return maps_of, codebook, models.component_dir("post-encoder") if models.root is not None else ""


def training_maps(config) -> tuple[list[tuple[str, np.ndarray]], np.ndarray, str]:
    """([(clip, its index maps (N, h, w))] of every video under `clips_dir`, the codebook, the post-encoder
    directory or '')."""
    excluded = {name.strip() for name in config.get("exclude_clips", "").split(",") if name.strip()}
    clips = video_files(config.clips_dir, excluded)
    if not clips:
        raise ConfigError(f"no videos in {config.clips_dir} (besides the excluded {', '.join(sorted(excluded))})")
    maps_of, codebook, pe_dir = map_encoder(config)
    return [(name, maps_of(os.path.join(config.clips_dir, name))) for name in clips], codebook, pe_dir


def examples(maps: list[np.ndarray], gap: int) -> list[dict]:
    out = []
    for clip in maps:
        for t in range(len(clip)):
            has_prev = t >= gap
            out.append({"map": clip[t].astype(np.int32), "prev": clip[t - gap if has_prev else t].astype(np.int32),
                        "has_prev": np.asarray(has_prev)})
    return out


class Passes:
    """`batches[step]`: the examples step*B .. (step+1)*B of one seeded permutation (the last batch of a pass
    short), so ceil(N / B) steps (`len`) count every map exactly once; later steps start another pass."""

    def __init__(self, data: list[dict], batch_size: int, seed: int):
        self.data, self.batch_size = data, batch_size
        self.order = np.random.default_rng(seed).permutation(len(data))

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __getitem__(self, step: int) -> dict:
        step %= len(self)
        items = [self.data[j] for j in self.order[step * self.batch_size:(step + 1) * self.batch_size]]
        return {k: np.stack([it[k] for it in items]) for k in items[0]}


def _pairs(batch) -> list:
    return [(m, p if h else None) for m, p, h in zip(np.asarray(batch["map"]), np.asarray(batch["prev"]),
                                                     np.asarray(batch["has_prev"]))]


def count(pairs, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts (3, K+1, K) of each word after each left / upper / previous word, row K for none; word
    counts (K,)) of (map, previous map or None) pairs."""
    counts, words = np.zeros((len(NEIGHBOURS), k + 1, k), np.int64), np.zeros(k, np.int64)
    for m, prev in pairs:
        x = np.asarray(m, np.int64).ravel()
        for i, w in enumerate(index_prior.context_words(m, prev)):
            np.add.at(counts[i], (np.where(w.ravel() < 0, k, w.ravel()), x), 1)
        np.add.at(words, x, 1)
    return counts, words


def build_prior(counts, words, expert_weights, alpha: float, scale: int) -> IndexPrior:
    """Integer cost tables of the product of experts `P(x)**(1 - sum w) * prod_n P(x | n)**w_n`, each
    bigram smoothed towards the word distribution with `alpha` pseudo-counts (floats here only: the
    rounded tables are the model)."""
    counts, words = np.asarray(counts, np.float64), np.asarray(words, np.float64)
    k = len(words)
    p0 = (words + 1) / (words.sum() + k)
    w = np.asarray(expert_weights, np.float64)
    logs = np.log2((counts + alpha * p0) / (counts.sum(-1, keepdims=True) + alpha))
    context = np.rint(-scale * w[:, None, None] * logs)
    base = np.rint(-scale * (1 - w.sum()) * np.log2(p0))
    context -= context.min(-1, keepdims=True)
    base -= base.min()
    return IndexPrior(np.minimum(base, MAX_COST - 1).astype(np.int64),
                      np.minimum(context, MAX_COST - 1).astype(np.int64), int(scale))


def mean_bits(prior: IndexPrior, items) -> float:
    bits = sum(index_prior.ideal_bits(m, prev, prior) for m, prev in items)
    return bits / sum(m.size for m, _ in items)


def choose_weights(cost, grid, start) -> tuple[float, ...]:
    """Two passes of coordinate descent over the experts' weights, each from `grid` (ties: the smaller)."""
    best = [float(s) for s in start]
    for _ in range(2):
        for i in range(len(best)):
            best[i] = min((float(g) for g in grid), key=lambda g: (cost(tuple(best[:i] + [g] + best[i + 1:])), g))
    return tuple(best)


def _validate(config) -> None:
    for name in ("gap", "batch_size", "scale"):
        if not 1 <= int(config[name]) < 1 << 31:
            raise ConfigError(f"{name} = {config[name]} outside [1, 2**31)")
    for name in ("num_steps", "validation_every"):
        if not 0 <= int(config[name]) < 1 << 31:
            raise ConfigError(f"{name} = {config[name]} outside [0, 2**31)")
    if not 0 < float(config.alpha) < 1e9 or not config.weight_grid or len(config.initial_weights) != len(NEIGHBOURS):
        raise ConfigError("alpha must be in (0, 1e9), weight_grid non-empty, initial_weights one per neighbour")
    if not all(0 <= float(g) <= 4 for g in (*config.weight_grid, *config.initial_weights)):
        raise ConfigError("expert weights must lie in [0, 4]")


def train(config, workdir: str):
    """Run (or resume) prior training; returns (the exported prior, the metric rows logged by this call)."""
    _validate(config)
    clips, codebook, pe_dir = training_maps(config)
    k = len(codebook)
    data = examples([m for _, m in clips], config.gap)
    batches = Passes(data, config.batch_size, config.seed)
    config = copy.deepcopy(config)
    config.num_steps = int(config.num_steps) or len(batches)  # 0: one pass over the maps
    mesh = sharding.data_mesh(jax.devices()[:1])  # counting runs on the host; one device holds the state
    state = dict(step=np.zeros((), np.int32), counts=np.zeros((len(NEIGHBOURS), k + 1, k), np.int32),
                 words=np.zeros(k, np.int32))

    def step_fn(state, batch, key):
        del key  # counting is deterministic
        pairs = _pairs(batch)
        loss = mean_bits(build_prior(state["counts"], state["words"], config.initial_weights, config.alpha,
                                     config.scale), pairs)
        counts, words = count(pairs, k)
        return dict(step=state["step"] + 1, counts=(np.asarray(state["counts"]) + counts).astype(np.int32),
                    words=(np.asarray(state["words"]) + words).astype(np.int32)), dict(loss=loss)

    state, rows = loop.run(config=config, workdir=workdir, state=state, step_fn=step_fn, batches=batches,
                           mesh=mesh, name="index_prior")
    counts, words = np.asarray(state["counts"], np.int64), np.asarray(state["words"], np.int64)
    every = [(d["map"], d["prev"] if d["has_prev"] else None) for d in data]
    held, chosen_on = validation_pairs(clips, config)
    if held:  # scored under the tables without their own counts
        held_counts, held_words = count(held, k)
        fit_counts, fit_words = counts - held_counts, words - held_words
    else:
        held, fit_counts, fit_words = every, counts, words
    expert_weights = choose_weights(
        lambda w: mean_bits(build_prior(fit_counts, fit_words, w, config.alpha, config.scale), held),
        config.weight_grid, config.initial_weights)
    prior = build_prior(counts, words, expert_weights, config.alpha, config.scale)
    loop.save_export(workdir, **export_checkpoint(prior, pe_dir, codebook))
    rows.append(summary(workdir, {
        "expert_weights": list(expert_weights), "weights_chosen_on": chosen_on, "training_maps": len(data),
        "counted_positions": int(words.sum()),
        "validation_bits_per_index": mean_bits(build_prior(fit_counts, fit_words, expert_weights, config.alpha,
                                                           config.scale), held),
        "train_bits_per_index": mean_bits(prior, every)}))
    return prior, rows


def validation_pairs(clips, config) -> tuple[list, str]:
    """The (map, previous) pairs of every `validation_every`-th source, and a description of them."""
    if not config.validation_every:
        return [], "the training maps (in-sample)"
    sources = sorted({source_of(name) for name, _ in clips})
    held = set(sources[::config.validation_every])
    maps = [m for name, m in clips if source_of(name) in held]
    if len(held) == len(sources):
        raise ConfigError("validation_every leaves no training source; give 0 to choose on the training maps")
    pairs = [(d["map"], d["prev"] if d["has_prev"] else None) for d in examples(maps, config.gap)]
    return pairs, f"{len(held)} of {len(sources)} sources ({len(maps)} clips), left out of the counts"


def summary(workdir: str, values: dict) -> dict:
    """The final figures, also written to `<workdir>/summary.json`."""
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(values, f, indent=2)
    return values


def export_checkpoint(prior: IndexPrior, pe_dir: str, codebook: np.ndarray | None) -> dict:
    """`weights.save_checkpoint` arguments: the post-encoder checkpoint of `pe_dir` with the prior's tables
    added (its other tables kept, an earlier prior's dropped).

    Random-weight presets (tiny) have no checkpoint to extend: the export then holds the codebook and the
    tables alone, for tests and benchmarks."""
    if pe_dir:
        meta, params = weights.load_checkpoint(pe_dir, family="keyframe-vq")
        tables = {k: v for k, v in meta.get("tables", {}).items() if not k.startswith("prior_")}
        return dict(family="keyframe-vq", config=meta["config"], params=params, tables={**tables, **prior.tables()})
    return dict(family="keyframe-vq", config={"codebook_size": len(codebook)},
                params={"codebook.embedding": codebook.astype(np.float32)}, tables=prior.tables())


if __name__ == "__main__":
    cli.main(train)
