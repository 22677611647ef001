"""DISTS: a torchvision VGG-16 state dict (the trunk) + DISTS_pytorch's alpha/beta (`weights.pt`).

  python -m convert_weights dists vgg16-397923af.pth out/dists [--alpha-beta PATH]

SRC is the torchvision backbone (`features.N.weight`; the classifier is dropped) or a whole
`DISTS_pytorch.DISTS` state dict (`stageK.N.weight`, `alpha`, `beta`). alpha/beta default to the file
shipped in the installed `DISTS_pytorch` wheel; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import re

from convert_weights.core import abstract_shapes, map_onto, read_state_dict
from m3cvc_jax.errors import WeightsError

_STAGE = re.compile(r"^stage\d+\.(\d+)\.(weight|bias)$")


def add_arguments(parser):
    parser.add_argument("--alpha-beta", default=None, help="DISTS weights.pt (default: the one in DISTS_pytorch)")


def packaged_alpha_beta() -> str:
    try:
        import DISTS_pytorch
    except ImportError:
        raise WeightsError("DISTS_pytorch is not installed; pass --alpha-beta PATH to its weights.pt") from None
    path = os.path.join(os.path.dirname(DISTS_pytorch.__file__), "weights.pt")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: missing; pass --alpha-beta PATH")
    return path


def _rename(key: str) -> str | None:
    m = _STAGE.match(key)
    if m:
        return f"features.{m.group(1)}.{m.group(2)}"
    if key.startswith("classifier.") or key.endswith(".filter") or key in ("mean", "std"):
        return None
    return key


def convert_state(backbone: dict, alpha_beta: dict) -> dict:
    from flax import nnx

    from m3cvc_jax.nn.dists import DISTS

    shapes = abstract_shapes(lambda: DISTS(rngs=nnx.Rngs(0)))
    state = {k: v for k, v in backbone.items() if k not in ("alpha", "beta")}
    for k in ("alpha", "beta"):
        if k not in alpha_beta:
            raise WeightsError(f"DISTS weights lack {k!r}")
        state[k] = alpha_beta[k].reshape(-1)  # stored (1, C, 1, 1) by the package
    return map_onto(shapes, state, rename=_rename, source="DISTS weights")


def convert(src: str, dst: str, *, alpha_beta: str | None = None, overwrite: bool = False) -> str:
    from m3cvc_jax.nn.dists import DISTSConfig
    from m3cvc_jax.weights import save_checkpoint

    backbone = read_state_dict(src)
    ab = backbone if "alpha" in backbone and alpha_beta is None else read_state_dict(alpha_beta or packaged_alpha_beta())
    params = convert_state(backbone, ab)
    return save_checkpoint(dst, family="dists", config=dataclasses.asdict(DISTSConfig()),
                           params=params, overwrite=overwrite)
