"""VQ quantisation throughput (vectors/s): jitted JAX nearest-codeword vs numpy and PyTorch argmin.

    python -m benchmarks.vq

Shape: a batch of 8 paper-size index maps (64x40 at 8 px per index on 512x320) of 32-d vectors against
the 256-word codebook. All three compute the same thing (||z||^2 - 2 z.c + ||c||^2 then argmin, float32)
and must agree (JAX searches in blocks of 512 vectors with the codebook on the leading axis; see
`codec.vq.nearest`). PyTorch is reported at its best thread count (1 or 2). No buffer donation: the int32
indices cannot reuse the input's buffer. numpy's speed depends on its BLAS kernel: on machines where
OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set (see the environment notes) run with both unset to give numpy its
best kernel, e.g. `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.vq`.
Last line: ratio = JAX / PyTorch vectors per second (above 1: JAX faster).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from m3cvc_jax.codec import vq

N, D, K = 8 * 64 * 40, 32, 256


def _best(fn, repeats=7):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def numpy_nearest(z, cb):
    d = (z * z).sum(-1, keepdims=True) - 2.0 * (z @ cb.T) + (cb * cb).sum(-1)
    return d.argmin(-1)


def main():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N, D)).astype(np.float32)
    cb = rng.normal(size=(K, D)).astype(np.float32)

    zj, cbj = jax.device_put(z), jax.device_put(cb)
    nearest = jax.jit(vq.nearest)
    ref = numpy_nearest(z, cb)
    agree = np.mean(np.asarray(nearest(zj, cbj)) == ref)
    t_jax = _best(lambda: nearest(zj, cbj).block_until_ready())
    t_np = _best(lambda: numpy_nearest(z, cb))

    import torch

    zt, cbt = torch.from_numpy(z), torch.from_numpy(cb)

    def torch_nearest():
        with torch.no_grad():
            d = (zt * zt).sum(-1, keepdim=True) - 2.0 * (zt @ cbt.T) + (cbt * cbt).sum(-1)
            return d.argmin(-1)

    t_torch, threads = float("inf"), 1
    for n in (1, 2):
        torch.set_num_threads(n)
        t = _best(torch_nearest)
        if t < t_torch:
            t_torch, threads = t, n
    agree_t = np.mean(torch_nearest().numpy() == ref)

    print(f"{N} vectors x {D} dims, codebook {K}")
    print(f"jax (jit)        {N / t_jax / 1e6:8.2f} M vectors/s  ({t_jax * 1e3:.2f} ms; agreement with numpy {agree:.5f})")
    print(f"numpy            {N / t_np / 1e6:8.2f} M vectors/s  ({t_np * 1e3:.2f} ms)")
    print(f"torch ({threads} thread{'s' if threads > 1 else ''}) {N / t_torch / 1e6:8.2f} M vectors/s  "
          f"({t_torch * 1e3:.2f} ms; agreement {agree_t:.5f})")
    import os

    blas = ",".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ)
    print(f"jax/numpy={t_np / t_jax:.2f}  (numpy BLAS env: {blas or 'default'})")
    print(f"ratio={t_torch / t_jax:.2f}")


if __name__ == "__main__":
    main()
