"""Shared machinery of every converter: read a PyTorch state dict, map it onto an NNX model, save it.

A family converter only supplies (1) how to build the abstract NNX model from the reference config and
(2) a key-renaming function for the places where the reference naming differs from ours (usually none:
our attribute names mirror the reference). Layout changes are derived from the target shapes, so a
converter never lists transposes by hand:

  torch Linear (out, in)          -> kernel (in, out)
  torch Conv2d (O, I, kh, kw)     -> kernel (kh, kw, I, O)
  torch Conv3d (O, I, t, kh, kw)  -> kernel (t, kh, kw, I, O)
  torch 1x1 Conv (O, I, 1, 1)     -> Linear kernel (I, O)     (and the reverse)
  norm weight                     -> scale;  embedding weight -> embedding
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from convert_weights.lazy import open_state_dict
from m3cvc_jax.errors import WeightsError


def read_state_dict(src: str, *, subkey: str | None = None, prefix: str = "") -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as numpy arrays, keys as in the file (see `lazy.open_state_dict` for
    the sources and `subkey`; `prefix`: keep only keys starting with it, stripped). Converters of large
    models walk the lazy mapping instead, so the source is never held whole beside the result."""
    return dict(open_state_dict(src, subkey=subkey).strip_prefix(prefix))


def iter_safetensors(path: str) -> Iterable[tuple[str, np.ndarray]]:
    """Stream tensors one at a time (for models too big to hold twice); bf16 stays bf16 (ml_dtypes)."""
    yield from open_state_dict(path).items()


def torch_key_to_path(key: str) -> str:
    """Reference key -> our flat key for the same tensor, before the leaf rename (weight->kernel...)."""
    return key


def adapt(name: str, value: np.ndarray, target_shape: tuple[int, ...], *, is_kernel: bool) -> np.ndarray:
    """Change a reference tensor's layout to the target's (see the module docstring).

    Only kernels change layout; any other parameter (scale, bias, embedding, raw tensors) must already
    have the target's shape.
    """
    v = np.asarray(value)
    shape = tuple(target_shape)
    if not is_kernel:
        if v.shape == shape:
            return v
        raise _ShapeMismatch(f"{name}: reference {v.shape} vs model {shape}")
    if v.ndim == 2 and len(shape) == 2 and v.shape[::-1] == shape:
        return v.T
    if v.ndim == 4 and len(shape) == 4 and (v.shape[2], v.shape[3], v.shape[1], v.shape[0]) == shape:
        return v.transpose(2, 3, 1, 0)
    if v.ndim == 5 and len(shape) == 5 and (*v.shape[2:], v.shape[1], v.shape[0]) == shape:
        return v.transpose(2, 3, 4, 1, 0)
    if v.ndim == 4 and v.shape[2:] == (1, 1) and len(shape) == 2 and (v.shape[1], v.shape[0]) == shape:
        return v[:, :, 0, 0].T
    if v.ndim == 2 and len(shape) == 4 and shape[:2] == (1, 1) and (shape[2], shape[3]) == v.shape[::-1]:
        return v.T[None, None]
    if v.ndim == 1 and v.shape == shape:
        return v
    raise _ShapeMismatch(f"{name}: reference {v.shape} cannot become {shape}")


class _ShapeMismatch(Exception):
    pass


_LEAF_RENAMES = {"weight": ("kernel", "scale", "embedding", "weight")}


def map_onto(
    target_shapes: Mapping[str, tuple[int, ...]],
    state_dict: Mapping[str, np.ndarray],
    *,
    rename: Callable[[str], str | None] = torch_key_to_path,
    source: str = "checkpoint",
    allow_missing: bool = False,
) -> dict[str, np.ndarray]:
    """Map reference tensors onto our flat keys, strictly.

    target_shapes: our flat key -> shape (from `abstract_shapes`). rename: reference key -> our key
    without the leaf change (return None to drop a key on purpose, e.g. buffers the port recomputes).
    A reference `.weight` lands on whichever of kernel/scale/embedding/weight the target has; kernels
    are transposed as needed. Missing, unexpected or mis-shaped keys raise one WeightsError listing them
    (missing ones not with `allow_missing`: for checking a partial key list, e.g. a published checkpoint's).
    """
    out: dict[str, np.ndarray] = {}
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        mapped = rename(key)
        if mapped is None:
            continue
        head, _, leaf = mapped.rpartition(".")
        candidates = [f"{head}.{alt}" if head else alt for alt in _LEAF_RENAMES.get(leaf, (leaf,))]
        target = next((c for c in candidates if c in target_shapes), None)
        if target is None:
            unexpected.append(key)
            continue
        try:
            out[target] = adapt(key, value, target_shapes[target], is_kernel=target.endswith("kernel"))
        except _ShapeMismatch as e:
            mismatched.append(str(e))
    missing = [] if allow_missing else sorted(set(target_shapes) - set(out))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", sorted(unexpected)), ("mis-shaped", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}")
    if problems:
        raise WeightsError(f"{source} does not match the model: " + "; ".join(problems))
    return out


def to_device_arrays(params: dict[str, np.ndarray]) -> dict[str, Any]:
    """Replace each tensor, in place and one at a time, by a compact jax array: transposed views let their
    source tensors go, and orbax writes jax arrays without a snapshot copy of the whole model."""
    import jax

    for key in list(params):
        params[key] = jax.device_put(np.asarray(params[key], order="C"))  # ascontiguousarray makes 0-d 1-d
    return params


def abstract_shapes(build: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of an NNX model's parameters, without allocating them."""
    from flax import nnx

    return param_shapes(nnx.eval_shape(build))


def abstract_shapes_rngs(build: Callable[[Any], Any]) -> dict[str, tuple[int, ...]]:
    """`abstract_shapes` for `build(rngs)`: traced with stand-in keys instead of a real `nnx.Rngs`, whose
    counter updates make tracing a multi-GB model take seconds (7 s for SD 1.5's UNet)."""
    from m3cvc_jax.weights import abstract_module

    return param_shapes(abstract_module(build))


def param_shapes(model) -> dict[str, tuple[int, ...]]:
    from flax import nnx

    from m3cvc_jax.weights import path_key

    return {path_key(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such file")
    with open(path) as f:
        return json.load(f)
