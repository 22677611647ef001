"""CMVC IT2V's per-frame weights (w_i, w_l) as bytes: the payload of the bitstream's weights section.

Layout (docs/bitstream.md, section tag 3): one byte `bits` (1..16), a varint frame count F, then the
2·F codes (w_i, w_l of each in-between frame, in frame order) as `bits`-bit unsigned integers packed
most significant bit first, the last byte padded with zero bits. A code c stands for w = c / (2^bits − 1)
(`pipelines.it2v.dequantize_weights`). The reader checks every byte: wrong length, non-zero padding, a
bit width out of range or a frame count other than the stream's in-between frames are corrupt streams.
"""

from __future__ import annotations

import numpy as np

from m3cvc_jax.codec.bit_packing import pack_codes, unpack_codes
from m3cvc_jax.errors import BitstreamError

MAX_BITS = 16


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def inbetween_count(keyframes, num_frames: int) -> int:
    """Frames strictly between consecutive keyframes: those IT2V rebuilds (every clip has both ends)."""
    ks = list(keyframes)
    return sum(b - a - 1 for a, b in zip(ks, ks[1:]))


def pack(codes, bits: int) -> bytes:
    codes = np.asarray(codes, np.int64)
    if not 1 <= int(bits) <= MAX_BITS:
        raise BitstreamError(f"cannot pack: w bits {bits} outside [1, {MAX_BITS}]")
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise BitstreamError(f"cannot pack: w codes must be (frames, 2), got {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= 1 << bits):
        raise BitstreamError(f"cannot pack: a w code outside [0, {(1 << bits) - 1}]")
    return bytes([bits]) + _varint(len(codes)) + pack_codes(codes, bits)


def unpack(payload: bytes, expected_frames: int) -> tuple[np.ndarray, int]:
    """(codes `(F, 2)` int32, bits) of a weights section; BitstreamError on anything invalid."""
    def bad(msg):
        raise BitstreamError(f"corrupt bitstream: IT2V weights: {msg}")

    if len(payload) < 2:
        bad("truncated")
    bits = payload[0]
    if not 1 <= bits <= MAX_BITS:
        bad(f"bits per weight {bits} outside [1, {MAX_BITS}]")
    count, shift, pos = 0, 0, 1
    while True:
        if pos >= len(payload) or pos > 4:
            bad("frame count truncated or too long")
        byte = payload[pos]
        count |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    if count != expected_frames:
        bad(f"{count} frames of weights for {expected_frames} in-between frames")
    try:
        codes = unpack_codes(payload[pos:], 2 * count, bits)
    except ValueError as e:
        bad(str(e))
    return codes.reshape(count, 2).astype(np.int32), bits
