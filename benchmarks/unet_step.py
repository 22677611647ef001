"""`python -m benchmarks.unet_step [--repeats N] [--height H --width W]`: one SD-shaped UNet forward,
jitted JAX against diffusers/PyTorch (best of 1 and 2 threads) with the same weights.

Reduced SD 1.x config: block widths 64/128/256/256, 2 layers per block, 8 heads, latent 40x64, text
77x256, batch 1 (DESIGN.md section 4 calibrates it: diffusers' old Flax UNet 1.27 s, PyTorch 0.45 s).
JAX and PyTorch (1 and 2 threads) run interleaved; prints medians and minima and
`ratio=jax/torch` (medians, torch at its best thread count) last. The CPU is shared by other jobs:
expect noise of tens of percent between runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CONFIG = dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2, cross_attention_dim=256,
              attention_head_dim=8, norm_num_groups=32,
              down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compiled_forward(model, *args):
    """(a no-argument timed call, the first output, compile + first-run seconds) of a jitted `model(*args)`."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, *a: nnx.merge(graphdef, state)(*a))
    inputs = [jnp.asarray(a) for a in args]
    t0 = time.perf_counter()
    out = forward(state, *inputs).block_until_ready()
    compile_s = time.perf_counter() - t0
    return (lambda: forward(state, *inputs).block_until_ready()), out, compile_s


def interleaved_runs(jax_fn, torch_fn, repeats: int) -> tuple[dict[str, list[float]], object]:
    """Wall times of `jax_fn` and of `torch_fn` at 1 and 2 threads, interleaved so that the shared CPU's
    load drifts affect every contender alike; and torch_fn's 1-thread output (the reference)."""
    import torch

    runs: dict[str, list[float]] = {"jax": [], "torch 1 thread": [], "torch 2 threads": []}
    with torch.inference_mode():
        for threads in (2, 1):  # warm-up at each thread count
            torch.set_num_threads(threads)
            want = torch_fn()
        for _ in range(repeats):
            runs["jax"].append(_timed(jax_fn))
            for threads in (1, 2):
                torch.set_num_threads(threads)
                runs[f"torch {threads} thread{'s' if threads > 1 else ''}"].append(_timed(torch_fn))
    return runs, want


def print_ratio(runs: dict[str, list[float]]) -> float:
    """Medians and minima, then `ratio=jax/best torch` (medians) as the last line."""
    for name, times in runs.items():
        print(f"{name}: median {statistics.median(times):.3f} s, min {min(times):.3f} s ({len(times)} runs)")
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = min((k for k in med if k != "jax"), key=med.get)
    ratio = med["jax"] / med[best]
    print(f"jax / best torch ({best}), medians:")
    print(f"ratio={ratio:.3f}")
    return ratio


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--height", type=int, default=40)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)

    import diffusers
    import torch

    from convert_weights.sd_unet import convert_params
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
    from m3cvc_jax.weights import assign_params

    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(**CONFIG).eval()
    cfg = UNetConfig.from_diffusers(dict(ref.config))
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    model = nnx.eval_shape(lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0)))
    assign_params(model, convert_params(cfg, sd, lambda k: k.replace("Conv2d_0.", "conv.")))
    n_params = sum(p.numel() for p in ref.parameters())

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, args.height, args.width, 4)).astype(np.float32)
    ctx = rng.normal(size=(1, 77, 256)).astype(np.float32)
    t = np.array([500.0], np.float32)

    run_jax, out, compile_s = compiled_forward(model, x, t, ctx)

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tt, ct = torch.from_numpy(t), torch.from_numpy(ctx)
    runs, want = interleaved_runs(run_jax,
                                  lambda: ref(xt, tt, ct).sample, args.repeats)
    diff = float(np.abs(np.asarray(out) - want.numpy().transpose(0, 2, 3, 1)).max())

    print(f"config: widths {CONFIG['block_out_channels']}, latent {args.height}x{args.width}, text 77x256, "
          f"{n_params / 1e6:.1f}M params, jax {jax.__version__}, torch {torch.__version__}")
    print(f"jax compile + first run: {compile_s:.1f} s; max |jax - torch| = {diff:.2e}")
    return print_ratio(runs)


if __name__ == "__main__":
    main()
