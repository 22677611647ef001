"""LPIPS: a torchvision AlexNet/VGG-16 state dict (the trunk) + the `lpips` package's linear heads.

  python -m convert_weights lpips alexnet-owt-7be5be79.pth out/lpips-alex [--heads PATH] [--net alex]

SRC is the torchvision backbone (`features.N.weight`; the classifier is dropped) or a whole
`lpips.LPIPS` state dict (`net.sliceK.N.weight` + `linK.model.1.weight`). The heads default to the file
shipped inside the installed `lpips` wheel (`lpips/weights/v0.1/{alex,vgg}.pth`), which are the real
calibrated weights; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import re

from convert_weights.core import abstract_shapes, map_onto, read_state_dict
from m3cvc_jax.errors import WeightsError

_SLICE = re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$")


def add_arguments(parser):
    parser.add_argument("--net", choices=("alex", "vgg"), default=None, help="trunk (default: detected from SRC)")
    parser.add_argument("--heads", default=None, help="lpips head .pth (default: the one in the lpips package)")


def packaged_heads(net: str) -> str:
    """Path of the calibrated heads that ship in the `lpips` wheel."""
    try:
        import lpips
    except ImportError:
        raise WeightsError("the lpips package is not installed; pass --heads PATH to its v0.1 head .pth") from None
    path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: the lpips package has no {net} heads; pass --heads PATH")
    return path


def detect_net(state: dict) -> str:
    first = next((v for k, v in state.items() if _rename(k) == "features.0.weight"), None)
    if first is None:
        raise WeightsError("no features.0.weight: not a torchvision AlexNet/VGG-16 or lpips state dict")
    return "alex" if first.shape[-1] == 11 else "vgg"


def _rename(key: str) -> str | None:
    m = _SLICE.match(key)
    if m:
        return f"features.{m.group(1)}.{m.group(2)}"
    # `lins.N` aliases `linN` in the package's module; the scaling constants are built into our port.
    if key.startswith(("classifier.", "scaling_layer.", "lins.")):
        return None
    return key


def convert_state(backbone: dict, heads: dict, net: str) -> dict:
    """Flat params of our `LPIPS` model from the reference tensors (strict; errors list the problems)."""
    from flax import nnx

    from m3cvc_jax.nn.lpips import LPIPS, LPIPSConfig

    shapes = abstract_shapes(lambda: LPIPS(LPIPSConfig(net), rngs=nnx.Rngs(0)))
    # torchvision's vgg16 has layers past the last tap (pool 30); LPIPS never uses them.
    used = {k.rsplit(".", 1)[0] for k in shapes}

    def rename(key):
        out = _rename(key)
        if out is not None and out.startswith("features.") and out.rsplit(".", 1)[0] not in used:
            return None
        return out

    state = {**backbone, **{k: v for k, v in heads.items() if k.startswith("lin")}}
    return map_onto(shapes, state, rename=rename, source=f"lpips-{net} weights")


def convert(src: str, dst: str, *, net: str | None = None, heads: str | None = None, overwrite: bool = False) -> str:
    from m3cvc_jax.nn.lpips import LPIPSConfig
    from m3cvc_jax.weights import save_checkpoint

    backbone = read_state_dict(src)
    net = net or detect_net(backbone)
    if any(k.startswith("lin0.") for k in backbone) and heads is None:
        head_state = backbone
    else:
        head_state = read_state_dict(heads or packaged_heads(net))
    params = convert_state(backbone, head_state, net)
    return save_checkpoint(dst, family="lpips", config=dataclasses.asdict(LPIPSConfig(net)),
                           params=params, overwrite=overwrite)
