"""Fixed-width unsigned codes packed most significant bit first, the last byte padded with zero bits: the
code layout of the IT2V weights and mean-colour sections (docs/bitstream.md). Host-side numpy only."""

from __future__ import annotations

import numpy as np


def pack_codes(codes, bits: int) -> bytes:
    """ceil(n * bits / 8) bytes of the n codes (each in [0, 2**bits); the caller checks the range)."""
    flat = np.asarray(codes, np.int64).reshape(-1)
    bitarr = ((flat[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bitarr).tobytes()


def unpack_codes(body: bytes, count: int, bits: int) -> np.ndarray:
    """The `count` codes (int64) in `body`; ValueError (a message for the caller's corrupt-stream error) on a
    length other than ceil(count * bits / 8) or non-zero padding."""
    nbits = count * bits
    if len(body) != (nbits + 7) // 8:
        raise ValueError(f"{len(body)} bytes of codes, {(nbits + 7) // 8} expected")
    bitarr = np.unpackbits(np.frombuffer(body, np.uint8))
    if bitarr[nbits:].any():
        raise ValueError("non-zero padding bits")
    place = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return (bitarr[:nbits].reshape(-1, bits).astype(np.int64) * place).sum(1)
