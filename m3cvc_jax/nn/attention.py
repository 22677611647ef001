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
