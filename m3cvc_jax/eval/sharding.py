"""Frame metrics over every device: one jitted program, frames sharded along a 1-D mesh.

Frames go through in fixed-size chunks (`per_device` frames on each device), so any video length reuses one
compiled program; the last chunk is padded with copies of its first pair and the padding dropped. Model
weights (LPIPS, CLIP) are passed replicated. Results are identical to a single-device run up to float
reassociation (each frame's value is computed whole on one device).

Several hosts: call `maybe_initialize_distributed()` first (it runs `jax.distributed.initialize()` when the
usual coordinator variables are set). Every host must then call `batch_metrics` with the same frames; each
feeds its own devices' slice and all hosts receive all values.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from m3cvc_jax.eval import metrics as M
from m3cvc_jax.nn.clip import image_embeddings

AXIS = "frames"


def maybe_initialize_distributed() -> bool:
    """`jax.distributed.initialize` when the environment configures several processes, else a no-op.

    Reads JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and JAX_PROCESS_ID; on managed clusters
    (SLURM, TPU pods) where JAX detects these itself, setting only JAX_COORDINATOR_ADDRESS is enough.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return False
    kwargs = {"coordinator_address": address}
    if os.environ.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
    if os.environ.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(**kwargs)
    return True


def frame_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (global) devices, axis `frames`, auto sharding propagation."""
    devs = np.asarray(devices if devices is not None else jax.devices())
    return Mesh(devs, (AXIS,), axis_types=(AxisType.Auto,))


@dataclasses.dataclass(frozen=True)
class Metric:
    """`fn(params, a, b) -> (N,)` per-frame values; `params` is a pytree passed replicated (or None)."""

    name: str
    fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    params: Any = None


def psnr_metric() -> Metric:
    return Metric("psnr", lambda _, a, b: M.psnr(a, b))


def ms_ssim_metric() -> Metric:
    return Metric("ms_ssim", lambda _, a, b: M.ms_ssim(a, b))


def lpips_metric(model, name: str = "lpips") -> Metric:
    graphdef, state = nnx.split(model)
    return Metric(name, lambda s, a, b: M.lpips_distance(nnx.merge(graphdef, s), a, b), state)


def dists_metric(model, name: str = "dists") -> Metric:
    graphdef, state = nnx.split(model)
    return Metric(name, lambda s, a, b: M.dists_distance(nnx.merge(graphdef, s), a, b), state)


def clip_metric(embed: Callable[[Any, jax.Array], jax.Array], params: Any, name: str = "clip_sim") -> Metric:
    """embed(params, frames in [-1, 1]) -> embeddings; see `clip_embedder` for the CLIP port."""
    return Metric(name, lambda p, a, b: M.clip_similarity(lambda x: embed(p, x), a, b), params)


class BatchMetrics:
    """Jitted per-frame metrics over a frame-sharded mesh; call with uint8 `(N, H, W, 3)` pairs."""

    def __init__(self, metric_list: list[Metric], *, mesh: Mesh | None = None, per_device: int = 4):
        self.metrics = list(metric_list)
        self.mesh = mesh or frame_mesh()
        self.chunk = per_device * self.mesh.devices.size
        self._frames = NamedSharding(self.mesh, P(AXIS))
        replicated = NamedSharding(self.mesh, P())
        params = {m.name: m.params for m in self.metrics}
        self._params = jax.device_put(params, replicated)

        def compute(params, a, b):
            return {m.name: m.fn(params[m.name], a, b).astype(jnp.float32) for m in self.metrics}

        self._fn = jax.jit(compute, in_shardings=(replicated, self._frames, self._frames), out_shardings=self._frames)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise ValueError(f"frame arrays differ in shape: {a.shape} vs {b.shape}")
        n = a.shape[0]
        out: dict[str, list[np.ndarray]] = {m.name: [] for m in self.metrics}
        for start in range(0, n, self.chunk):
            ca, cb = a[start : start + self.chunk], b[start : start + self.chunk]
            real = ca.shape[0]
            if real < self.chunk:
                # Pad with the chunk's first pair: a valid input, so no NaN can leak in before we drop it.
                reps = self.chunk - real
                ca = np.concatenate([ca, np.repeat(ca[:1], reps, 0)])
                cb = np.concatenate([cb, np.repeat(cb[:1], reps, 0)])
            res = self._fn(self._params, self._put(ca), self._put(cb))
            for k, v in res.items():
                out[k].append(_gather(v)[:real])
        return {k: np.concatenate(v) if v else np.zeros((0,), np.float32) for k, v in out.items()}

    def _put(self, x: np.ndarray) -> jax.Array:
        if jax.process_count() == 1:
            return jax.device_put(x, self._frames)
        # Each host feeds the rows its own devices hold under this sharding.
        index_map = self._frames.addressable_devices_indices_map(x.shape)
        rows = sorted({idx[0].start or 0 for idx in index_map.values()})
        per = x.shape[0] // self.mesh.devices.size
        local = np.concatenate([x[r : r + per] for r in rows])
        return jax.make_array_from_process_local_data(self._frames, local, x.shape)


def _gather(x: jax.Array) -> np.ndarray:
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def clip_embedder(model) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """(embed(params, frames in [-1, 1]), params) for an `nn.clip.CLIPModel`: CLIP preprocessing + image features."""
    graphdef, state = nnx.split(model)

    def embed(params, frames):
        return image_embeddings(nnx.merge(graphdef, params), (frames + 1.0) * 127.5)

    return embed, state


def default_metrics(names: list[str], *, lpips_models: Mapping[str, Any] | None = None, clip=None,
                    dists=None) -> list[Metric]:
    """Metric objects for names among psnr, ms_ssim, lpips*, dists, clip_sim (models supplied by the caller)."""
    out = []
    for name in names:
        if name == "psnr":
            out.append(psnr_metric())
        elif name == "ms_ssim":
            out.append(ms_ssim_metric())
        elif name.startswith("lpips"):
            if not lpips_models or name not in lpips_models:
                raise ValueError(f"metric {name} needs LPIPS weights")
            out.append(lpips_metric(lpips_models[name], name))
        elif name == "dists":
            if dists is None:
                raise ValueError("metric dists needs DISTS weights")
            out.append(dists_metric(dists))
        elif name == "clip_sim":
            if clip is None:
                raise ValueError("metric clip_sim needs CLIP weights")
            out.append(clip_metric(*clip))
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out
