"""The learned index prior: an integer log-linear context model for VQ index maps (entropy model `learned`).

Each index `x` at a raster position is one symbol of the K-word alphabet. Its context is three words
already known to the decoder: the left and upper neighbours in the map (causal) and the co-located word
of the previous keyframe's map (temporal), each "none" (row K) at the borders and for a stream's first
keyframe. The model is a product of experts in the log domain, every term an integer cost in 1/S bit:

    cost(x) = base[x] + context[0, left, x] + context[1, up, x] + context[2, prev, x]
    freq(x) proportional to 2 ** (-(cost(x) - min cost) / S)

The trainer derives the tables from counts (`-S * w_n * log2 P_n(x | neighbour n)` for the weighted
bigram of each neighbour, `-S * (1 - sum w) * log2 P(x)` for the base), so that the tables alone are the
model: the float logarithms and weights stay in the trainer.

Determinism: from the tables and the known words to the frequencies everything is int64 numpy arithmetic.
The power of two is `EXP2[d % S] >> (d // S)`, with `EXP2[r] = floor(2**30 * 2**(-r/S))` computed
exactly with Python integers (an integer S-th root, no libm), and the rows go to the range coder through
`entropy.quantize_frequencies` and `entropy.categorical`, whose hand-off to constriction is exact. No
float, no JAX and no device enter the probabilities, so the encoder and any decoder (any CPU, GPU, TPU,
device count, x64 setting) compute the same integers. Encoder and decoder compute each position's row with
the same function from the same causal inputs. Floats appear only in `ideal_bits` (a measurement).

The tables travel in the post-encoder checkpoint's `tables` (so the weights fingerprint covers them):
`prior_base` (K), `prior_context` (3 * (K+1) * K, row-major) and `prior_params` (S).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

from m3cvc_jax.codec.frequencies import PRECISION, categorical, quantize_frequencies
from m3cvc_jax.errors import BitstreamError, ConfigError

NEIGHBOURS = ("left", "up", "previous")
EXP_BITS = 30  # EXP2 values are below 2**30: a 256-word row sums below 2**38, quantised without halving
MAX_COST = 1 << 24
TABLE_NAMES = ("prior_base", "prior_context", "prior_params")
_BATCH = 4096  # positions per vectorised block in `ideal_bits` (a few MB of int64 for K = 256)


@functools.lru_cache(maxsize=8)
def exp2_table(scale: int) -> np.ndarray:
    """`floor(2**30 * 2**(-r / scale))` for r in [0, scale): the largest y with y**scale <= 2**(30*scale - r),
    found by bisection on Python integers (exact on every platform)."""
    out = []
    for r in range(scale):
        target = 1 << (EXP_BITS * scale - r)
        lo, hi = 1, 1 << EXP_BITS
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mid ** scale <= target:
                lo = mid
            else:
                hi = mid - 1
        out.append(lo)
    return np.asarray(out, np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class IndexPrior:
    """Trained integer tables (see the module docstring)."""

    base: np.ndarray  # (K,) int64 in [0, MAX_COST)
    context: np.ndarray  # (3, K+1, K) int64 in [0, MAX_COST); row K: no such neighbour
    scale: int  # S: cost units per bit

    def __post_init__(self):
        k = len(self.base)
        if not 2 <= k <= 1 << 16:
            raise ConfigError(f"index prior: {k} words unsupported")
        if self.context.shape != (len(NEIGHBOURS), k + 1, k):
            raise ConfigError("index prior: table shapes do not match the codebook size")
        for name, v in (("base", self.base), ("context", self.context)):
            if v.min() < 0 or v.max() >= MAX_COST:
                raise ConfigError(f"index prior: {name} costs outside [0, 2**24)")
        if not 1 <= self.scale <= 256:
            raise ConfigError(f"index prior: scale {self.scale} outside [1, 256]")

    @property
    def codebook_size(self) -> int:
        return len(self.base)

    @classmethod
    def from_tables(cls, tables: dict) -> "IndexPrior":
        """From a checkpoint's `tables` (lists of non-negative ints); ConfigError if absent or inconsistent."""
        missing = [n for n in TABLE_NAMES if n not in tables]
        if missing:
            raise ConfigError(f"no learned index prior in these weights (missing tables {', '.join(missing)}); "
                              f"train one with python -m train.index_prior")
        params = [int(x) for x in tables["prior_params"]]
        if len(params) != 1:
            raise ConfigError("index prior: prior_params must hold the scale alone")
        base = np.asarray(tables["prior_base"], np.int64)
        context = np.asarray(tables["prior_context"], np.int64)
        k = len(base)
        if base.ndim != 1 or context.size != len(NEIGHBOURS) * (k + 1) * k:
            raise ConfigError("index prior: prior_context does not match the codebook size")
        return cls(base, context.reshape(len(NEIGHBOURS), k + 1, k), params[0])

    def tables(self) -> dict[str, list[int]]:
        return {"prior_base": self.base.tolist(), "prior_context": self.context.ravel().tolist(),
                "prior_params": [self.scale]}


