"""The rate target an encoder was given (`m3cvc encode --target-bpp / --target-bytes`, `m3cvc eval` rate points
`bpp:X` / `bytes:N`): its text form and the small skippable section that records it in a stream.

Section (docs/bitstream.md): tag TAG_RATE_TARGET, SKIPPABLE, payload `u8 kind` (1 bytes, 2 bpp) then
`varint value` (bytes, or bpp in millionths). bpp targets are therefore kept to 6 decimals.
"""

from __future__ import annotations

import dataclasses
import math

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.errors import BitstreamError, ConfigError

TAG_RATE_TARGET = 4
_KINDS = {"bytes": 1, "bpp": 2}
_MICRO = 1_000_000
MAX_BPP = 24.0  # raw 8-bit RGB: no coded stream needs more
MAX_BYTES = bs.MAX_FILE_BYTES


@dataclasses.dataclass(frozen=True)
class RateTarget:
    kind: str  # "bpp" | "bytes"
    value: int  # bytes, or bpp in millionths

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ConfigError(f"rate target kind {self.kind!r}: one of bpp, bytes")
        top = MAX_BYTES if self.kind == "bytes" else round(MAX_BPP * _MICRO)
        if not 1 <= self.value <= top:
            raise ConfigError(f"rate target {self.label}: outside {self._range()}")

    def _range(self) -> str:
        return f"1..{MAX_BYTES} bytes" if self.kind == "bytes" else f"0.000001..{MAX_BPP:g} bpp"

    @property
    def label(self) -> str:
        return f"bytes:{self.value}" if self.kind == "bytes" else f"bpp:{self.value / _MICRO:g}"

    def max_bytes(self, width: int, height: int, num_frames: int) -> int:
        """The largest file that meets the target for a video of this size."""
        if self.kind == "bytes":
            return self.value
        return self.value * width * height * num_frames // (8 * _MICRO)

    def section(self) -> bs.ExtraSection:
        return bs.ExtraSection(TAG_RATE_TARGET, bytes([_KINDS[self.kind]]) + bs._varint(self.value), skippable=True)


def bpp_target(bpp: float) -> RateTarget:
    if not isinstance(bpp, (int, float)) or not math.isfinite(bpp) or bpp <= 0:
        raise ConfigError(f"--target-bpp {bpp}: must be a positive finite number")
    return RateTarget("bpp", max(1, round(bpp * _MICRO)))


def bytes_target(n: int) -> RateTarget:
    return RateTarget("bytes", int(n))


def parse(text: str) -> RateTarget:
    """`bpp:0.01` or `bytes:400` (what `label` writes)."""
    kind, sep, value = str(text).strip().partition(":")
    if not sep or kind not in _KINDS:
        raise ConfigError(f"rate target {text!r}: expected bpp:X or bytes:N (e.g. bpp:0.01, bytes:400)")
    try:
        return bytes_target(int(value)) if kind == "bytes" else bpp_target(float(value))
    except ValueError:
        raise ConfigError(f"rate target {text!r}: {value!r} is not a number") from None


def from_stream(stream: bs.Bitstream) -> RateTarget | None:
    """The target recorded in a stream, or None."""
    for e in stream.extras:
        if e.tag == TAG_RATE_TARGET:
            r = bs._Reader(e.payload, "rate target section")
            kind = r.u8()
            value = r.varint((1 << 64) - 1, "rate target")
            r.done()
            names = {v: k for k, v in _KINDS.items()}
            if kind not in names:
                r.fail(f"unknown kind {kind}")
            try:
                return RateTarget(names[kind], value)
            except ConfigError as err:
                raise BitstreamError(f"corrupt bitstream: rate target section: {err}") from None
    return None
