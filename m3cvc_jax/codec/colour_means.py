"""The mean-colour section: each keyframe's per-channel mean of the ORIGINAL frame, quantised, as bytes.

Side information for the decoder's mean-colour correction (`codec/colour_correction.py`): a small decoder
shifts colours (the demo VAE alone moves a frame's mean by ~20/255), and three numbers per keyframe put them
back. Layout (docs/bitstream.md, extra tag 5, skippable): one byte `bits` (1..8), then 3·K codes (R, G, B of
each keyframe, in keyframe order) as `bits`-bit unsigned integers packed most significant bit first, the last
byte padded with zero bits. A code c stands for the mean c · 255 / (2^bits − 1), so 0 and 255 are exact and
the error is at most 255 / (2 (2^bits − 1)): 2.0 levels at 6 bits, 0.5 at 8. Host-side integers only (no
JAX): `m3cvc inspect` reads them too, and encoder and decoder agree bit for bit.

Anchors (extra tag 6, skippable, only beside a tag-5 section): the same means for frames BETWEEN keyframes
where the clip's colour leaves the straight line between its keyframes (`choose_anchors`), so the decoder's
correction follows it there too. Layout: one byte n (1..255), the n anchor frames increasing as
`bit_length(num_frames - 1)`-bit codes, then their 3·n mean codes at tag 5's `bits`, each run packed as above.
"""

from __future__ import annotations

import numpy as np

from m3cvc_jax.codec.bit_packing import pack_codes, unpack_codes
from m3cvc_jax.errors import BitstreamError, ConfigError

TAG_MEAN_COLOUR = 5  # skippable extra: a reader that ignores it decodes the same frames without the correction
TAG_COLOUR_ANCHORS = 6  # skippable extra: means of frames between keyframes (needs tag 5's bit width)
MAX_ANCHORS = 255
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


def choose_anchors(means, keyframes, tolerance: float) -> list[int]:
    """Frames (not keyframes, increasing, at most MAX_ANCHORS) whose original mean `means[t]` `(T, 3)` leaves
    the linear interpolation between the chosen frames by more than `tolerance` levels in some channel:
    greedily, the worst frame first, until every frame is within `tolerance` (the decoder interpolates its
    correction the same way, so a clip whose colour moves along straight lines between keyframes needs none).
    `tolerance` 0: no anchors."""
    tolerance = float(tolerance)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ConfigError(f"colour.anchor_tolerance must be a finite number >= 0, got {tolerance}")
    means = np.asarray(means, np.float64)
    keys = set(int(k) for k in keyframes)
    chosen = sorted(keys)
    if not tolerance:
        return []
    t = np.arange(len(means))
    while len(chosen) - len(keys) < MAX_ANCHORS:
        line = np.stack([np.interp(t, chosen, means[chosen, c]) for c in range(CHANNELS)], axis=1)
        worst = np.abs(means - line).max(axis=1)
        frame = int(np.argmax(worst))
        if worst[frame] <= tolerance:
            break
        chosen = sorted(chosen + [frame])
    return [f for f in chosen if f not in keys]


def position_bits(num_frames: int) -> int:
    return max(1, (int(num_frames) - 1).bit_length())


def pack_anchors(frames, codes, bits: int, num_frames: int) -> bytes:
    """A tag-6 payload: anchor frames (increasing) and their (R, G, B) codes at `bits`."""
    frames = np.asarray(frames, np.int64)
    codes = np.asarray(codes, np.int64)
    if not 1 <= len(frames) <= MAX_ANCHORS or codes.shape != (len(frames), CHANNELS):
        raise BitstreamError(f"cannot pack: 1..{MAX_ANCHORS} colour anchors with (R, G, B) codes each, got "
                             f"{len(frames)} frames, codes {codes.shape}")
    if np.any(np.diff(frames) <= 0) or frames[0] < 0 or frames[-1] >= num_frames:
        raise BitstreamError(f"cannot pack: colour anchor frames must increase within [0, {num_frames})")
    return bytes([len(frames)]) + pack_codes(frames, position_bits(num_frames)) + pack(codes, bits)[1:]


def unpack_anchors(payload: bytes, bits: int, keyframes, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(anchor frames `(n,)`, codes `(n, 3)`) of a tag-6 payload; BitstreamError on anything invalid."""
    if len(payload) < 1 or payload[0] < 1:
        _bad("colour anchors: empty")
    n, width = payload[0], position_bits(num_frames)
    split = 1 + (n * width + 7) // 8
    try:
        frames = unpack_codes(payload[1:split], n, width)
        codes = unpack_codes(payload[split:], CHANNELS * n, bits)
    except ValueError as e:
        _bad(f"colour anchors: {e} ({n} anchors at {bits} bits)")
    if np.any(np.diff(frames) <= 0) or frames[-1] >= num_frames:
        _bad(f"colour anchors: frames must increase within [0, {num_frames})")
    if set(frames.tolist()) & set(int(k) for k in keyframes):
        _bad("colour anchors: an anchor on a keyframe")
    return frames, codes.reshape(n, CHANNELS)
