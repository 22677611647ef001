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
CANDIDATES = 16  # words per position whose effect on the neighbours is weighed (of K): on the bundled
# clips all 256 cost 4-7x the time for the same bytes (and a cost J 0.05% higher: ICM finds another local optimum)


def check_lambda(value) -> float:
    lam = float(value)
    if not np.isfinite(lam) or not 0.0 <= lam <= 1e6:
        raise ConfigError(f"coding.rd_lambda must be a finite number in [0, 1e6], got {value!r}")
    return lam


def code_lengths(prior: ip.IndexPrior, left, up, prev) -> np.ndarray:
    """Bits the coder spends on each word `(..., K)` in a context or a batch of contexts (ints or arrays
    that broadcast; -1: no such neighbour)."""
    left, up, prev = np.broadcast_arrays(left, up, prev)
    freq = quantize_frequencies(ip.raw_frequencies(prior, left, up, prev))
    return PRECISION - np.log2(freq.astype(np.float64))


def rd_index_map(distances, previous, prior: ip.IndexPrior, lam: float, *, passes: int = PASSES,
                 candidates: int = CANDIDATES) -> np.ndarray:
    """The index map `(h, w)` int32 lowering distortion + lambda x bits from the nearest words.

    distances: `(h, w, K)` squared distances of each vector to every codeword divided by the codewords'
    dimension D (`codec.vq.squared_distances(z, codebook) / D`); previous: the previous keyframe's map
    `(h, w)` as coded (None for a stream's first keyframe).

    Iterated conditional modes: starting from the nearest words, up to `passes` raster sweeps give each
    position the word of least total cost with every other word fixed: its distance, its own bits, and
    the bits of its right and lower neighbours, whose context it is. The candidates are the `candidates`
    words of least distance + own bits (all K if `candidates` >= K) and the current word, so no step
    raises the map's cost (distortion + lambda x ideal bits): the result never costs more than the
    nearest words. A sweep that changes nothing ends the search."""
    lam = check_lambda(lam)
    if not 0 <= passes <= MAX_PASSES:
        raise ConfigError(f"RD passes must be in [0, {MAX_PASSES}], got {passes}")
    if candidates < 1:
        raise ConfigError(f"RD candidates must be >= 1, got {candidates}")
    d = np.asarray(distances, np.float64)
    k = prior.codebook_size
    if d.ndim != 3 or d.shape[-1] != k:
        raise ConfigError(f"distances must be (h, w, {k}), got {d.shape}")
    h, w, _ = d.shape
    m = min(int(candidates), k)
    if previous is not None:
        previous = ip.check_maps(np.zeros((h, w), np.int64), previous, prior)[1]
    out = np.argmin(d, axis=-1).astype(np.int64)
    if not lam:
        return out.astype(np.int32)
    prev = np.full((h, w), -1, np.int64) if previous is None else previous

    def word(r, c):
        return out[r, c] if 0 <= r < h and 0 <= c < w else -1

    for _ in range(passes):
        changed = False
        for r in range(h):
            for c in range(w):
                own = d[r, c] + lam * code_lengths(prior, word(r, c - 1), word(r - 1, c), prev[r, c])
                # The neighbours' terms cost a (words x K) table each: weigh them for the words cheapest on
                # their own and the current word (so no step raises the cost), not for all K.
                words = np.union1d(np.argpartition(own, m - 1)[:m], [out[r, c]]) if m < k else np.arange(k)
                cost = own[words]
                if c + 1 < w:  # the right neighbour's left word is this one
                    cost = cost + lam * code_lengths(prior, words, word(r - 1, c + 1), prev[r, c + 1])[:, out[r, c + 1]]
                if r + 1 < h:  # the lower neighbour's upper word is this one
                    cost = cost + lam * code_lengths(prior, word(r + 1, c - 1), words, prev[r + 1, c])[:, out[r + 1, c]]
                best, current = int(np.argmin(cost)), int(np.searchsorted(words, out[r, c]))  # words: sorted
                if cost[best] < cost[current]:
                    out[r, c], changed = words[best], True
        if not changed:
            break
    return out.astype(np.int32)
