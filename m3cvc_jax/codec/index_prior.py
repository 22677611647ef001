"""The learned index prior: an integer context model for VQ index maps (entropy model `learned`).

Each index `x` at a raster position is coded as two symbols: its word cluster `c(x)` (the codebook's words
grouped into C clusters by training), then its rank among the words of that cluster.

- Cluster symbol: its context is the clusters of three already-known words, the left and upper neighbours
  in the map (causal) and the co-located word of the previous keyframe's map (temporal; "none" at the
  borders and for a stream's first keyframe): (C+1)**3 contexts. Its counts are `n[ctx, c] * G + alpha *
  g[c]`, trained counts smoothed towards the global cluster counts `g` (G = sum g).
- Word within the cluster: the trained word counts (+1) scaled by 16, plus, for each of the left, upper
  and previous words that lies in this cluster, `boost * (cluster total)` — "copy a neighbour" weights
  learned by the trainer.

Determinism: every count, product and floor division is int64 numpy arithmetic (values stay below 2**62;
`entropy.quantize_frequencies` halves larger rows exactly), and the rows go to the range coder through
`entropy.quantize_frequencies` and `entropy.categorical`, whose hand-off to constriction is exact. No
float, no JAX and no device enter the probabilities, so the encoder and any decoder (any CPU, GPU, TPU,
device count, x64 setting) compute the same integers. Encoder and decoder call the same `_position`
function with the same causal inputs. Floats appear only in `ideal_bits` (a measurement).

The tables travel in the post-encoder checkpoint's `tables` (so the weights fingerprint covers them):
`prior_clusters` (K), `prior_cluster_counts` ((C+1)**3 * C, row-major), `prior_word_counts` (K) and
`prior_params` (C, alpha, boost_left, boost_up, boost_prev).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from m3cvc_jax.codec.frequencies import PRECISION, categorical, quantize_frequencies
from m3cvc_jax.errors import BitstreamError, ConfigError

WITHIN_SCALE = 16  # word counts are scaled by this so that boosts are sixteenths of a cluster's mass
MAX_CLUSTERS = 64
MAX_COUNT = 1 << 31
TABLE_NAMES = ("prior_clusters", "prior_cluster_counts", "prior_word_counts", "prior_params")


@dataclasses.dataclass(frozen=True, eq=False)
class IndexPrior:
    """Trained integer tables (see the module docstring)."""

    clusters: np.ndarray  # (K,) int64 in [0, C)
    cluster_counts: np.ndarray  # ((C+1)**3, C) int64 >= 0
    word_counts: np.ndarray  # (K,) int64 >= 0
    alpha: int
    boosts: tuple[int, int, int]  # left, up, previous

    def __post_init__(self):
        k = len(self.clusters)
        c = self.num_clusters
        if not 2 <= c <= MAX_CLUSTERS or not 2 <= k <= 1 << 16:
            raise ConfigError(f"index prior: {c} clusters of {k} words unsupported")
        if self.clusters.min() < 0 or self.clusters.max() >= c:
            raise ConfigError("index prior: cluster ids outside [0, C)")
        if self.cluster_counts.shape != ((c + 1) ** 3, c) or self.word_counts.shape != (k,):
            raise ConfigError("index prior: table shapes do not match the cluster count")
        for name, v in (("cluster counts", self.cluster_counts), ("word counts", self.word_counts)):
            if v.min() < 0 or v.max() >= MAX_COUNT:
                raise ConfigError(f"index prior: {name} outside [0, 2**31)")
        if not 1 <= self.alpha < MAX_COUNT or any(not 0 <= b <= 1 << 16 for b in self.boosts):
            raise ConfigError("index prior: alpha or boosts out of range")

    @property
    def num_clusters(self) -> int:
        return self.cluster_counts.shape[1]

    @property
    def codebook_size(self) -> int:
        return len(self.clusters)

    @classmethod
    def from_tables(cls, tables: dict) -> "IndexPrior":
        """From a checkpoint's `tables` (lists of non-negative ints); ConfigError if absent or inconsistent."""
        missing = [n for n in TABLE_NAMES if n not in tables]
        if missing:
            raise ConfigError(f"no learned index prior in these weights (missing tables {', '.join(missing)}); "
                              f"train one with python -m train.index_prior")
        params = [int(x) for x in tables["prior_params"]]
        if len(params) != 5:
            raise ConfigError("index prior: prior_params must hold C, alpha and three boosts")
        c = params[0]
        counts = np.asarray(tables["prior_cluster_counts"], np.int64)
        if not 2 <= c <= MAX_CLUSTERS or counts.size != (c + 1) ** 3 * c:
            raise ConfigError("index prior: prior_cluster_counts does not match the cluster count")
        return cls(np.asarray(tables["prior_clusters"], np.int64), counts.reshape((c + 1) ** 3, c),
                   np.asarray(tables["prior_word_counts"], np.int64), params[1], tuple(params[2:]))

    def tables(self) -> dict[str, list[int]]:
        return {"prior_clusters": self.clusters.tolist(),
                "prior_cluster_counts": self.cluster_counts.ravel().tolist(),
                "prior_word_counts": self.word_counts.tolist(),
                "prior_params": [self.num_clusters, self.alpha, *self.boosts]}

    def _derived(self):
        """Tables derived from the trained ones, computed once (the instance is frozen)."""
        if "_cache" not in self.__dict__:
            c = self.num_clusters
            word = self.word_counts + 1
            g = np.zeros(c, np.int64)
            np.add.at(g, self.clusters, word)
            members = [np.flatnonzero(self.clusters == j) for j in range(c)]
            rank = np.zeros(len(self.clusters), np.int64)
            for m in members:
                rank[m] = np.arange(len(m))
            object.__setattr__(self, "_cache", (g, int(g.sum()), members, rank, word))
        return self.__dict__["_cache"]


