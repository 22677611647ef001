"""Integer frequency tables for constriction's range coder: the exact hand-off every index model uses.

Every probability is an integer frequency >= 1, the frequencies of a table summing to exactly
2**PRECISION (constriction's default 24-bit precision). They are handed to
`constriction.stream.model.Categorical(perfect=False)` as the float64 values `freq - 1`, which sum to
`2**24 - n`: constriction's fast quantiser then scales by exactly 1.0 and adds one per symbol, so its
fixed-point table equals our integers with no rounding anywhere (all values are integers below 2**53, and
IEEE-754 addition of such integers is exact on every platform).
"""

from __future__ import annotations

import numpy as np

from m3cvc_jax.errors import ConfigError

PRECISION = 24
_TOTAL = 1 << PRECISION


def quantize_frequencies(counts) -> np.ndarray:
    """Integer frequencies >= 1 summing to 2**PRECISION, proportional to `counts` (rows of a 2-D array).

    Each symbol gets 1 plus floor(free * c / C) of the remaining `free = 2**24 - n`; the (< n) units lost
    to flooring go to the symbol with the largest count (ties: the lower index). A row that already is
    such a table is returned unchanged. Integer arithmetic only.
    """
    c = np.asarray(counts, dtype=np.int64)
    squeeze = c.ndim == 1
    c = np.atleast_2d(c)
    n = c.shape[1]
    if n < 2 or n >= _TOTAL // 2:
        raise ConfigError(f"alphabet size {n} unsupported")
    if c.min() < 0:
        raise ConfigError("counts must be non-negative")
    total = c.sum(axis=1)
    exact = (total == _TOTAL) & (c.min(axis=1) >= 1)
    if total.min() == 0:  # no counts at all: uniform
        c = np.where(total[:, None] == 0, 1, c)
        total = c.sum(axis=1)
    while total.max() > 1 << 38:  # keeps free * c below 2**62
        c = np.where(total[:, None] > 1 << 38, (c + 1) // 2, c)
        total = c.sum(axis=1)
    free = _TOTAL - n
    freq = 1 + (free * c) // total[:, None]
    freq[np.arange(len(c)), np.argmax(c, axis=1)] += _TOTAL - freq.sum(axis=1)
    if exact.any():
        freq = np.where(exact[:, None], c, freq)
    return freq[0] if squeeze else freq


def categorical(freq: np.ndarray):
    import constriction  # loaded on first coding: reading a stream (inspect) needs no coder

    return constriction.stream.model.Categorical((freq - 1).astype(np.float64), perfect=False)


