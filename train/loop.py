"""The loop both trainers share: resume, step, log, checkpoint, progress bar.

Step `s` (0-based) uses the key `fold_in(train_key, s)` and the batch `batches[s]`, so a run resumed from
a checkpoint at step `s` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
from tqdm import tqdm

from m3cvc_jax import weights
from m3cvc_jax.errors import ConfigError
from train import sharding
from train.checkpointing import Checkpointer
from train.metrics_log import MetricsLog
from train.prefetch import prefetched

StepFn = Callable[[Any, Any, jax.Array], tuple[Any, dict]]


def train_key(seed: int) -> jax.Array:
    # Stream 1 of the seed; stream 0 initialises parameters.
    return jax.random.fold_in(jax.random.key(seed), 1)


def init_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 0)


def export_dir(workdir: str) -> str:
    """Where a trainer writes its final weights checkpoint."""
    return os.path.join(workdir, "export")


def save_export(workdir: str, **checkpoint) -> str:
    """Write the trainer's export (`weights.save_checkpoint` arguments); an export written by an earlier run
    in this workdir (a resumed or repeated run) is replaced, anything else there is refused."""
    return weights.save_checkpoint(export_dir(workdir), overwrite=True, **checkpoint)


def _check_export(directory: str) -> None:
    """An export folder may hold one checkpoint, or (trainers exporting several parts, e.g. motion_pretrain)
    only checkpoint sub-folders written by an earlier run; anything else is refused before training."""
    if os.path.isdir(directory) and not os.path.islink(directory):
        entries = [os.path.join(directory, e) for e in os.listdir(directory)]
        if entries and all(os.path.isdir(e) and weights.is_checkpoint_folder(e) for e in entries):
            return
    weights.check_checkpoint_destination(directory, overwrite=True)


def _restore_latest(config: Any, workdir: str, state: Any) -> Any:
    ckpt = Checkpointer(workdir, max_to_keep=config.get("max_to_keep", 3))
    try:
        step = ckpt.latest_step()
        if not step:
            raise ConfigError(f"export_only: {workdir} holds no checkpoint to export")
        return ckpt.restore(state, step)
    finally:
        ckpt.close()


def run(*, config: Any, workdir: str, state: Any, step_fn: StepFn, batches: Any, mesh,
        name: str) -> tuple[Any, list[dict]]:
    """Train from the latest checkpoint in `workdir` (or `state`) to `config.num_steps`.

    With `config.export_only` (the trainers' `--export_only` flag) the latest checkpoint is only restored
    (the caller then exports it): config.json, metrics.jsonl and the checkpoints are left as they are,
    since a live run may be writing them."""
    # before the training, so an export folder holding foreign files fails now, not after the last step
    _check_export(export_dir(workdir))
    if config.get("export_only", False):
        return _restore_latest(config, workdir, state), []
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2) if hasattr(config, "to_json_best_effort") else json.dumps(config))
    ckpt = Checkpointer(workdir, max_to_keep=config.get("max_to_keep", 3))
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(state)
    log = MetricsLog(workdir)
    log.truncate_after(start)
    key, rows = train_key(config.seed), []
    try:
        with tqdm(total=config.num_steps, initial=min(start, config.num_steps), desc=name,
                  disable=not config.get("progress", True)) as bar:
            steps = range(start, config.num_steps)
            # Batch s + 1 is read and placed on the devices while step s runs.
            fetched = prefetched(lambda s: sharding.put_batch(batches[s], mesh), steps)
            for step, batch in zip(steps, fetched):
                state, metrics = step_fn(state, batch, jax.random.fold_in(key, step))
                done = step + 1
                if done % config.log_every == 0 or done == config.num_steps:
                    rows.append(log.append(done, jax.device_get(metrics)))
                    bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}")
                if done % config.checkpoint_every == 0 or done == config.num_steps:
                    ckpt.save(done, state)
                bar.update()
    finally:
        ckpt.close()
    return state, rows
