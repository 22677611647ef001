"""Frame-metric throughput: our jitted PSNR + MS-SSIM against pytorch_msssim on the same frames.

    python -m benchmarks.metrics [--frames 16] [--repeats 3]

Frames are the paper's 512x320. Ours: `sharding.BatchMetrics` (one jitted program over all devices,
compile excluded, reported separately). Reference: `pytorch_msssim.ms_ssim` + a torch PSNR at the best of
1 and 2 threads. Both values are compared (they must agree to 1e-4) so the timing is of equal work.
The last line is `ratio=<reference seconds / ours seconds>` (above 1: ours is faster).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, size=(n, 41, 65, 3))
    base = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)[:, :320, :512]
    a = base.astype(np.uint8)
    b = np.clip(base + rng.normal(0, 12, size=a.shape), 0, 255).astype(np.uint8)
    return a, b


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import jax

    from m3cvc_jax.eval import sharding

    a, b = _frames(args.frames)
    per_device = -(-args.frames // jax.device_count())
    bm = sharding.BatchMetrics([sharding.psnr_metric(), sharding.ms_ssim_metric()], per_device=per_device)
    t = time.perf_counter()
    bm(a[:1].repeat(args.frames, 0), b[:1].repeat(args.frames, 0))
    compile_s = time.perf_counter() - t
    ours_s, ours = _best(lambda: bm(a, b), args.repeats)
    print(f"frames: {args.frames} x 512x320, devices: {jax.device_count()}")
    print(f"ours (JAX, jitted PSNR + MS-SSIM): {ours_s:.3f} s  ({args.frames / ours_s:.1f} frames/s; first call {compile_s:.1f} s)")

    import torch
    from pytorch_msssim import ms_ssim

    ta = torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    tb = torch.from_numpy(b.astype(np.float32)).permute(0, 3, 1, 2).contiguous()

    def reference():
        with torch.no_grad():
            mse = ((ta - tb) ** 2).mean(dim=(1, 2, 3))
            return (10 * torch.log10(255.0**2 / mse)).numpy(), ms_ssim(ta, tb, data_range=255, size_average=False).numpy()

    best = None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        reference()
        s, (ref_psnr, ref_ms) = _best(reference, args.repeats)
        print(f"pytorch_msssim + torch PSNR, {threads} thread(s): {s:.3f} s")
        best = s if best is None else min(best, s)
    np.testing.assert_allclose(ours["ms_ssim"], ref_ms, atol=1e-4)
    np.testing.assert_allclose(ours["psnr"], ref_psnr, atol=1e-3)
    print("values agree (MS-SSIM to 1e-4, PSNR to 1e-3 dB)")
    print(f"ratio={best / ours_s:.2f}")


if __name__ == "__main__":
    main()