def context_words(index_map: np.ndarray, previous: np.ndarray | None, r: int, col: int) -> tuple[int, int, int]:
    """The left, upper and previous-map words at (r, col), -1 where there is none."""
    left = int(index_map[r, col - 1]) if col else -1
    up = int(index_map[r - 1, col]) if r else -1
    prev = int(previous[r, col]) if previous is not None else -1
    return left, up, prev


def _position(prior: IndexPrior, left: int, up: int, prev: int):
    """(cluster frequencies (C,), per-cluster within-frequency function) at one position: integers only."""
    g, total_g, members, _, word = prior._derived()
    c = prior.num_clusters
    cl = [c if w < 0 else int(prior.clusters[w]) for w in (left, up, prev)]
    ctx = cl[0] + (c + 1) * cl[1] + (c + 1) ** 2 * cl[2]
    cluster_freq = quantize_frequencies(prior.cluster_counts[ctx] * total_g + prior.alpha * g)

    def within(j: int) -> np.ndarray | None:
        m = members[j]
        if len(m) < 2:
            return None  # a one-word cluster costs nothing beyond its cluster symbol
        w = word[m] * WITHIN_SCALE
        mass = int(word[m].sum())
        for neighbour, boost in zip((left, up, prev), prior.boosts):
            if neighbour >= 0 and boost and prior.clusters[neighbour] == j:
                w[np.searchsorted(m, neighbour)] += boost * mass
        return quantize_frequencies(w)

    return cluster_freq, within


def symbol_tables(index_map: np.ndarray, previous: np.ndarray | None, prior: IndexPrior):
    """Per position of `index_map` (raster order): (cluster, cluster freqs, rank, within freqs or None)."""
    _, _, _, rank, _ = prior._derived()
    h, w = index_map.shape
    for r in range(h):
        for col in range(w):
            x = int(index_map[r, col])
            cluster_freq, within = _position(prior, *context_words(index_map, previous, r, col))
            j = int(prior.clusters[x])
            yield j, cluster_freq, int(rank[x]), within(j)


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


def encode_into(coder, index_map, previous, prior: IndexPrior) -> None:
    """Append `index_map`, given the previous keyframe's map (None for a stream's first keyframe), to a
    constriction RangeEncoder."""
    m, previous = check_maps(index_map, previous, prior)
    for j, cluster_freq, rank, within in symbol_tables(m, previous, prior):
        coder.encode(j, categorical(cluster_freq))
        if within is not None:
            coder.encode(rank, categorical(within))


def decode_from(decoder, shape: tuple[int, int], previous, prior: IndexPrior) -> np.ndarray:
    """Invert `encode_into` on a constriction RangeDecoder; BitstreamError on data that cannot come from it."""
    if len(shape) != 2:
        raise BitstreamError("corrupt index data (a map is 2-D)")
    h, w = shape
    out = np.zeros((h, w), np.int64)
    if previous is not None:
        previous = check_maps(np.zeros((h, w), np.int64), previous, prior)[1]
    _, _, members, _, _ = prior._derived()
    try:
        for r in range(h):
            for col in range(w):
                cluster_freq, within = _position(prior, *context_words(out, previous, r, col))
                j = int(decoder.decode(categorical(cluster_freq)))
                table = within(j)
                rank = 0 if table is None else int(decoder.decode(categorical(table)))
                if rank >= len(members[j]):
                    raise BitstreamError("corrupt index data (word outside its cluster)")
                out[r, col] = members[j][rank]
    except BitstreamError:
        raise
    except Exception as e:  # constriction reports invalid data with assorted exception types
        raise BitstreamError(f"corrupt index data: {e}") from None
    return out.astype(np.int32)


def ideal_bits(index_map, previous, prior: IndexPrior) -> float:
    """-log2 of the map's probability under the integer model (what a perfect coder would spend)."""
    m, previous = check_maps(index_map, previous, prior)
    bits = 0.0
    for j, cluster_freq, rank, within in symbol_tables(m, previous, prior):
        bits += PRECISION - np.log2(float(cluster_freq[j]))
        if within is not None:
            bits += PRECISION - np.log2(float(within[rank]))
    return bits


def frequency_digest(index_map, previous, prior: IndexPrior) -> str:
    """SHA-256 of every integer frequency the coder sees for this map (for determinism checks)."""
    import hashlib

    m, previous = check_maps(index_map, previous, prior)
    h = hashlib.sha256()
    for j, cluster_freq, rank, within in symbol_tables(m, previous, prior):
        h.update(np.ascontiguousarray(cluster_freq, "<i8").tobytes())
        if within is not None:
            h.update(np.ascontiguousarray(within, "<i8").tobytes())
    return h.hexdigest()


def context_ids(index_map: np.ndarray, previous: np.ndarray | None, clusters: np.ndarray, c: int) -> np.ndarray:
    """The cluster-symbol context of every position (vectorised; what `_position` computes one at a time)."""
    m = np.asarray(index_map, np.int64)
    cl = np.asarray(clusters, np.int64)
    left = np.full(m.shape, c, np.int64)
    left[:, 1:] = cl[m[:, :-1]]
    up = np.full(m.shape, c, np.int64)
    up[1:, :] = cl[m[:-1, :]]
    prev = np.full(m.shape, c, np.int64) if previous is None else cl[np.asarray(previous, np.int64)]
    return left + (c + 1) * up + (c + 1) ** 2 * prev
