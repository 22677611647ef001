"""The interface every evaluated codec implements, and the registry `m3cvc eval --codecs` resolves names in.

A codec turns frames into a real file and back; the evaluation measures that file's size (bpp) and the
decoded frames (quality), never an estimate:

    class MyCodec:
        name = "mine"
        rate_points = (0, 1, 2)          # default sweep, lowest rate first is not required
        def encode(self, frames, fps, rate_point, workdir) -> str: ...   # path of the bitstream written
        def decode(self, path) -> np.ndarray: ...                       # uint8 (T, H, W, 3)

`frames` is uint8 `(T, H, W, 3)`, `fps` a `fractions.Fraction`. Register a factory (called with the
keyword options of the run, e.g. `vtm=...`) under a name:

    register_codec("ours", lambda **opts: M3CVCCodec(**opts))
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from m3cvc_jax.errors import ConfigError


@runtime_checkable
class Codec(Protocol):
    name: str
    rate_points: Sequence[Any]

    def encode(self, frames: np.ndarray, fps, rate_point: Any, workdir: str) -> str: ...

    def decode(self, path: str) -> np.ndarray: ...


_REGISTRY: dict[str, Callable[..., Codec]] = {}


def register_codec(name: str, factory: Callable[..., Codec], *, replace: bool = False) -> None:
    if name in _REGISTRY and not replace:
        raise ValueError(f"codec {name!r} is already registered")
    _REGISTRY[name] = factory


def available_codecs() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def make_codec(name: str, **options) -> Codec:
    """The codec registered as `name`, built with the run's options (a factory takes what it needs)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown codec {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


def _load_builtin() -> None:
    # Importing the anchors and the pipeline's codec registers them (imported late: the pipeline imports
    # this registry).
    import m3cvc_jax.eval.anchors  # noqa: F401
    import m3cvc_jax.pipelines.eval_codec  # noqa: F401
