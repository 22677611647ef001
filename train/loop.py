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


def run(*, config: Any, workdir: str, state: Any, step_fn: StepFn, batches: Any, mesh,
        name: str) -> tuple[Any, list[dict]]:
    """Train from the latest checkpoint in `workdir` (or `state`) to `config.num_steps`."""
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
