"""Index-prior training: the integer tables of `coding.entropy_model=learned` (`codec/index_prior.py`).

    python -m train.index_prior --config configs/index_prior.py:tiny --workdir /tmp/prior_tiny
    python -m train.index_prior --config configs/index_prior.py --workdir runs/demo/prior   # the demo's

The training videos are encoded into VQ index maps with the given post-encoder weights (every frame at
`fps`); each map is paired with the map `gap` frames earlier (the previous keyframe at the codec's keyframe
interval; none for the first `gap` frames). The words are clustered by k-means on the codebook vectors
(numpy, seeded), then every step adds one batch of maps to the context counts. The logged `loss` is the
batch's code length in bits per index under the tables before the batch was added (a prequential rate:
what a coder trained on the earlier batches would have spent). At the end the "copy a neighbour" boosts
are chosen on the training maps from `boost_grid` (coordinate descent), and the post-encoder checkpoint is re-exported to
`<workdir>/export` with the prior's tables (so the weights fingerprint covers them).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from m3cvc_jax import weights
from m3cvc_jax.codec import index_prior
from m3cvc_jax.codec.index_prior import IndexPrior
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io.video import PreprocessConfig, load_video
from m3cvc_jax.pipelines import api
from m3cvc_jax.pipelines.models import FolderSource, Models
from m3cvc_jax.pipelines.settings import load_config
from train import cli, loop, sharding
from train.data import loader

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".y4m")


def kmeans_clusters(codebook: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    """Cluster id of every codeword (Lloyd's algorithm from `k` seeded distinct codewords)."""
    x = np.asarray(codebook, np.float64)
    if not 2 <= k <= min(index_prior.MAX_CLUSTERS, len(x)):
        raise ConfigError(f"num_clusters {k} outside [2, {min(index_prior.MAX_CLUSTERS, len(x))}]")
    centres = x[np.random.default_rng(seed).choice(len(x), k, replace=False)]
    for _ in range(iterations):
        assign = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            if np.any(assign == j):
                centres[j] = x[assign == j].mean(0)
    assign = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    # Renumber so that no cluster id is empty (an empty cluster would have no words to code).
    used = np.unique(assign)
    if len(used) < 2:
        raise ConfigError("the codebook's words fall into one cluster")
    return np.searchsorted(used, assign).astype(np.int64)


def training_maps(config) -> tuple[list[np.ndarray], np.ndarray, str]:
    """(index maps of every clip, (N, h, w) each, the codebook, the post-encoder directory or '')."""
    codec_cfg = load_config(config.preset, [f"weights={config.weights}"] if config.weights else [])
    models = Models(codec_cfg, FolderSource(config.weights_root) if config.weights_root else None)
    models.require(("sd-vae", "post-encoder"))
    params = {"codec": models.codec}
    excluded = {name.strip() for name in config.get("exclude_clips", "").split(",") if name.strip()}
    clips = sorted(f for f in os.listdir(config.clips_dir) if f.lower().endswith(VIDEO_SUFFIXES) and f not in excluded)
    if not clips:
        raise ConfigError(f"no videos in {config.clips_dir} (besides the excluded {', '.join(sorted(excluded))})")
    pre = PreprocessConfig(width=codec_cfg.video.width, height=codec_cfg.video.height, fps=config.fps,
                           max_frames=config.max_frames or None)
    maps = []
    for name in clips:
        frames = load_video(os.path.join(config.clips_dir, name), pre).frames
        images = np.asarray(frames, np.float32) / 127.5 - 1.0
        maps.append(np.concatenate([np.asarray(api.encode_keyframe_batch(params, images[i:i + 8]))
                                    for i in range(0, len(images), 8)]))
    codebook = np.asarray(models.codec.codebook.embedding.get_value(), np.float64)
    pe_dir = models.component_dir("post-encoder") if models.root is not None else ""
    return maps, codebook, pe_dir


def examples(maps: list[np.ndarray], gap: int) -> list[dict]:
    out = []
    for clip in maps:
        for t in range(len(clip)):
            has_prev = t >= gap
            out.append({"map": clip[t].astype(np.int32), "prev": clip[t - gap if has_prev else t].astype(np.int32),
                        "has_prev": np.asarray(has_prev)})
    return out


def _prior(clusters, cluster_counts, word_counts, config, boosts=(0, 0, 0)) -> IndexPrior:
    return IndexPrior(clusters, np.asarray(cluster_counts, np.int64), np.asarray(word_counts, np.int64),
                      int(config.alpha), tuple(int(b) for b in boosts))


def mean_bits(prior: IndexPrior, items) -> float:
    bits = count = 0
    for m, prev in items:
        bits += index_prior.ideal_bits(m, prev, prior)
        count += m.size
    return bits / count


def _pairs(batch) -> list:
    return [(m, p if h else None) for m, p, h in zip(np.asarray(batch["map"]), np.asarray(batch["prev"]),
                                                     np.asarray(batch["has_prev"]))]


def choose_boosts(cost, grid) -> tuple[int, int, int]:
    """Coordinate descent over the left, up and previous boosts (one pass, each from `grid`): 3 x len(grid)
    evaluations of `cost` instead of len(grid)**3."""
    best = [0, 0, 0]
    for i in range(3):
        best[i] = min((int(g) for g in grid), key=lambda g: (cost(tuple(best[:i] + [g] + best[i + 1:])), g))
    return tuple(best)


def train(config, workdir: str):
    """Run (or resume) prior training; returns (the exported prior, the metric rows logged by this call)."""
    for name in ("gap", "num_clusters", "alpha", "batch_size", "num_steps"):
        if not 1 <= int(config[name]) < 1 << 31:
            raise ConfigError(f"{name} = {config[name]} outside [1, 2**31)")
    maps, codebook, pe_dir = training_maps(config)
    clusters = kmeans_clusters(codebook, config.num_clusters, config.seed)
    c = int(clusters.max()) + 1
    data = examples(maps, config.gap)
    mesh = sharding.data_mesh(jax.devices()[:1])  # counting runs on the host; one device holds the state
    batches = loader.Batches(data, batch_size=config.batch_size, seed=config.seed)
    state = dict(step=np.zeros((), np.int32), cluster_counts=np.zeros(((c + 1) ** 3, c), np.int32),
                 word_counts=np.zeros(len(codebook), np.int32))

    def step_fn(state, batch, key):
        del key  # counting is deterministic
        counts, words = np.array(state["cluster_counts"]), np.array(state["word_counts"])
        pairs = _pairs(batch)
        loss = mean_bits(_prior(clusters, counts, words, config), pairs)
        for m, prev in pairs:
            ctx = index_prior.context_ids(m, prev, clusters, c).ravel()
            np.add.at(counts, (ctx, clusters[m.ravel()]), 1)
            np.add.at(words, m.ravel(), 1)
        return dict(step=state["step"] + 1, cluster_counts=counts, word_counts=words), dict(loss=loss)

    state, rows = loop.run(config=config, workdir=workdir, state=state, step_fn=step_fn, batches=batches,
                           mesh=mesh, name="index_prior")
    counts, words = np.asarray(state["cluster_counts"]), np.asarray(state["word_counts"])
    everything = [(d["map"], d["prev"] if d["has_prev"] else None) for d in data]
    prior = _prior(clusters, counts, words, config, choose_boosts(
        lambda b: mean_bits(_prior(clusters, counts, words, config, b), everything), config.boost_grid))
    loop.save_export(workdir, **export_checkpoint(prior, pe_dir, codebook))
    rows.append(loop_summary(workdir, prior, everything))
    return prior, rows


def loop_summary(workdir: str, prior: IndexPrior, items) -> dict:
    """Bits per index of the final tables on the training maps, written to `<workdir>/summary.json`."""
    import json

    summary = {"train_bits_per_index": mean_bits(prior, items), "boosts": list(prior.boosts),
               "num_clusters": prior.num_clusters}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def export_checkpoint(prior: IndexPrior, pe_dir: str, codebook: np.ndarray | None) -> dict:
    """`weights.save_checkpoint` arguments: the post-encoder checkpoint of `pe_dir` with the prior's tables
    added (its other tables kept).

    Random-weight presets (tiny) have no checkpoint to extend: the export then holds the codebook and the
    tables alone, for tests and benchmarks."""
    if pe_dir:
        meta, params = weights.load_checkpoint(pe_dir, family="keyframe-vq")
        tables = {k: v for k, v in meta.get("tables", {}).items() if k not in index_prior.TABLE_NAMES}
        return dict(family="keyframe-vq", config=meta["config"], params=params, tables={**tables, **prior.tables()})
    return dict(family="keyframe-vq", config={"codebook_size": len(codebook)},
                params={"codebook.embedding": codebook.astype(np.float32)}, tables=prior.tables())

if __name__ == "__main__":
    cli.main(train)
