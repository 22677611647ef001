"""The interface every evaluated codec implements, and the table `m3cvc eval --codecs` resolves names in.

A codec turns frames into a real file and back; the evaluation measures that file's size (bpp) and the
decoded frames (quality), never an estimate:

    class MyCodec:
        name = "mine"
        rate_points = (0, 1, 2)          # default sweep, lowest rate first is not required
        def encode(self, frames, fps, rate_point, workdir) -> str: ...   # path of the bitstream written
        def decode(self, path) -> np.ndarray: ...                       # uint8 (T, H, W, 3)

`frames` is uint8 `(T, H, W, 3)`, `fps` a `fractions.Fraction`. `CODECS` maps each name to a factory,
called with the keyword options of the run (e.g. `vtm=...`; a factory takes what it needs): add a codec
by adding its factory there.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.eval import anchors, ours


@runtime_checkable
class Codec(Protocol):
    name: str
    rate_points: Sequence[Any]

    def encode(self, frames: np.ndarray, fps, rate_point: Any, workdir: str) -> str: ...

    def decode(self, path: str) -> np.ndarray: ...


CODECS: dict[str, Callable[..., Codec]] = {**anchors.FACTORIES, "ours": ours.make_ours}


def available_codecs() -> list[str]:
    return sorted(CODECS)


def make_codec(name: str, **options) -> Codec:
    """The codec named `name`, built with the run's options."""
    if name not in CODECS:
        raise ConfigError(f"unknown codec {name!r}; one of {', '.join(sorted(CODECS))}")
    return CODECS[name](**options)
