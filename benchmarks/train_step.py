"""Training-step throughput of the tiny configs (vq_pretrain, decoder_finetune) on this machine.

    python -m benchmarks.train_step

Reports compile time, steady-state steps/s and images/s of each jitted step, and the host time to fetch
and shard one batch (grain over the array_record dataset). Last line: ratio = batch fetch time / vq step
time, i.e. how much the input pipeline would add if it were not overlapped.
"""

from __future__ import annotations

import tempfile
import time

import jax

from configs.decoder_finetune import get_config as ft_config
from configs.vq_pretrain import get_config as vq_config
from train import decoder_finetune, sharding, vq_pretrain

STEPS = 10


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
    return step, fetch


def main():
    with tempfile.TemporaryDirectory() as tmp:
        vq_cfg = vq_config("tiny")
        vq_cfg.data.data_dir = f"{tmp}/data"
        ft_cfg = ft_config("tiny")
        ft_cfg.data.data_dir = f"{tmp}/data"
        vq_step, vq_fetch = measure("vq_pretrain", vq_pretrain, vq_cfg, f"{tmp}/vq")
        measure("decoder_finetune", decoder_finetune, ft_cfg, f"{tmp}/ft")
    print(f"devices: {jax.device_count()} ({jax.devices()[0].platform})")
    print(f"ratio={vq_fetch / vq_step:.3f}")


if __name__ == "__main__":
    main()
