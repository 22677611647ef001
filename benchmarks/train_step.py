"""Training-step throughput of the tiny configs (vq_pretrain, decoder_finetune) on this machine.

    python -m benchmarks.train_step

Reports compile time, steady-state steps/s and images/s of each jitted step, and the host time to fetch
and shard one batch (grain over the array_record dataset). Then the vq loop as the trainers run it, fetch
then step, without and with `train.prefetch` (batch s + 1 fetched on a thread while step s runs): the fetch
share is (loop time - step time) / loop time. Last line: ratio = the fetch share with prefetching (0: the
input pipeline is fully hidden; the share without prefetching is printed beside it).
"""

from __future__ import annotations

import tempfile
import time

import jax

from configs.decoder_finetune import get_config as ft_config
from configs.vq_pretrain import get_config as vq_config
from train import decoder_finetune, sharding, vq_pretrain
from train.prefetch import prefetched

STEPS = 10
LOOP_STEPS = 20


def measure(name, module, config, workdir):
    s = module.setup(config, workdir)
    state, key = s.state, jax.random.key(0)
    t = time.perf_counter()
    batch = sharding.put_batch(s.batches[0], s.mesh)
    fetch = time.perf_counter() - t
    t = time.perf_counter()
    state, m = s.step_fn(state, batch, key)
    jax.block_until_ready(m)
    first = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(STEPS):
        state, m = s.step_fn(state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(m)
    step = (time.perf_counter() - t) / STEPS
    b = config.batch_size
    print(f"{name:17s} {config.width}x{config.height} batch {b}: compile+first {first:6.2f} s, "
          f"{1 / step:6.2f} steps/s, {b / step:7.1f} images/s, batch fetch {fetch * 1e3:.1f} ms")
    return s, state, step, fetch


def loop_time(s, state, steps: int, prefetch: bool):
    """(seconds per step of `steps` steps over fresh batches fetched in line or ahead, the new state: the
    step donates its input state)."""
    key = jax.random.key(0)
    n = steps  # batches[s] wraps over epochs: any step has one

    def fetch(i):
        return sharding.put_batch(s.batches[i], s.mesh)

    batches = prefetched(fetch, range(n)) if prefetch else (fetch(i) for i in range(n))
    t = time.perf_counter()
    for i, batch in enumerate(batches):
        state, m = s.step_fn(state, batch, jax.random.fold_in(key, i))
        jax.block_until_ready(m)  # the trainers log metrics from the host, which waits like this
    return (time.perf_counter() - t) / n, state


def main():
    with tempfile.TemporaryDirectory() as tmp:
        vq_cfg = vq_config("tiny")
        vq_cfg.data.data_dir = f"{tmp}/data"
        ft_cfg = ft_config("tiny")
        ft_cfg.data.data_dir = f"{tmp}/data"
        vq_setup, vq_state, vq_step, vq_fetch = measure("vq_pretrain", vq_pretrain, vq_cfg, f"{tmp}/vq")
        measure("decoder_finetune", decoder_finetune, ft_cfg, f"{tmp}/ft")
        inline, vq_state = loop_time(vq_setup, vq_state, LOOP_STEPS, prefetch=False)
        ahead, vq_state = loop_time(vq_setup, vq_state, LOOP_STEPS, prefetch=True)
    share_inline = max(0.0, inline - vq_step) / inline
    share_ahead = max(0.0, ahead - vq_step) / ahead
    print(f"vq loop: {inline * 1e3:.1f} ms/step fetching in line (fetch share {share_inline:.1%}), "
          f"{ahead * 1e3:.1f} ms/step prefetched (fetch share {share_ahead:.1%}); step alone {vq_step * 1e3:.1f} ms")
    print(f"devices: {jax.device_count()} ({jax.devices()[0].platform})")
    print(f"ratio={share_ahead:.3f}")


if __name__ == "__main__":
    main()
