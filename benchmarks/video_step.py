"""One SEINE denoising step (B=1, T=16, latent 40x64, CFG batch of 2) with a reduced-width UNet:
our jitted JAX step against the PyTorch reference code, wall time and peak memory.

    python -m benchmarks.video_step [--seine PATH --seine-python PYTHON] [--repeats N]

The reference needs a checkout of Vchitect/SEINE and a Python that can import it (torch 2.13,
diffusers 0.15, rotary-embedding-torch 0.3.5, ...; see tests/fixtures/seine/make_golden.py); they can
also come from the SEINE_SRC / SEINE_PYTHON environment variables. Without them only JAX is measured.
Both sides use the same config (`VideoUNetConfig.reduced()`: 64/128/256/256 channels, SD layout,
768-wide text of 77 tokens) and random weights; a step is the guided UNet call on [cond; uncond] plus
the DDPM update. PyTorch runs in a subprocess at 1 and 2 threads and its best time is compared.
Peak memory: growth of the process's peak RSS during the timed steps (weights already resident); for
JAX also XLA's planned buffer sizes. The last line is `ratio=<JAX time / best PyTorch time>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

B, T, LAT_H, LAT_W, TEXT_LEN = 1, 16, 40, 64, 77


def rss_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def bench_jax(repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from m3cvc_jax.diffusion.guidance import CFGCond, guided
    from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
    from m3cvc_jax.decoders.video import SeineCond, seine_model_fn, seine_scheduler
    from m3cvc_jax.random_weights import random_module

    cfg = VideoUNetConfig.reduced()
    unet = random_module(lambda r: VideoUNet(cfg, rngs=r), 0, "seine")
    graphdef, state = nnx.split(unet)
    n_params = sum(x.size for x in jax.tree.leaves(state))
    model_fn = guided(seine_model_fn(graphdef))
    scheduler = seine_scheduler("ddpm", 250)

    def step(state, x, cond, i, noise):
        t = jnp.broadcast_to(scheduler.timesteps[i], (x.shape[0],))
        eps = model_fn(state, x, t, cond)
        return scheduler.step(i, x, eps, noise)[0]

    k = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(k[0], (B, T, LAT_H, LAT_W, 4))
    mask = jnp.ones((B, T, LAT_H, LAT_W, 1)).at[:, 0].set(0)
    masked = jax.random.normal(k[1], (B, T, LAT_H, LAT_W, 4)) * (1 - mask)
    text, null = (jax.random.normal(kk, (B, TEXT_LEN, cfg.cross_attention_dim)) for kk in k[2:4])
    cond = CFGCond(SeineCond(text, mask, masked), SeineCond(null, mask, masked), jnp.float32(8.0))
    noise = jax.random.normal(k[4], x.shape)

    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(state, x, cond, 10, noise).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    compiled(state, x, cond, 10, noise).block_until_ready()  # first run
    reset_peak()
    before = rss_mb("VmRSS")
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        compiled(state, x, cond, r, noise).block_until_ready()
        times.append(time.perf_counter() - t0)
    out = {"params": int(n_params), "compile_s": compile_s, "times": times, "peak_growth_mb": rss_mb() - before}
    if mem is not None:
        out["xla_temp_mb"] = mem.temp_size_in_bytes / 2**20
        out["xla_args_mb"] = mem.argument_size_in_bytes / 2**20
    return out


TORCH_SCRIPT = r"""
import json, sys, time, types
import torch
threads, repeats, seine = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
sys.path.insert(0, seine)
tb = types.ModuleType("torch.utils.tensorboard"); tb.SummaryWriter = object
sys.modules.setdefault("torch.utils.tensorboard", tb)
from diffusion import create_diffusion
from models.unet import UNet3DConditionModel

def rss(field="VmHWM"):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

