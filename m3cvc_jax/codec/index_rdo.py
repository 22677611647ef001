"""Rate-distortion choice of the keyframe indices under the learned prior (entropy-constrained VQ).

The paper quantises each post-encoder vector to its nearest codeword. With an entropy model the index a
vector gets is also what it costs: Chou, Lookabaugh and Gray's entropy-constrained VQ (1989) picks, for
each vector z, the word minimising

    J(k) = ||z - e_k||^2 / D + lambda * bits(k | context)

where bits is the exact code length the range coder spends on k (`PRECISION - log2 freq[k]` of the integer
row `codec.index_prior` gives the decoder). The context of a position is its left and upper neighbour and
the previous keyframe's word, so one position's choice changes its neighbours' code lengths: the map is
improved by sweeps that weigh both (`rd_index_map`), starting from the nearest words. lambda = 0 is the
nearest codeword (ties: the lowest index, like `codec.vq.nearest`).

This runs only in the encoder, on the host: the decoder reads whatever words the stream holds with the
same prior, so neither the format nor decoding changes, and the float distances here need not be
reproducible anywhere else.
"""

from __future__ import annotations

import numpy as np

from m3cvc_jax.codec import index_prior as ip
from m3cvc_jax.codec.frequencies import PRECISION, quantize_frequencies
from m3cvc_jax.errors import ConfigError


PASSES = 2  # sweeps: on the demo's bundled clips a third lowers the cost by < 0.5% more
MAX_PASSES = 16


def check_lambda(value) -> float:
    lam = float(value)
    if not np.isfinite(lam) or not 0.0 <= lam <= 1e6:
        raise ConfigError(f"coding.rd_lambda must be a finite number in [0, 1e6], got {value!r}")
    return lam


def code_lengths(prior: ip.IndexPrior, left: int, up: int, prev: int) -> np.ndarray:
    """Bits the coder spends on each word `(K,)` in one context (-1: no such neighbour)."""
    freq = quantize_frequencies(ip.raw_frequencies(prior, left, up, prev))
    return PRECISION - np.log2(freq.astype(np.float64))


def _word_bits(prior: ip.IndexPrior, left, up, prev, word: int) -> np.ndarray:
    """Bits of `word` in each of a batch of contexts (arrays `(K,)`, -1: no such neighbour)."""
    freq = quantize_frequencies(ip.raw_frequencies(prior, left, up, prev))
    return PRECISION - np.log2(freq[:, word].astype(np.float64))


def rd_index_map(distances, previous, prior: ip.IndexPrior, lam: float, *, passes: int = PASSES) -> np.ndarray:
    """The index map `(h, w)` int32 lowering distortion + lambda x bits from the nearest words.

    distances: `(h, w, K)` squared distances of each vector to every codeword divided by the codewords'
    dimension D (`codec.vq.squared_distances(z, codebook) / D`); previous: the previous keyframe's map
    `(h, w)` as coded (None for a stream's first keyframe).

    Iterated conditional modes: starting from the nearest words, up to `passes` raster sweeps give each
    position the word of least total cost with every other word fixed: its distance, its own bits, and
    the bits of its right and lower neighbours, whose context it is. The current word is a candidate, so
    no step raises the map's cost (distortion + lambda x ideal bits): the result never costs more than
    the nearest words. A sweep that changes nothing ends the search."""
    lam = check_lambda(lam)
    if not 0 <= passes <= MAX_PASSES:
        raise ConfigError(f"RD passes must be in [0, {MAX_PASSES}], got {passes}")
    d = np.asarray(distances, np.float64)
    k = prior.codebook_size
    if d.ndim != 3 or d.shape[-1] != k:
        raise ConfigError(f"distances must be (h, w, {k}), got {d.shape}")
    h, w, _ = d.shape
    if previous is not None:
        previous = ip.check_maps(np.zeros((h, w), np.int64), previous, prior)[1]
    out = np.argmin(d, axis=-1).astype(np.int64)
    if not lam:
        return out.astype(np.int32)
    prev = np.full((h, w), -1, np.int64) if previous is None else previous

    def word(r, c):
        return out[r, c] if 0 <= r < h and 0 <= c < w else -1

    words = np.arange(k)
    for _ in range(passes):
        changed = False
        for r in range(h):
            for c in range(w):
                cost = d[r, c] + lam * code_lengths(prior, word(r, c - 1), word(r - 1, c), prev[r, c])
                if c + 1 < w:  # the right neighbour's left word is this one
                    cost += lam * _word_bits(prior, words, np.full(k, word(r - 1, c + 1)), np.full(k, prev[r, c + 1]),
                                             out[r, c + 1])
                if r + 1 < h:  # the lower neighbour's upper word is this one
                    cost += lam * _word_bits(prior, np.full(k, word(r + 1, c - 1)), words, np.full(k, prev[r + 1, c]),
                                             out[r + 1, c])
                best = int(np.argmin(cost))
                if cost[best] < cost[out[r, c]]:
                    out[r, c], changed = best, True
        if not changed:
            break
    return out.astype(np.int32)
