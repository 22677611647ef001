"""Vector quantisation maths for the keyframe codec (pure, jittable, any leading batch dims).

Everything works on `z` of shape `(..., D)` against a codebook `(K, D)`: leading dims are flattened
internally, so the same functions serve one index map, a batch, or a vmapped stack. Training uses
`quantize` (nearest codeword + straight-through), `commit_loss`, and either `codebook_loss` (gradient
update) or `ema_update` (k-means style EMA, no gradient to the codebook), plus `restart_dead_codes`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """`(..., K)` squared Euclidean distances, in float32 whatever the input dtype."""
    z = z.astype(jnp.float32)
    codebook = codebook.astype(jnp.float32)
    # ||z||^2 - 2 z.c + ||c||^2: one matmul instead of a (..., K, D) difference tensor.
    cross = jnp.einsum("...d,kd->...k", z, codebook, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(z * z, axis=-1, keepdims=True) - 2.0 * cross + jnp.sum(codebook * codebook, axis=-1)


# Vectors per block of `nearest`: a block's (K, B) distance table stays in the CPU's L2 cache (256 x 512
# float32 = 512 KB); over the whole batch at once the table spills and the reduction runs 5-10x slower.
NEAREST_BLOCK = 512


def _nearest_block(z: jax.Array, codebook: jax.Array, sq_norms: jax.Array) -> jax.Array:
    # (K, B): the reductions below run over the leading axis, elementwise across B contiguous lanes.
    dist = sq_norms[:, None] - 2.0 * jnp.einsum("kd,bd->kb", codebook, z, precision=jax.lax.Precision.HIGHEST)
    best = jnp.min(dist, axis=0)
    # The first index reaching the minimum, as argmin breaks ties, from two plain min-reductions (XLA's
    # CPU argmin is a slower two-operand reduction).
    index = jnp.arange(codebook.shape[0], dtype=jnp.int32)[:, None]
    return jnp.min(jnp.where(dist == best, index, codebook.shape[0]), axis=0)


def nearest(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the Euclidean-nearest codeword for each vector: `(...,)` int32 (the paper's argmin; ties go
    to the lowest index)."""
    # ||z||^2 is the same for every codeword, so the argmin needs only ||c||^2 - 2 z.c.
    z, codebook = z.astype(jnp.float32), codebook.astype(jnp.float32)
    lead, d = z.shape[:-1], z.shape[-1]
    flat = z.reshape(-1, d)
    n = flat.shape[0]
    sq_norms = jnp.sum(codebook * codebook, axis=-1)
    if n <= NEAREST_BLOCK:
        return _nearest_block(flat, codebook, sq_norms).reshape(lead)
    blocks = -(-n // NEAREST_BLOCK)
    flat = jnp.pad(flat, ((0, blocks * NEAREST_BLOCK - n), (0, 0)))
    out = jax.lax.map(lambda b: _nearest_block(b, codebook, sq_norms), flat.reshape(blocks, NEAREST_BLOCK, d))
    return out.reshape(-1)[:n].reshape(lead)


def lookup(indices: jax.Array, codebook: jax.Array) -> jax.Array:
    """Codewords for `indices` `(...,)` -> `(..., D)`."""
    return jnp.take(codebook, indices, axis=0)


def straight_through(z: jax.Array, z_q: jax.Array) -> jax.Array:
    """Forward value `z_q`, gradient of the identity to `z` (so the encoder learns through the argmin)."""
    return z + jax.lax.stop_gradient(z_q - z)


class Quantized(NamedTuple):
    z_q: jax.Array  # straight-through codewords, (..., D)
    indices: jax.Array  # (...,) int32
    codewords: jax.Array  # the raw codewords (gradient flows to the codebook), (..., D)


def quantize(z: jax.Array, codebook: jax.Array) -> Quantized:
    """Nearest codeword, its straight-through estimate, and the raw codewords."""
    indices = nearest(jax.lax.stop_gradient(z), jax.lax.stop_gradient(codebook))
    codewords = lookup(indices, codebook)
    return Quantized(straight_through(z, codewords), indices, codewords)


def commit_loss(z: jax.Array, codewords: jax.Array) -> jax.Array:
    """`mean ||z - sg(z_q)||^2` over vectors (summed over D): pulls the encoder onto its codewords."""
    diff = z.astype(jnp.float32) - jax.lax.stop_gradient(codewords).astype(jnp.float32)
    return jnp.mean(jnp.sum(diff * diff, axis=-1))


def codebook_loss(z: jax.Array, codewords: jax.Array) -> jax.Array:
    """`mean ||sg(z) - z_q||^2`: moves codewords towards the encoder outputs (when not using EMA)."""
    diff = jax.lax.stop_gradient(z).astype(jnp.float32) - codewords.astype(jnp.float32)
    return jnp.mean(jnp.sum(diff * diff, axis=-1))


def context_rate_bits(z: jax.Array, codebook: jax.Array, indices: jax.Array, marginal: jax.Array,
                      temperature: float) -> jax.Array:
    """A differentiable proxy of the code length, in bits per index, of index maps `(..., H, W)` under a
    spatial context model: the mean over positions of `sum_k q(k) * -log2 p(k | left, up)`, where
    `q = softmax(-||z - e_k||^2 / (D t))` softly assigns the vector `z` `(..., H, W, D)` to the words, and
    `p(k | left, up)` is proportional to `marginal[k] * exp(-(||e_k - e_left||^2 + ||e_k - e_up||^2) / (D t))`
    with `left`, `up` the (hard) words of the causal neighbours in `indices` (no term at the map border).

    Minimising it pulls each vector towards words close to its neighbours' (a smoother, more predictable
    map, as the learned index prior's neighbour experts reward) and towards frequent words. `marginal`
    (K,) > 0, e.g. the EMA word counts."""
    d = z.shape[-1]
    logq = jax.nn.log_softmax(-squared_distances(z, codebook) / (d * temperature), axis=-1)
    words = squared_distances(codebook, codebook) / (d * temperature)  # (K, K)
    penalty = jnp.zeros(logq.shape, jnp.float32)
    penalty = penalty.at[..., :, 1:, :].add(words[indices[..., :, :-1]])
    penalty = penalty.at[..., 1:, :, :].add(words[indices[..., :-1, :]])
    logp = jax.nn.log_softmax(jnp.log(marginal.astype(jnp.float32)) - penalty, axis=-1)
    return -jnp.mean(jnp.sum(jnp.exp(logq) * logp, axis=-1)) / jnp.log(2.0)


def code_counts(indices: jax.Array, num_codes: int) -> jax.Array:
    """How many vectors chose each code: `(K,)` float32."""
    one_hot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32)
    return jnp.sum(one_hot, axis=0)


