"""Classifier-free guidance: out = uncond + scale * (cond - uncond), as a wrapper around a model_fn.

`guided(model_fn)` returns a model_fn whose `cond` is a `CFGCond(cond, uncond, scale)`. The scale is an
array leaf, so changing it does not recompile. `batched=True` runs one forward on the concatenated batch
[cond; uncond] (SEINE's `forward_with_cfg` order); `batched=False` runs two forwards (half the activation
memory). Every leaf of `cond`/`uncond` must have the batch as its leading axis.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

ModelFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]


@struct.dataclass
class CFGCond:
    cond: Any
    uncond: Any
    scale: jax.Array | float = 1.0


def combine(out_cond: jax.Array, out_uncond: jax.Array, scale, guided_channels: int | None = None) -> jax.Array:
    """uncond + scale * (cond - uncond), on the first `guided_channels` channels (last axis) if given;
    the other channels are taken from the conditional output, as SEINE does."""
    scale = jnp.asarray(scale, jnp.float32).astype(out_cond.dtype)
    if guided_channels is None:
        return out_uncond + scale * (out_cond - out_uncond)
    c, u = out_cond[..., :guided_channels], out_uncond[..., :guided_channels]
    return jnp.concatenate([u + scale * (c - u), out_cond[..., guided_channels:]], axis=-1)


def guided(model_fn: ModelFn, *, batched: bool = True, guided_channels: int | None = None) -> ModelFn:
    """A model_fn(params, x, t, CFGCond) applying classifier-free guidance around `model_fn`."""

    def guided_fn(params, x: jax.Array, t: jax.Array, cond: CFGCond) -> jax.Array:
        if batched:
            n = x.shape[0]
            both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond.cond, cond.uncond)
            t2 = jnp.concatenate([t, t], axis=0) if jnp.ndim(t) else t
            out = model_fn(params, jnp.concatenate([x, x], axis=0), t2, both)
            out_c, out_u = out[:n], out[n:]
        else:
            out_c = model_fn(params, x, t, cond.cond)
            out_u = model_fn(params, x, t, cond.uncond)
        return combine(out_c, out_u, cond.scale, guided_channels)

    return guided_fn


def unguided(model_fn: ModelFn) -> ModelFn:
    """A model_fn taking a `CFGCond` that runs only the conditional branch: what guidance at scale 1
    computes (uncond + 1 (cond - uncond)), for half the work. For callers that know the scale statically."""

    def cond_fn(params, x: jax.Array, t: jax.Array, cond: CFGCond) -> jax.Array:
        return model_fn(params, x, t, cond.cond)

    return cond_fn
