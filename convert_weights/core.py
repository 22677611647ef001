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

import glob
import json
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from m3cvc_jax.errors import WeightsError


def read_state_dict(src: str, *, subkey: str | None = None, prefix: str = "") -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as float numpy arrays, keys as in the file.

    src: a folder (diffusers/transformers: `*.safetensors`, sharded with an index, or `*.bin`), a
    `.safetensors` file, or a `.pt/.pth/.ckpt/.bin` file read with `torch.load(weights_only=True)`.
    subkey: take this entry of a pickled dict first (SEINE's `ema`, LDM's `state_dict`); if absent and
    the dict has `state_dict`, that is used. prefix: keep only keys starting with it, stripped.
    """
    if not os.path.exists(src):
        raise WeightsError(f"{src}: no such file or directory")
    if os.path.isdir(src):
        files = sorted(glob.glob(os.path.join(src, "*.safetensors")))
        if not files:
            files = sorted(glob.glob(os.path.join(src, "*.bin")) + glob.glob(os.path.join(src, "*.pt")))
        if not files:
            raise WeightsError(f"{src}: no .safetensors, .bin or .pt weights in this folder")
        out: dict[str, np.ndarray] = {}
        for f in files:
            out.update(read_state_dict(f, subkey=subkey))
    elif src.endswith(".safetensors"):
        out = _read_safetensors(src)
    else:
        out = _read_torch(src, subkey)
    if prefix:
        out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    return out


def iter_safetensors(path: str) -> Iterable[tuple[str, np.ndarray]]:
    """Stream tensors one at a time (for models too big to hold twice); bf16 stays bf16 (ml_dtypes)."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        for key in f.keys():
            try:
                value = f.get_tensor(key)
            except TypeError:
                # numpy has no bfloat16: read that tensor through torch, one tensor at a time.
                value = _read_one_with_torch(path, key)
            yield key, value


def _read_one_with_torch(path: str, key: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return _to_numpy(f.get_tensor(key))


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        return dict(iter_safetensors(path))
    except TypeError:
        # numpy has no bfloat16: go through torch for those files (converters may import torch).
        import torch
        from safetensors.torch import load_file

        return {k: _to_numpy(v) for k, v in load_file(path).items() if isinstance(v, torch.Tensor)}
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None


def _read_torch(path: str, subkey: str | None) -> dict[str, np.ndarray]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot be read with torch.load(weights_only=True): {e}") from None
    if subkey is not None:
        if not isinstance(obj, dict) or subkey not in obj:
            keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise WeightsError(f"{path}: no entry {subkey!r} (has {keys})")
        obj = obj[subkey]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k: _to_numpy(v) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


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
) -> dict[str, np.ndarray]:
    """Map reference tensors onto our flat keys, strictly.

    target_shapes: our flat key -> shape (from `abstract_shapes`). rename: reference key -> our key
    without the leaf change (return None to drop a key on purpose, e.g. buffers the port recomputes).
    A reference `.weight` lands on whichever of kernel/scale/embedding/weight the target has; kernels
    are transposed as needed. Missing, unexpected or mis-shaped keys raise one WeightsError listing them.
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
    missing = sorted(set(target_shapes) - set(out))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", sorted(unexpected)), ("mis-shaped", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}")
    if problems:
        raise WeightsError(f"{source} does not match the model: " + "; ".join(problems))
    return out


def abstract_shapes(build: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of an NNX model's parameters, without allocating them."""
    from flax import nnx

    from m3cvc_jax.weights import path_key

    model = nnx.eval_shape(build)
    return {path_key(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: no such file")
    with open(path) as f:
        return json.load(f)