cfg = json.loads(sys.argv[4])
B, T, H, W, L = cfg.pop("shape")
torch.manual_seed(0)
model = UNet3DConditionModel(**cfg).eval()
diffusion = create_diffusion("250")
x = torch.randn(2 * B, 4, T, H, W)
mask = torch.ones(2 * B, 1, T, H, W); mask[:, :, 0] = 0
x_start = torch.randn(2 * B, 4, T, H, W) * (mask == 0)
text = torch.randn(2 * B, L, cfg["cross_attention_dim"])
kw = dict(encoder_hidden_states=text, class_labels=None, cfg_scale=8.0, use_fp16=False)

def step(i):
    t = torch.tensor([i] * 2 * B)
    return diffusion.p_sample(model.forward_with_cfg, x, t, clip_denoised=False, model_kwargs=kw,
                              mask=mask, x_start=x_start, use_concat=True)["sample"]

with torch.no_grad():
    step(10)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = rss("VmRSS")
    times = []
    for r in range(repeats):
        t0 = time.perf_counter(); step(r); times.append(time.perf_counter() - t0)
print(json.dumps({"threads": threads, "times": times, "peak_growth_mb": rss() - before,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def torch_config() -> dict:
    from m3cvc_jax.nn.video_unet import VideoUNetConfig

    c = VideoUNetConfig.reduced()
    return dict(in_channels=c.in_channels, out_channels=c.out_channels, block_out_channels=list(c.block_out_channels),
                down_block_types=list(c.down_block_types), up_block_types=list(c.up_block_types),
                layers_per_block=c.layers_per_block, attention_head_dim=list(c.num_heads),
                cross_attention_dim=c.cross_attention_dim, norm_num_groups=c.norm_num_groups,
                shape=[B, T, LAT_H, LAT_W, TEXT_LEN])


def bench_torch(python: str, seine: str, threads: int, repeats: int) -> dict:
    proc = subprocess.run([python, "-c", TORCH_SCRIPT, str(threads), str(repeats), seine, json.dumps(torch_config())],
                          capture_output=True, text=True, cwd=seine)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seine", default=os.environ.get("SEINE_SRC"), help="checkout of Vchitect/SEINE")
    parser.add_argument("--seine-python", default=os.environ.get("SEINE_PYTHON"),
                        help="python that can import the SEINE code")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"SEINE step: B={B} T={T} latent {LAT_H}x{LAT_W}, CFG batch {2 * B}, text {TEXT_LEN} tokens, reduced UNet")
    j = bench_jax(args.repeats)
    jt = statistics.median(j["times"])
    print(f"jax      params {j['params'] / 1e6:.1f}M  compile {j['compile_s']:.1f} s  step median {jt:.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in j['times'])})  peak RSS growth {j['peak_growth_mb']:.0f} MB"
          + (f"  XLA temp {j['xla_temp_mb']:.0f} MB, args {j['xla_args_mb']:.0f} MB" if "xla_temp_mb" in j else ""))
    if not (args.seine and args.seine_python):
        print("pytorch  not measured: pass --seine PATH and --seine-python PYTHON (or SEINE_SRC / SEINE_PYTHON)")
        print("ratio=nan")
        return
    best = None
    for threads in (1, 2):
        try:
            r = bench_torch(args.seine_python, args.seine, threads, args.repeats)
        except RuntimeError as e:
            print(f"pytorch  {threads} thread(s): failed: {e}")
            continue
        rt = statistics.median(r["times"])
        print(f"pytorch  {threads} thread(s)  params {r['params'] / 1e6:.1f}M  step median {rt:.3f} s "
              f"(runs {', '.join(f'{t:.3f}' for t in r['times'])})  peak RSS growth {r['peak_growth_mb']:.0f} MB")
        if best is None or rt < best:
            best = rt
    if best is None:
        print("ratio=nan")
        return
    print(f"jax / best pytorch step time: {jt / best:.2f} (below 1: JAX faster)")
    print(f"ratio={jt / best:.3f}")


if __name__ == "__main__":
    main()
