"""LPIPS (Zhang et al. 2018, v0.1) with the AlexNet or VGG-16 trunk, as Flax NNX modules.

Mirrors the `lpips` package: `features` is torchvision's `alexnet().features` / `vgg16().features` (same
indices, so the backbone key `features.3.weight` is our `features.3.kernel`; ReLU and max-pool slots hold
parameter-free modules), and `lin0..lin4` are the package's heads (`lin0.model.1.weight`: dropout at
slot 0, a bias-free 1x1 conv at slot 1). Inputs are channels-last RGB in [-1, 1]; the output is one
distance per image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

# (torchvision layer spec, indices whose outputs LPIPS taps). Spec: ("conv", in, out, kernel, stride,
# pad) | ("relu",) | ("pool", kernel, stride).
_ALEX = (
    [
        ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
        ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
        ("conv", 192, 384, 3, 1, 1), ("relu",),
        ("conv", 384, 256, 3, 1, 1), ("relu",),
        ("conv", 256, 256, 3, 1, 1), ("relu",),
    ],
    (1, 4, 7, 9, 11),
)


def _vgg16_spec():
    layers, taps = [], []
    cin = 3
    for i, block in enumerate(((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))):
        if i:
            layers.append(("pool", 2, 2))
        for cout in block:
            layers += [("conv", cin, cout, 3, 1, 1), ("relu",)]
            cin = cout
        taps.append(len(layers) - 1)
    return layers, tuple(taps)


_NETS = {"alex": _ALEX, "vgg": _vgg16_spec()}


@dataclasses.dataclass(frozen=True)
class LPIPSConfig:
    net: str = "alex"  # "alex" | "vgg"

    @classmethod
    def preset(cls, name: str) -> "LPIPSConfig":
        return cls(net=name)


class ReLU(nnx.Module):
    def __call__(self, x):
        return jax.nn.relu(x)


class MaxPool(nnx.Module):
    """torch MaxPool2d without padding and floor mode, i.e. VALID windows."""

    def __init__(self, kernel: int, stride: int):
        self.kernel, self.stride = kernel, stride

    def __call__(self, x):
        return nnx.max_pool(x, (self.kernel, self.kernel), (self.stride, self.stride), "VALID")


class Dropout(nnx.Module):
    """Slot 0 of the package's `NetLinLayer`; identity at evaluation."""

    def __call__(self, x):
        return x


class NetLinLayer(nnx.Module):
    def __init__(self, channels: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.model = nnx.List(
            [Dropout(), nnx.Conv(channels, 1, (1, 1), use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)]
        )

    def __call__(self, x):
        return self.model[1](x)


class LPIPS(nnx.Module):
    # The package's ScalingLayer constants: ImageNet statistics expressed in [-1, 1].
    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self, config: LPIPSConfig = LPIPSConfig(), *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if config.net not in _NETS:
            raise ValueError(f"unknown LPIPS trunk {config.net!r}; one of {sorted(_NETS)}")
        self.config = config
        self.dtype = dtype
        spec, self.taps = _NETS[config.net]
        layers, chns = [], []
        for s in spec:
            if s[0] == "conv":
                _, cin, cout, k, st, p = s
                layers.append(
                    nnx.Conv(cin, cout, (k, k), strides=(st, st), padding=((p, p), (p, p)), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                )
                chns.append(cout)
            elif s[0] == "relu":
                layers.append(ReLU())
            else:
                layers.append(MaxPool(s[1], s[2]))
        self.features = nnx.List(layers)
        tap_chns = [_channels_at(spec, t) for t in self.taps]
        for i, c in enumerate(tap_chns):
            setattr(self, f"lin{i}", NetLinLayer(c, dtype=dtype, param_dtype=param_dtype, rngs=rngs))

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Distance per image of `(..., H, W, 3)` inputs in [-1, 1] -> `(...)`."""
        lead = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        y = y.reshape((-1,) + y.shape[-3:])
        n = x.shape[0]
        # One trunk pass over both images halves the number of dispatches.
        h = self._scale(jnp.concatenate([x, y], axis=0)).astype(self.dtype)
        total = jnp.zeros((n,), jnp.float32)
        tap = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == self.taps[tap]:
                f = h.astype(jnp.float32)
                f = f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)
                d = (f[:n] - f[n:]) ** 2
                lin = getattr(self, f"lin{tap}")
                total = total + jnp.mean(lin(d.astype(self.dtype)).astype(jnp.float32), axis=(1, 2, 3))
                tap += 1
                if tap == len(self.taps):
                    break
        return total.reshape(lead)

    def _scale(self, x):
        shift = jnp.asarray(self.SHIFT, jnp.float32)
        scale = jnp.asarray(self.SCALE, jnp.float32)
        return (x.astype(jnp.float32) - shift) / scale


def _channels_at(spec, index):
    return [s[2] for s in spec[: index + 1] if s[0] == "conv"][-1]