def raw_frequencies(prior: IndexPrior, left, up, prev) -> np.ndarray:
    """Unnormalised integer weights `2**30 * 2**(-(cost - min cost) / S)` of every word, for one context
    (ints, -1 for none) or a batch of contexts (arrays of the same shape: rows of the result)."""
    k = prior.codebook_size
    ctx = prior.context
    cost = (prior.base + ctx[0, np.where(np.asarray(left) < 0, k, left)]
            + ctx[1, np.where(np.asarray(up) < 0, k, up)] + ctx[2, np.where(np.asarray(prev) < 0, k, prev)])
    d = cost - cost.min(axis=-1, keepdims=True)
    return exp2_table(prior.scale)[d % prior.scale] >> np.minimum(d // prior.scale, 62)


def context_words(index_map: np.ndarray, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The left, upper and previous-map word of every position, -1 where there is none (vectorised; the
    decoder reads the same three words one position at a time)."""
    m = np.asarray(index_map, np.int64)
    left = np.full(m.shape, -1, np.int64)
    left[:, 1:] = m[:, :-1]
    up = np.full(m.shape, -1, np.int64)
    up[1:, :] = m[:-1, :]
    prev = np.full(m.shape, -1, np.int64) if previous is None else np.asarray(previous, np.int64)
    return left, up, prev


def check_maps(index_map, previous, prior: IndexPrior) -> tuple[np.ndarray, np.ndarray | None]:
    m = np.asarray(index_map)
    if m.ndim != 2 or m.size == 0:
        raise ConfigError("the learned prior codes 2-D index maps")
    if not np.issubdtype(m.dtype, np.integer) or m.min() < 0 or m.max() >= prior.codebook_size:
        raise ConfigError(f"index map must hold integers in [0, {prior.codebook_size})")
    if previous is not None:
        previous = np.asarray(previous)
        if previous.shape != m.shape or previous.min() < 0 or previous.max() >= prior.codebook_size:
            raise ConfigError("the previous index map must have the same shape and codebook")
    return m.astype(np.int64), None if previous is None else previous.astype(np.int64)


def frequency_rows(index_map, previous, prior: IndexPrior):
    """(the map's words in raster order, their rows of integer frequencies), in blocks of positions."""
    m, previous = check_maps(index_map, previous, prior)
    words = [w.ravel() for w in context_words(m, previous)]
    x = m.ravel()
    for s in range(0, len(x), _BATCH):
        block = slice(s, s + _BATCH)
        yield x[block], quantize_frequencies(raw_frequencies(prior, *(w[block] for w in words)))


def encode_into(coder, index_map, previous, prior: IndexPrior) -> None:
    """Append `index_map`, given the previous keyframe's map (None for a stream's first keyframe), to a
    constriction RangeEncoder."""
    for x, rows in frequency_rows(index_map, previous, prior):
        for symbol, freq in zip(x, rows):
            coder.encode(int(symbol), categorical(freq))


def decode_from(decoder, shape: tuple[int, int], previous, prior: IndexPrior) -> np.ndarray:
    """Invert `encode_into` on a constriction RangeDecoder; BitstreamError on data that cannot come from it."""
    if len(shape) != 2:
        raise BitstreamError("corrupt index data (a map is 2-D)")
    h, w = shape
    out = np.zeros((h, w), np.int64)
    if previous is not None:
        previous = check_maps(np.zeros((h, w), np.int64), previous, prior)[1]
    try:
        for r in range(h):
            for col in range(w):
                row = raw_frequencies(prior, out[r, col - 1] if col else -1, out[r - 1, col] if r else -1,
                                      previous[r, col] if previous is not None else -1)
                out[r, col] = int(decoder.decode(categorical(quantize_frequencies(row))))
    except Exception as e:  # constriction reports invalid data with assorted exception types
        raise BitstreamError(f"corrupt index data: {e}") from None
    return out.astype(np.int32)


def ideal_bits(index_map, previous, prior: IndexPrior) -> float:
    """-log2 of the map's probability under the integer model (what a perfect coder would spend)."""
    bits = 0.0
    for x, rows in frequency_rows(index_map, previous, prior):
        bits += float(np.sum(PRECISION - np.log2(rows[np.arange(len(x)), x].astype(np.float64))))
    return bits


def frequency_digest(index_map, previous, prior: IndexPrior) -> str:
    """SHA-256 of every integer frequency the coder sees for this map (for determinism checks)."""
    h = hashlib.sha256()
    for _, rows in frequency_rows(index_map, previous, prior):
        h.update(np.ascontiguousarray(rows, "<i8").tobytes())
    return h.hexdigest()
