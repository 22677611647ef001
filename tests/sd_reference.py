"""Helpers for the SD parity tests: copy a torch reference into our NNX port and run it (randomising is
tests/randomize.py's job)."""

from __future__ import annotations

import numpy as np
from flax import nnx

from convert_weights.core import map_onto
from m3cvc_jax.weights import assign_params, path_key


def torch_state(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _alias(key: str) -> str:
    # diffusers' Downsample2D registers its conv twice (`conv` and the legacy `Conv2d_0`).
    return key.replace("Conv2d_0.", "conv.")


def abstract(build):
    """Build a module without initialising it (each eager init op compiles separately: seconds here)."""
    return nnx.eval_shape(build)


def call(model: nnx.Module, method: str = "__call__", *args, **kwargs):
    """One jitted call of `model.method` (one compile instead of one per eager op)."""
    return nnx.jit(lambda m, *a: getattr(m, method)(*a, **kwargs))(model, *args)


def load_from_torch(model: nnx.Module, module, rename=_alias) -> None:
    """Map a torch module's state dict onto `model` with the converters' code (map_onto + assign_params)."""
    shapes = {path_key(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assign_params(model, map_onto(shapes, torch_state(module), rename=rename))


def nchw(x) -> np.ndarray:
    """Our channels-last array -> a torch-layout numpy array."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, 1))


def nhwc(t) -> np.ndarray:
    """A torch NCHW tensor -> channels-last numpy."""
    return np.moveaxis(t.detach().cpu().numpy(), 1, -1)