class CodeStats(NamedTuple):
    perplexity: jax.Array  # exp(entropy) of the batch's code histogram: 1 = collapse, K = uniform
    usage: jax.Array  # fraction of codes chosen at least once in the batch
    dead: jax.Array  # number of codes not chosen in the batch
    entropy_bits: jax.Array  # entropy of the histogram in bits per index (an ideal rate)


def code_stats(indices: jax.Array, num_codes: int) -> CodeStats:
    counts = code_counts(indices, num_codes)
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    used = jnp.sum(counts > 0)
    return CodeStats(jnp.exp(entropy), used / num_codes, num_codes - used, entropy / jnp.log(2.0))


class EMAState(NamedTuple):
    cluster_size: jax.Array  # (K,) EMA of vectors assigned per code
    embed_sum: jax.Array  # (K, D) EMA of the sum of vectors assigned per code


def ema_init(codebook: jax.Array) -> EMAState:
    """EMA statistics consistent with `codebook` (each code as if it had seen itself once)."""
    # A copy, never an alias of the codebook: callers donate both to a jitted step.
    return EMAState(jnp.ones(codebook.shape[0], jnp.float32), jnp.array(codebook, jnp.float32, copy=True))


def ema_update(
    state: EMAState, z: jax.Array, indices: jax.Array, *, decay: float, eps: float = 1e-5
) -> tuple[EMAState, jax.Array]:
    """One EMA (online k-means) step: returns the new statistics and the new codebook `(K, D)`."""
    num_codes = state.cluster_size.shape[0]
    flat = jax.lax.stop_gradient(z).reshape(-1, z.shape[-1]).astype(jnp.float32)
    one_hot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32)
    counts = jnp.sum(one_hot, axis=0)
    sums = jnp.einsum("nk,nd->kd", one_hot, flat, precision=jax.lax.Precision.HIGHEST)
    cluster_size = decay * state.cluster_size + (1.0 - decay) * counts
    embed_sum = decay * state.embed_sum + (1.0 - decay) * sums
    # Laplace smoothing keeps codes that lost all vectors from dividing by zero.
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + eps) / (total + num_codes * eps) * total
    return EMAState(cluster_size, embed_sum), embed_sum / smoothed[:, None]


def restart_dead_codes(
    key: jax.Array, codebook: jax.Array, usage: jax.Array, z: jax.Array, *, threshold: float
) -> tuple[jax.Array, jax.Array]:
    """Replace codewords whose `usage` is below `threshold` by random encoder outputs of this batch.

    usage: `(K,)`, e.g. the EMA cluster sizes or a running count. Returns `(new_codebook, dead_mask)`;
    the caller resets whatever statistics it keeps for the dead codes (see `ema_reset`).
    """
    flat = jax.lax.stop_gradient(z).reshape(-1, z.shape[-1]).astype(codebook.dtype)
    picks = jax.random.randint(key, (codebook.shape[0],), 0, flat.shape[0])
    dead = usage < threshold
    return jnp.where(dead[:, None], flat[picks], codebook), dead


def ema_reset(state: EMAState, codebook: jax.Array, dead: jax.Array) -> EMAState:
    """EMA statistics of restarted codes made consistent with their new codewords."""
    cb = codebook.astype(jnp.float32)
    return EMAState(
        jnp.where(dead, 1.0, state.cluster_size), jnp.where(dead[:, None], cb, state.embed_sum)
    )
