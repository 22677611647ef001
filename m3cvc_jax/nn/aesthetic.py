"""LAION's linear aesthetic predictor (`sa_0_4_vit_l_14_linear.pth`), the head VBench's aesthetic quality
uses: one `nn.Linear(768, 1)` on L2-normalised CLIP ViT-L/14 image embeddings (keys `weight`, `bias`, so
the module is the Linear itself). The score it gives is on LAION's 1..10 scale; VBench divides it by 10
(`eval.vbench.aesthetic_quality`)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.nn.layers import linear


def aesthetic_head(embed_dim: int = 768, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
    return linear(embed_dim, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
