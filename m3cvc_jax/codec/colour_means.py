"""The mean-colour section: each keyframe's per-channel mean of the ORIGINAL frame, quantised, as bytes.

Side information for the decoder's mean-colour correction (`codec/colour_correction.py`): a small decoder
shifts colours (the demo VAE alone moves a frame's mean by ~20/255), and three numbers per keyframe put them
back. Layout (docs/bitstream.md, extra tag 5, skippable): one byte `bits` (1..8), then 3·K codes (R, G, B of
each keyframe, in keyframe order) as `bits`-bit unsigned integers packed most significant bit first, the last
byte padded with zero bits. A code c stands for the mean c · 255 / (2^bits − 1), so 0 and 255 are exact and
the error is at most 255 / (2 (2^bits − 1)): 2.0 levels at 6 bits, 0.5 at 8. Host-side integers only (no
JAX): `m3cvc inspect` reads them too, and encoder and decoder agree bit for bit.
"""

from __future__ import annotations

import numpy as np

from m3cvc_jax.codec.bit_packing import pack_codes, unpack_codes
from m3cvc_jax.errors import BitstreamError

TAG_MEAN_COLOUR = 5  # skippable extra: a reader that ignores it decodes the same frames without the correction
MAX_BITS = 8  # finer than the 8-bit frames' levels would buy nothing
CHANNELS = 3


def quantise(means, bits: int) -> np.ndarray:
    """Codes `(K, 3)` int64 of per-channel means in [0, 255] (rounded to the nearest level)."""
    _check_bits(bits, "cannot pack: ")
    means = np.asarray(means, np.float64)
    if means.ndim != 2 or means.shape[1] != CHANNELS or not np.all(np.isfinite(means)):
        raise BitstreamError(f"cannot pack: mean colours must be finite (keyframes, 3), got {means.shape}")
    levels = (1 << bits) - 1
    return np.clip(np.round(means * levels / 255.0), 0, levels).astype(np.int64)


def dequantise(codes, bits: int) -> np.ndarray:
    """Means `(K, 3)` float64 in [0, 255] that codes stand for."""
    return np.asarray(codes, np.float64) * 255.0 / ((1 << bits) - 1)


def pack(codes, bits: int) -> bytes:
    codes = np.asarray(codes, np.int64)
    _check_bits(bits, "cannot pack: ")
    if codes.ndim != 2 or codes.shape[1] != CHANNELS or len(codes) < 1:
        raise BitstreamError(f"cannot pack: mean-colour codes must be (keyframes >= 1, 3), got {codes.shape}")
    if codes.min() < 0 or codes.max() >= 1 << bits:
        raise BitstreamError(f"cannot pack: a mean-colour code outside [0, {(1 << bits) - 1}]")
    return bytes([bits]) + pack_codes(codes, bits)


def unpack(payload: bytes, num_keyframes: int) -> tuple[np.ndarray, int]:
    """(codes `(K, 3)` int64, bits) of a section; BitstreamError on anything invalid."""
    if len(payload) < 1:
        _bad("empty")
    bits = payload[0]
    _check_bits(bits, "corrupt bitstream: mean colours: ")
    try:
        codes = unpack_codes(payload[1:], CHANNELS * num_keyframes, bits)
    except ValueError as e:
        _bad(f"{e} ({num_keyframes} keyframes at {bits} bits)")
    return codes.reshape(num_keyframes, CHANNELS), bits


def _check_bits(bits: int, prefix: str) -> None:
    if not 1 <= int(bits) <= MAX_BITS:
        raise BitstreamError(f"{prefix}bits per mean {bits} outside [1, {MAX_BITS}]")


def _bad(msg: str):
    raise BitstreamError(f"corrupt bitstream: mean colours: {msg}")
