"""Converted checkpoints on disk: an orbax array store plus `config.json`.

Layout of a checkpoint directory:
  config.json   {"format": 1, "family": ..., "config": {...model config...}, "fingerprint": ...,
                 "tables": {...}}  (optional small integer tables, e.g. a VQ word histogram)
  params/       orbax checkpoint of a flat dict  "down_blocks.0.resnets.1.conv1.kernel" -> array

Flat, dot-joined keys (the NNX path with list indices as numbers) keep the store readable next to the
PyTorch reference's own names and survive orbax, which would otherwise stringify integer dict keys.
The fingerprint identifies the weights bit for bit; bitstreams record it so a decoder refuses a stream
made with other weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from m3cvc_jax.errors import WeightsError

FORMAT_VERSION = 1


def path_key(path: tuple) -> str:
    """NNX path -> dot-joined key: ('blocks', 0, 'kernel') -> 'blocks.0.kernel'."""
    return ".".join(str(p) for p in path)


def flat_params(model_or_state: Any) -> dict[str, jax.Array]:
    """Parameters of a module (or an nnx.State) as a flat dict of dot-joined keys."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, nnx.Param)
    return {path_key(path): var.get_value() for path, var in nnx.to_flat_state(state)}


def fingerprint(params: Mapping[str, Any], tables: Mapping[str, Any] | None = None) -> str:
    """SHA-256 (first 16 hex digits) over sorted keys, shapes, dtypes and bytes.

    tables: a checkpoint's integer side tables (config.json "tables"), covered too: a stream whose index
    maps were coded with one word histogram must not decode with another.
    """
    items = dict(params)
    items.update({f"tables.{k}": np.asarray(v, np.int64) for k, v in (tables or {}).items()})
    h = hashlib.sha256()
    for key in sorted(items):
        arr = np.asarray(items[key])
        h.update(f"{key}|{arr.shape}|{arr.dtype}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(directory: str, *, family: str, config: Mapping[str, Any], params: Mapping[str, Any],
                    tables: Mapping[str, Any] | None = None) -> str:
    """Write `params` (flat dict), `config` and optional integer `tables` to `directory` atomically;
    returns the fingerprint."""
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    fp = fingerprint(params, tables)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        import orbax.checkpoint as ocp

        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(os.path.join(tmp, "params"), {k: np.asarray(v) for k, v in params.items()})
        checkpointer.wait_until_finished()
        meta = {"format": FORMAT_VERSION, "family": family, "config": dict(config), "fingerprint": fp}
        if tables:
            meta["tables"] = {k: [int(x) for x in np.asarray(v).ravel()] for k, v in tables.items()}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(_config_json(meta))
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return fp


def _config_json(meta: dict) -> str:
    """config.json text: indented, but each table on one line (a prior's tables hold ~10**5 numbers)."""
    tables = meta.get("tables")
    if not tables:
        return json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
    placeholder = "\x00tables\x00"
    text = json.dumps({**meta, "tables": placeholder}, indent=2, sort_keys=True, default=_json_default)
    rows = ",\n".join(f"    {json.dumps(k)}: {json.dumps(tables[k], separators=(',', ':'))}" for k in sorted(tables))
    return text.replace(json.dumps(placeholder), "{\n" + rows + "\n  }")


def read_config(directory: str) -> dict[str, Any]:
    """The `config.json` of a checkpoint directory, with a clear error if it is not one."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise WeightsError(f"{directory} is not a converted checkpoint (no config.json)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise WeightsError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: expected a JSON object, got a {type(meta).__name__}")
    if meta.get("format") != FORMAT_VERSION:
        raise WeightsError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    for key, kind in (("family", str), ("config", dict), ("fingerprint", str), ("tables", dict)):
        if key in meta and not isinstance(meta[key], kind):
            raise WeightsError(f"{path}: {key!r} must be a JSON {_JSON_NAMES[kind]}, got {type(meta[key]).__name__}")
    for name, table in meta.get("tables", {}).items():
        if not isinstance(table, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                  for x in table):
            raise WeightsError(f"{path}: table {name!r} must be a list of non-negative integers")
    if "config" not in meta:
        raise WeightsError(f"{path}: no 'config' (the model's settings)")
    return meta


_JSON_NAMES = {str: "string", dict: "object"}


def load_checkpoint(directory: str, *, family: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a checkpoint: (metadata from config.json, flat params as numpy arrays)."""
    meta = read_config(directory)
    if family is not None and meta.get("family") != family:
        raise WeightsError(f"{directory} holds {meta.get('family')!r} weights, expected {family!r}")
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(os.path.join(os.path.abspath(directory), "params"))
    except Exception as e:  # orbax raises many types; the user needs one line
        _silence_orphaned_reads()
        raise WeightsError(f"cannot read the weights in {directory}: {type(e).__name__}: {e}") from None
    return meta, {k: np.asarray(v) for k, v in restored.items()}


def _silence_orphaned_reads() -> None:
    """After a failed restore, drop the "Event loop is closed" errors of the reads it left behind.

    orbax restores inside `asyncio.run`: when one tensorstore read fails, the loop is closed while the
    other reads of the checkpoint are still running in tensorstore's threads; each one that finishes
    later calls `loop.call_soon_threadsafe` on the closed loop, and the RuntimeError lands in
    `sys.unraisablehook`, which would print a traceback per read after the one-line error. Those reads'
    results are unwanted anyway, so exactly that error is dropped (everything else reaches the previous
    hook). The hook stays installed: stragglers may finish at any time until the process exits.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_drops_orphaned_reads", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook._drops_orphaned_reads = True
    sys.unraisablehook = hook


def assign_params(model: nnx.Module, params: Mapping[str, Any], *, source: str = "checkpoint") -> None:
    """Copy a flat param dict into `model` in place; missing, unexpected or mis-shaped keys are an error."""
    state = nnx.state(model, nnx.Param)
    flat = {path_key(p): v for p, v in nnx.to_flat_state(state)}
    missing = sorted(set(flat) - set(params))
    unexpected = sorted(set(params) - set(flat))
    shapes = sorted(
        f"{k}: {tuple(np.shape(params[k]))} vs model {tuple(flat[k].shape)}"
        for k in set(flat) & set(params)
        if tuple(np.shape(params[k])) != tuple(flat[k].shape)
    )
    problems = []
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if keys:
            problems.append(f"{len(keys)} {name} ({', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''})")
    if problems:
        raise WeightsError(f"{source} does not fit the model: " + "; ".join(problems))
    for key, var in flat.items():
        var.set_value(jax.numpy.asarray(params[key], dtype=var.get_value().dtype))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__name__"):
        return obj.__name__
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
