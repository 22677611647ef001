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
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx

from m3cvc_jax.errors import OutputError, WeightsError
from m3cvc_jax.io.atomic import move_directory_into_place
from m3cvc_jax.io.destination import check_can_create_in, folder_is_empty, holds

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
        h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))  # the bytes without a copy of them
    return h.hexdigest()[:16]


# What save_checkpoint (and the qwen2-vl converter's tokenizer copy) put in a checkpoint folder.
CHECKPOINT_ENTRIES = frozenset({"config.json", "params", "tokenizer"})


def is_checkpoint_folder(directory: str) -> bool:
    """`directory` holds a checkpoint we wrote and nothing else: our config.json, an orbax `params/`, and at
    most the tokenizer files a converter copies beside them."""
    try:
        entries = set(os.listdir(directory))
    except OSError:
        return False
    if not entries <= CHECKPOINT_ENTRIES or not {"config.json", "params"} <= entries:
        return False
    if os.path.islink(params := os.path.join(directory, "params")) or not os.path.isdir(params):
        return False
    try:
        meta = read_config(directory)
    except WeightsError:
        return False
    return isinstance(meta.get("family"), str) and isinstance(meta.get("fingerprint"), str)


def check_checkpoint_destination(directory: str, *, source: str | None = None, overwrite: bool = False) -> None:
    """Refuse, before any work, a destination `save_checkpoint` must not write: the source or a folder
    holding it, anything that is not a new or empty folder or (with `overwrite`) a checkpoint we wrote,
    or a place where no folder can be created."""
    if source is not None and os.path.lexists(source) and (
            os.path.abspath(directory) == os.path.abspath(source) or holds(directory, source)):
        raise OutputError(f"{directory}: holds the source {source}; choose another output folder")
    if os.path.islink(directory):
        raise OutputError(f"{directory}: is a symbolic link; give the folder itself")
    if os.path.lexists(directory):
        if not os.path.isdir(directory):
            raise OutputError(f"{directory}: exists and is not a folder")
        try:
            empty = folder_is_empty(directory)
        except OSError as e:
            raise OutputError(f"{directory}: cannot read the folder: {e.strerror or e}") from None
        if not empty:
            if not is_checkpoint_folder(directory):
                raise OutputError(f"{directory}: folder is not empty and does not hold a checkpoint written here; "
                                  f"give a new or empty folder")
            if not overwrite:
                raise OutputError(f"{directory}: already holds a checkpoint; give --force to replace it")
    check_can_create_in(directory)


def save_checkpoint(directory: str, *, family: str, config: Mapping[str, Any], params: Mapping[str, Any],
                    tables: Mapping[str, Any] | None = None, overwrite: bool = False,
                    compress: bool = True) -> str:
    """Write `params` (flat dict), `config` and optional integer `tables` to `directory` atomically;
    returns the fingerprint.

    The checkpoint is built under a temporary name beside `directory` and renamed into place. `directory`
    may be new or an empty folder; an existing checkpoint we wrote is replaced only with `overwrite`;
    anything else is refused with an OutputError (`check_checkpoint_destination`, asked again at the end).

    compress=False with jax-array params writes them without a copy; orbax copies numpy arrays before
    writing, and compression holds another copy of every array in flight: 2x the model on top of it
    (converters of multi-GB models pass jax arrays and compress=False). Both kinds load the same way.
    """
    directory = os.path.abspath(directory)
    check_checkpoint_destination(directory, overwrite=overwrite)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    fp = fingerprint(params, tables)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        import orbax.checkpoint as ocp  # a slow import (seconds), needed only to write weights

        tree = {k: v if isinstance(v, jax.Array) else np.asarray(v) for k, v in params.items()}
        if compress:
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(os.path.join(tmp, "params"), tree)
            checkpointer.wait_until_finished()
        else:
            ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_compression=False)).save(
                os.path.join(tmp, "params"), args=ocp.args.PyTreeSave(tree))
        meta = {"format": FORMAT_VERSION, "family": family, "config": dict(config), "fingerprint": fp}
        if tables:
            meta["tables"] = {k: [int(x) for x in np.asarray(v).ravel()] for k, v in tables.items()}
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(_config_json(meta))
        check_checkpoint_destination(directory, overwrite=overwrite)
        try:
            move_directory_into_place(tmp, directory, is_checkpoint_folder if overwrite else lambda _: False)
        except OSError as e:
            raise OutputError(f"{directory}: cannot write the checkpoint: {e.strerror or e}") from None
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
    import orbax.checkpoint as ocp  # a slow import (seconds), needed only to read weights

    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(os.path.join(os.path.abspath(directory), "params"))
    except Exception as e:  # orbax raises many types; the user needs one line
        _silence_orphaned_reads()
        raise WeightsError(f"cannot read the weights in {directory}: {type(e).__name__}: {e}") from None
    return meta, {k: np.asarray(v) for k, v in restored.items()}


class _AbstractKeys:
    """Stands in for `nnx.Rngs` while a module is traced abstractly: every stream gives the same key.

    The values are overwritten anyway, and a real `Rngs` updates its counter under the trace, which
    flax 0.12 makes slow (its `sharding` check on a tracer builds an error message each time).
    """

    def __call__(self):
        return jax.random.key(0)

    def __getattr__(self, name):
        return self


def abstract_module(build: Callable[[Any], Any]):
    """`build(rngs)` traced without computing: parameters are shapes only."""
    return nnx.eval_shape(lambda: build(_AbstractKeys()))


def load_module(directory: str, *, family: str, build: Callable[[dict[str, Any], Any], nnx.Module],
                adapt: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None) -> nnx.Module:
    """A converted checkpoint as a module: `build(config, rngs)` (config: the checkpoint's model config)
    traced abstractly, then every parameter assigned from the store (strictly: see `assign_params`).
    adapt: applied to the flat params first (select a prefix, widen a kernel)."""
    meta, params = load_checkpoint(directory, family=family)
    return module_from_params(meta, params, build=build, adapt=adapt, source=directory)


def module_from_params(meta: Mapping[str, Any], params: dict[str, np.ndarray], *,
                       build: Callable[[dict[str, Any], Any], nnx.Module],
                       adapt: Callable[[dict[str, np.ndarray]], dict[str, Any]] | None = None,
                       source: str = "checkpoint") -> nnx.Module:
    """`load_module` for a checkpoint already read (`load_checkpoint`)."""
    model = abstract_module(lambda rngs: build(dict(meta["config"]), rngs))
    assign_params(model, adapt(params) if adapt is not None else params, source=source)
    return model


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
