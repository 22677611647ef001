"""Entropy coding of VQ index maps with constriction's range coder under integer-quantised models.

Bit-exactness across platforms: every model yields integer frequency tables (`codec/frequencies.py`,
whose hand-off to constriction is exact). A test checks the round trip and that the code length matches
the ideal under these integers.

Models (their ids are part of bitstream v1):
- `uniform`: every word equally likely.
- `static`: a histogram of word counts stored with the weights (`fit_histogram` builds it).
- `adaptive`: Krichevsky-Trofimov counts in raster order (start at 1, +2 per occurrence), re-quantised
  before every symbol, so a map codes well with no side information.
- `learned`: the trained context model of `codec/index_prior.py` (spatial neighbours and the previous
  keyframe's map), its tables stored with the weights.

Decoding costs time linear in the grid size the caller passes: pipelines take the grid from their model
configuration and refuse a stream whose header disagrees, so a forged header cannot ask for a huge map.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from m3cvc_jax.codec import index_prior
from m3cvc_jax.codec.frequencies import _TOTAL, PRECISION, categorical, quantize_frequencies  # noqa: F401
from m3cvc_jax.codec.index_prior import IndexPrior
from m3cvc_jax.errors import BitstreamError, ConfigError

ENTROPY_MODELS: dict[str, int] = {"uniform": 0, "static": 1, "adaptive": 2, "learned": 3}
ENTROPY_MODEL_NAMES: dict[int, str] = {v: k for k, v in ENTROPY_MODELS.items()}
_KT_INIT = 1
_KT_STEP = 2


@dataclasses.dataclass(frozen=True)
class IndexModel:
    """How index maps are coded: `kind` in ENTROPY_MODELS, the codebook size, and for `static` the counts."""

    kind: str
    codebook_size: int
    counts: tuple[int, ...] | None = None
    prior: IndexPrior | None = None  # the `learned` model's tables

    def __post_init__(self):
        if self.kind not in ENTROPY_MODELS:
            raise ConfigError(f"unknown entropy model {self.kind!r}; choose one of {', '.join(ENTROPY_MODELS)}")
        if not 2 <= self.codebook_size <= 1 << 16:
            raise ConfigError(f"codebook size {self.codebook_size} outside [2, 65536]")
        if self.kind == "static":
            if self.counts is None or len(self.counts) != self.codebook_size:
                raise ConfigError("a static entropy model needs one count per codebook word")
            if any(c < 0 for c in self.counts):
                raise ConfigError("histogram counts must be non-negative")
        if self.kind == "learned" and (self.prior is None or self.prior.codebook_size != self.codebook_size):
            raise ConfigError("a learned entropy model needs an index prior for this codebook size")


def fit_histogram(index_maps, codebook_size: int) -> tuple[int, ...]:
    """Word counts over a collection of index maps (the table a `static` model stores with the weights)."""
    counts = np.zeros(codebook_size, np.int64)
    for m in index_maps:
        m = np.asarray(m).ravel()
        if m.size and (m.min() < 0 or m.max() >= codebook_size):
            raise ConfigError(f"index outside [0, {codebook_size})")
        counts += np.bincount(m, minlength=codebook_size)
    return tuple(int(c) for c in counts)


_CHUNK = 4096


def _adaptive_rows(symbols: np.ndarray, n: int):
    """Frequencies before each symbol under KT counts, yielded in chunks of rows (bounded memory)."""
    base = np.full(n, _KT_INIT, np.int64)
    for start in range(0, len(symbols), _CHUNK):
        chunk = symbols[start : start + _CHUNK]
        onehot = np.zeros((len(chunk), n), np.int64)
        onehot[np.arange(len(chunk)), chunk] = _KT_STEP
        counts = base + np.cumsum(onehot, axis=0) - onehot
        base = counts[-1] + onehot[-1]
        yield chunk, quantize_frequencies(counts)


def _static_freq(model: IndexModel) -> np.ndarray:
    if model.kind == "uniform":
        return quantize_frequencies(np.ones(model.codebook_size, np.int64))
    return quantize_frequencies(np.asarray(model.counts, np.int64))


def _check(indices: np.ndarray, n: int) -> np.ndarray:
    flat = np.asarray(indices).ravel()
    if flat.size == 0:
        raise ConfigError("empty index map")
    if not np.issubdtype(flat.dtype, np.integer) or flat.min() < 0 or flat.max() >= n:
        raise ConfigError(f"index map must hold integers in [0, {n})")
    return flat.astype(np.int32)


def _encode_into(coder, indices, model: IndexModel, previous) -> None:
    if model.kind == "learned":
        index_prior.encode_into(coder, indices, previous, model.prior)
        return
    import constriction  # loaded on first coding: reading a stream (inspect) needs no coder

    flat = _check(indices, model.codebook_size)
    if model.kind == "adaptive":
        family = constriction.stream.model.Categorical(perfect=False)
        for chunk, rows in _adaptive_rows(flat, model.codebook_size):
            coder.encode(chunk, family, (rows - 1).astype(np.float64))
    else:
        coder.encode(flat, categorical(_static_freq(model)))


def _decode_from(decoder, shape: tuple[int, ...], model: IndexModel, previous) -> np.ndarray:
    if model.kind == "learned":
        return index_prior.decode_from(decoder, tuple(shape), previous, model.prior)
    count = int(np.prod(shape))
    if count <= 0:
        raise BitstreamError("corrupt index data (empty map)")
    try:
        if model.kind == "adaptive":
            out = _decode_adaptive(decoder, count, model.codebook_size)
        else:
            out = decoder.decode(categorical(_static_freq(model)), count)
    except BitstreamError:
        raise
    except Exception as e:  # constriction reports invalid data with assorted exception types
        raise BitstreamError(f"corrupt index data: {e}") from None
    out = np.asarray(out, np.int32)
    if out.min() < 0 or out.max() >= model.codebook_size:
        raise BitstreamError("corrupt index data (index outside the codebook)")
    return out.reshape(shape)


def _decoder(data: bytes):
    import constriction  # loaded on first coding: reading a stream (inspect) needs no coder

    if len(data) % 4:
        raise BitstreamError("corrupt index data (length is not a whole number of 32-bit words)")
    try:
        return constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    except Exception as e:  # constriction reports invalid data with assorted exception types
        raise BitstreamError(f"corrupt index data: {e}") from None


def encode_index_maps(maps, model: IndexModel) -> bytes:
    """Range-code a stream's keyframe maps (raster order, one after the other) with ONE coder, each map given
    the previous one (the `learned` model's temporal context; the others code each map on its own terms).
    One coder for all maps: a single flush and no per-map lengths (container v2)."""
    import constriction  # loaded on first coding: reading a stream (inspect) needs no coder

    coder = constriction.stream.queue.RangeEncoder()
    for i, m in enumerate(maps):
        _encode_into(coder, m, model, maps[i - 1] if i else None)
    return coder.get_compressed().astype("<u4").tobytes()


def decode_index_maps(data: bytes, count: int, shape: tuple[int, ...], model: IndexModel) -> list[np.ndarray]:
    """Invert `encode_index_maps` (`count` maps of `shape`); BitstreamError on data that cannot come from it."""
    decoder = _decoder(data)
    maps: list[np.ndarray] = []
    for _ in range(count):
        maps.append(_decode_from(decoder, shape, model, maps[-1] if maps else None))
    return maps


def encode_indices(indices, model: IndexModel, previous=None) -> bytes:
    """Range-code one index map (raster order) under `model`; the shape travels in the bitstream header.

    previous: the previous keyframe's map of the stream (None for the first), used by `learned` only.
    """
    import constriction  # loaded on first coding: reading a stream (inspect) needs no coder

    coder = constriction.stream.queue.RangeEncoder()
    _encode_into(coder, indices, model, previous)
    return coder.get_compressed().astype("<u4").tobytes()


def decode_indices(data: bytes, shape: tuple[int, ...], model: IndexModel, previous=None) -> np.ndarray:
    """Invert `encode_indices`; raises BitstreamError on data that cannot come from it."""
    return _decode_from(_decoder(data), shape, model, previous)


def _decode_adaptive(decoder, count: int, n: int) -> np.ndarray:
    """Symbol-by-symbol decoding; `quantize_frequencies` of the KT counts, inlined for speed."""
    import constriction  # loaded on first coding: reading a stream (inspect) needs no coder

    family = constriction.stream.model.Categorical(perfect=False)
    counts = np.full(n, _KT_INIT, np.int64)
    total = _KT_INIT * n
    best = 0  # lowest index among the largest counts
    free = _TOTAL - n
    out = np.empty(count, np.int32)
    row = np.empty((1, n), np.float64)
    for i in range(count):
        if total == _TOTAL:  # quantize_frequencies keeps a row that already is a table
            row[0] = counts - 1
        else:
            freq = (free * counts) // total  # freq - 1 before the flooring correction
            freq[best] += free - int(freq.sum())
            row[0] = freq
        s = int(decoder.decode(family, row)[0])
        out[i] = s
        counts[s] += _KT_STEP
        total += _KT_STEP
        if counts[s] > counts[best] or (counts[s] == counts[best] and s < best):
            best = s
    return out


def ideal_bits(indices, model: IndexModel, previous=None) -> float:
    """-log2 of the probability of the map under the integer model: what a perfect coder would spend."""
    if model.kind == "learned":
        return index_prior.ideal_bits(indices, previous, model.prior)
    flat = _check(indices, model.codebook_size)
    if model.kind == "adaptive":
        p = np.concatenate([rows[np.arange(len(c)), c] for c, rows in _adaptive_rows(flat, model.codebook_size)])
    else:
        p = _static_freq(model)[flat]
    return float(np.sum(PRECISION - np.log2(p.astype(np.float64))))
