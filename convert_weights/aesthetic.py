"""`python -m convert_weights aesthetic SRC DST`: LAION's linear aesthetic head (VBench's
`sa_0_4_vit_l_14_linear.pth`, a state dict with `weight` (1, D) and `bias` (1,)) -> ours."""

from __future__ import annotations

import numpy as np
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto, read_state_dict
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.aesthetic import aesthetic_head
from m3cvc_jax.weights import save_checkpoint

FAMILY = "aesthetic"


def convert_state_dict(sd, *, source: str = "checkpoint") -> tuple[int, dict[str, np.ndarray]]:
    """(embedding width, flat params)."""
    if "weight" not in sd or np.ndim(sd["weight"]) != 2:
        raise WeightsError(f"{source}: expected a Linear state dict with a 2-D `weight` (has {sorted(sd)[:6]})")
    dim = int(sd["weight"].shape[1])
    shapes = abstract_shapes(lambda: aesthetic_head(dim, rngs=nnx.Rngs(0)))
    return dim, {k: np.asarray(v, np.float32) for k, v in map_onto(shapes, sd, source=source).items()}


def convert(src: str, dst: str, *, overwrite: bool = False) -> str:
    dim, params = convert_state_dict(read_state_dict(src), source=src)
    return save_checkpoint(dst, family=FAMILY, config={"embed_dim": dim}, params=params, overwrite=overwrite)
