"""Scaled dot-product attention shared by every network in the project.

One function so that all ports (SD, SEINE, CLIP, Qwen2-VL, the post-encoder) get the same numerics:
logits and softmax in float32 whatever the compute dtype, the result cast back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> jax.Array:
    """Attention over `(B, L, N, D)` queries and `(B, S, K, D)` keys/values (K divides N: grouped heads).

    bias: added to the logits, broadcastable to `(B, N, L, S)`. mask: boolean, True where attending is
    allowed, broadcastable to `(B, N, L, S)`. scale: defaults to `1/sqrt(D)`.
    """
    num_heads, num_kv = q.shape[-2], k.shape[-2]
    if num_kv != num_heads:
        # Grouped-query attention: each key/value head serves num_heads // num_kv query heads.
        k = jnp.repeat(k, num_heads // num_kv, axis=-2)
        v = jnp.repeat(v, num_heads // num_kv, axis=-2)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if bias is None and mask is None and not is_causal and q.ndim == 4 and q.shape[1] * k.shape[1] >= BLOCKED_ATTENTION_MIN_LOGITS:
        return blocked_attention(q, k, v, scale=scale)
    logits = jnp.einsum("...lnd,...snd->...nls", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if is_causal:
        length, source = logits.shape[-2], logits.shape[-1]
        causal = jnp.tril(jnp.ones((length, source), bool), k=source - length)
        mask = causal if mask is None else jnp.logical_and(mask, causal)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("...nls,...snd->...lnd", probs, v)


# Above this many logits per head, plain attention spends its time writing and re-reading the logits
# (SD's 64x64 latents: 4096^2 per head, 8 heads); computed block by block they stay in cache.
BLOCKED_ATTENTION_MIN_LOGITS = 1 << 18
BLOCKED_ATTENTION_BLOCK = 256


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float | None = None,
                      block: int | None = None) -> jax.Array:
    """`dot_product_attention` without bias or mask, over `(B, L, N, D)` / `(B, S, N, D)`, computed per
    head and per block of `block` queries (`lax.map`), so that no `(N, L, S)` logits are materialised.
    Same numerics: float32 logits, scale applied to the logits, float32 softmax."""
    b, l, n, d = q.shape
    s = k.shape[1]
    scale = d ** -0.5 if scale is None else scale
    block = min(block or BLOCKED_ATTENTION_BLOCK, l)
    blocks = -(-l // block)
    qh = jnp.moveaxis(q, 2, 1)
    if blocks * block != l:
        qh = jnp.pad(qh, ((0, 0), (0, 0), (0, blocks * block - l), (0, 0)))
    qh = qh.reshape(b * n * blocks, block, d)
    kh = jnp.moveaxis(k, 2, 1).reshape(b * n, s, d)
    vh = jnp.moveaxis(v, 2, 1).reshape(b * n, s, d)

    def one(args):
        qq, head = args
        logits = jnp.dot(qq, kh[head].T, preferred_element_type=jnp.float32) * scale
        p = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        out = jnp.dot(p.astype(v.dtype), vh[head], preferred_element_type=jnp.float32)
        return (out / jnp.sum(p, axis=-1, keepdims=True)).astype(v.dtype)

    out = jax.lax.map(one, (qh, jnp.arange(b * n * blocks) // blocks))
    return jnp.moveaxis(out.reshape(b, n, blocks * block, d)[:, :, :l], 1, 2)
