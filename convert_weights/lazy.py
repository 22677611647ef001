"""A checkpoint's tensors read one at a time: the key list up front, each tensor only when asked for.

A converter that walks `items()` once holds at most the tensors it has kept, never the whole source next
to its own copy (SD 1.5's UNet is 3.4 GB in float32). safetensors files are read through `safe_open`;
pickled torch files (`.ckpt`, `.pt`, `.pth`, `.bin`) through `torch.load(mmap=True, weights_only=True)`
where the file format allows it, so their storages stay on disk until a tensor is converted.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from m3cvc_jax.errors import WeightsError

Reader = Callable[[], np.ndarray]


class LazyStateDict(Mapping[str, np.ndarray]):
    """Read-only mapping key -> numpy tensor; `sd[key]` reads the tensor anew each time (nothing cached)."""

    def __init__(self, readers: Mapping[str, Reader], source: str):
        self._readers = dict(readers)
        self.source = source

    def __getitem__(self, key: str) -> np.ndarray:
        return self._readers[key]()

    def __iter__(self) -> Iterator[str]:
        return iter(self._readers)

    def __len__(self) -> int:
        return len(self._readers)

    def __contains__(self, key: object) -> bool:
        return key in self._readers

    def strip_prefix(self, prefix: str) -> "LazyStateDict":
        """Only the keys under `prefix`, without it."""
        return LazyStateDict({k[len(prefix):]: r for k, r in self._readers.items() if k.startswith(prefix)},
                             self.source)

    def drop(self, keys) -> "LazyStateDict":
        keys = set(keys)
        return LazyStateDict({k: r for k, r in self._readers.items() if k not in keys}, self.source)

    def transform(self, key: str, fn: Callable[[np.ndarray], np.ndarray]) -> "LazyStateDict":
        """The same mapping with `fn` applied to one tensor when it is read."""
        readers = dict(self._readers)
        inner = readers[key]
        readers[key] = lambda: fn(inner())
        return LazyStateDict(readers, self.source)

    def with_progress(self, label: str, *, every: float = 0.1, out=None) -> "LazyStateDict":
        """The same mapping, printing `label: i/n tensors (x MB read)` about every `every` of the keys
        while `items()` walks it (a 3 GB conversion otherwise sits silent for minutes)."""
        return _Progress(self._readers, self.source, label, every, out)


class _Progress(LazyStateDict):
    def __init__(self, readers, source, label, every, out):
        super().__init__(readers, source)
        self._label, self._every, self._out = label, every, out

    def items(self):
        n = len(self)
        step = max(1, int(n * self._every))
        done_bytes = 0
        out = self._out or sys.stdout
        for i, key in enumerate(self, 1):
            value = self[key]
            done_bytes += value.nbytes
            if i % step == 0 or i == n:
                print(f"{self._label}: {i}/{n} tensors ({done_bytes / 1e6:.0f} MB read)", file=out, flush=True)
            yield key, value


def open_state_dict(src: str, *, subkey: str | None = None) -> LazyStateDict:
    """A lazy view of a checkpoint: a folder (diffusers/transformers: `*.safetensors`, else `*.bin`/`*.pt`),
    a `.safetensors` file, or a pickled torch file. subkey: take this entry of a pickled dict first
    (SEINE's `ema`); without it a dict holding `state_dict` (LDM's) is unwrapped."""
    if not os.path.exists(src):
        raise WeightsError(f"{src}: no such file or directory")
    if os.path.isdir(src):
        files = sorted(glob.glob(os.path.join(src, "*.safetensors")))
        if not files:
            files = sorted(glob.glob(os.path.join(src, "*.bin")) + glob.glob(os.path.join(src, "*.pt")))
        if not files:
            raise WeightsError(f"{src}: no .safetensors, .bin or .pt weights in this folder")
        readers: dict[str, Reader] = {}
        for f in files:
            readers.update(open_state_dict(f, subkey=subkey)._readers)
        return LazyStateDict(readers, src)
    if src.endswith(".safetensors"):
        return LazyStateDict(_safetensors_readers(src), src)
    return LazyStateDict(_torch_readers(src, subkey), src)


def _safetensors_readers(path: str) -> dict[str, Reader]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            keys = list(f.keys())
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None

    def read(key: str) -> np.ndarray:
        with safe_open(path, framework="numpy") as f:
            try:
                return f.get_tensor(key)
            except TypeError:
                pass  # numpy has no bfloat16: that tensor goes through torch (converters may import torch)
        with safe_open(path, framework="pt") as f:
            return to_numpy(f.get_tensor(key))

    return {k: (lambda k=k: read(k)) for k in keys}


def _torch_readers(path: str, subkey: str | None) -> dict[str, Reader]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        obj = None  # the legacy (pre-zip) format cannot be memory-mapped: read it whole below
    except Exception as e:
        raise WeightsError(f"{path}: cannot be read with torch.load(weights_only=True): {e}") from None
    if obj is None:
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
    return {k: (lambda v=v: to_numpy(v)) for k, v in obj.items() if isinstance(v, torch.Tensor)}


def to_numpy(t: Any) -> np.ndarray:
    """A torch tensor as numpy (bf16 as ml_dtypes.bfloat16: numpy has none)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()
