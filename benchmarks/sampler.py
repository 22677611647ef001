"""Per-step overhead of the sampler: 50 DDPM steps with classifier-free guidance in one jitted `lax.scan`
against the same 50 steps dispatched one by one as a jitted step function (the usual Python loop).

    python -m benchmarks.sampler                 # small conv net and a small SD UNet
    python -m benchmarks.sampler --model conv    # only the conv net (seconds)

Prints compile times (scan, single step) and run times (best of --repeats); the last line is
`ratio = scan / dispatched` for the last model measured (< 1: the scan removes per-step overhead).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.diffusion import guidance
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.sampler import sample
from m3cvc_jax.diffusion.schedules import NoiseSchedule

STEPS = 50


class ConvNet(nnx.Module):
    """Three 3x3 convolutions with a timestep and condition bias: little compute per step, so dispatch
    overhead would show."""

    def __init__(self, channels: int, width: int, cond_dim: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, width, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(width, width, (3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(width, channels, (3, 3), rngs=rngs)
        self.cond = nnx.Linear(cond_dim, width, rngs=rngs)

    def __call__(self, x, t, context):
        temb = jnp.sin(t.astype(jnp.float32)[:, None] / 100.0 * jnp.arange(1, 9, dtype=jnp.float32))
        bias = self.cond(context.mean(axis=1))[:, None, None, :] + temb.mean(-1)[:, None, None, None]
        h = nnx.silu(self.conv1(x) + bias)
        return self.conv3(nnx.silu(self.conv2(h)))


def build(name: str):
    """(model, latent shape, context shape)."""
    if name == "conv":
        return ConvNet(4, 64, 32, rngs=nnx.Rngs(0)), (1, 32, 32, 4), (1, 8, 32)
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig

    cfg = UNetConfig(block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=64,
                     num_attention_heads=2, norm_num_groups=8,
                     down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    # Built jitted: eager initialisation compiles every op separately.
    model = nnx.jit(lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0)))()
    return model, (1, 16, 16, 4), (1, 8, 64)


def interleaved_best(fns, repeats: int) -> list[float]:
    """Best time of each function, the runs interleaved so that load from other processes hits all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def measure(name: str, repeats: int) -> float:
    model, shape, ctx_shape = build(name)
    graphdef, state = nnx.split(model)
    params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(state))

    def model_fn(state, x, t, context):
        return nnx.merge(graphdef, state)(x, t, context)

    cfg_fn = guidance.guided(model_fn)
    rng = np.random.default_rng(0)
    x_T = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    cond = guidance.CFGCond(jnp.asarray(rng.standard_normal(ctx_shape), jnp.float32),
                            jnp.zeros(ctx_shape, jnp.float32), 7.5)
    sched = DDPMScheduler.create(NoiseSchedule.stable_diffusion(), STEPS)
    key = jax.random.key(0)

    start = time.perf_counter()
    scan = jax.jit(functools.partial(sample, cfg_fn)).lower(state, x_T, sched, cond, key=key).compile()
    scan_compile = time.perf_counter() - start

    def one_step(state, x, sched, i, key, cond):
        t = jnp.broadcast_to(sched.timesteps[i], (x.shape[0],))
        out = cfg_fn(state, x, t, cond)
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        return sched.step(i, x, out, noise)[0]

    start = time.perf_counter()
    step = jax.jit(one_step).lower(state, x_T, sched, 0, key, cond).compile()
    step_compile = time.perf_counter() - start

    def dispatched():
        x = x_T
        for i in range(STEPS):
            x = step(state, x, sched, i, key, cond)
        return x

    jax.block_until_ready(scan(state, x_T, sched, cond, key=key))
    jax.block_until_ready(dispatched())
    t_scan, t_loop = interleaved_best([lambda: scan(state, x_T, sched, cond, key=key), dispatched], repeats)
    print(f"[{name}] params={params:,} latent={shape} context={ctx_shape} steps={STEPS} (CFG: batch x2)")
    print(f"[{name}] compile: scan {scan_compile:.2f} s, single step {step_compile:.2f} s")
    print(f"[{name}] run: scan {t_scan * 1e3:.1f} ms ({t_scan / STEPS * 1e3:.2f} ms/step), "
          f"dispatched {t_loop * 1e3:.1f} ms ({t_loop / STEPS * 1e3:.2f} ms/step), "
          f"overhead/step {(t_loop - t_scan) / STEPS * 1e3:+.2f} ms")
    return t_scan / t_loop


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("conv", "unet", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = ("conv", "unet") if args.model == "both" else (args.model,)
    ratio = None
    for name in names:
        ratio = measure(name, args.repeats)
        print(f"[{name}] scan/dispatched = {ratio:.3f}")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
