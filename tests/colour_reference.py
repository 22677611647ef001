"""Reference mean-colour correction (numpy + scipy, float64) for the tests of `codec/colour_correction.py`
and of the modes that apply it, and a helper that adds a mean-colour section to a stream."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import brentq

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import colour_means


def reference_offsets(frames: np.ndarray, positions, targets: np.ndarray) -> np.ndarray:
    """Per keyframe and channel the offset o with mean(clip(x + o, 0, 255)) = target (Brent's method)."""
    x = frames.astype(np.float64)
    out = np.zeros((len(positions), 3))
    for i, p in enumerate(positions):
        for c in range(3):
            out[i, c] = brentq(lambda o: np.clip(x[p, ..., c] + o, 0, 255).mean() - targets[i, c], -256, 256,
                               xtol=1e-9)
    return out


def reference_correction(frames: np.ndarray, positions, targets: np.ndarray) -> np.ndarray:
    offs = reference_offsets(frames, positions, targets)
    t = np.arange(len(frames))
    per_frame = np.stack([np.interp(t, positions, offs[:, c]) for c in range(3)], axis=-1)
    return np.round(np.clip(frames + per_frame[:, None, None, :], 0, 255)).astype(np.uint8)


def assert_corrected(decoded: np.ndarray, uncorrected: np.ndarray, positions, targets: np.ndarray) -> None:
    """`decoded` is the reference correction of `uncorrected` (float32 vs float64: at most one level at a few
    rounding ties), and its keyframes carry the targets to within half a level."""
    diff = np.abs(decoded.astype(int) - reference_correction(uncorrected, positions, targets))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    means = decoded[list(positions)].astype(np.float64).mean(axis=(1, 2))
    assert np.abs(means - targets).max() <= 0.5 + 1e-2


def with_means(stream: bs.Bitstream, means=None, bits: int = 6) -> tuple[bs.Bitstream, np.ndarray]:
    """`stream` plus a mean-colour section (default: means spread over 10..240), and the means it stands for."""
    k = len(stream.header.keyframes)
    means = np.linspace(10, 240, 3 * k).reshape(k, 3) if means is None else np.asarray(means)
    codes = colour_means.quantise(means, bits)
    section = bs.ExtraSection(colour_means.TAG_MEAN_COLOUR, colour_means.pack(codes, bits))
    return (dataclasses.replace(stream, extras=stream.extras + (section,)), colour_means.dequantise(codes, bits))
