"""DISTS (Ding et al. 2020) as a Flax NNX module: VGG-16 with L2 pooling, structure + texture similarity.

Mirrors `DISTS_pytorch`: `features` holds torchvision's `vgg16().features` layers 0..29 at the same indices,
except that the max-pools (4, 9, 16, 23) are L2 pooling (3x3 Hann window, stride 2, padding 1, no
parameters); `alpha` and `beta` are the calibrated per-channel weights (the package's `weights.pt`,
stored here flat, 1475 = 3 + 64 + 128 + 256 + 512 + 512). Inputs channels-last RGB in [-1, 1]; the output is
one distance per image (lower is better).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.nn.lpips import ReLU

CHANNELS = (3, 64, 128, 256, 512, 512)
_POOLS = (4, 9, 16, 23)
_TAPS = (3, 8, 15, 22, 29)  # relu1_2 .. relu5_3


@dataclasses.dataclass(frozen=True)
class DISTSConfig:
    net: str = "vgg16"


class L2Pooling(nnx.Module):
    """sqrt(depthwise Hann-blur(x²) + 1e-12), stride 2: an anti-aliased replacement for max-pooling."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, x):
        a = np.hanning(5)[1:-1]
        g = a[:, None] * a[None, :]
        g = (g / g.sum()).astype(np.float32)
        c = x.shape[-1]
        k = jnp.tile(jnp.asarray(g, x.dtype)[:, :, None, None], (1, 1, 1, c))
        out = jax.lax.conv_general_dilated(
            x * x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )
        return jnp.sqrt(out + 1e-12)


class DISTS(nnx.Module):
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, config: DISTSConfig = DISTSConfig(), *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        layers, cin = [], 3
        widths = iter([64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512])
        for i in range(30):
            if i in _POOLS:
                layers.append(L2Pooling(cin))
            elif _is_conv(i):
                cout = next(widths)
                layers.append(nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, param_dtype=param_dtype, rngs=rngs))
                cin = cout
            else:
                layers.append(ReLU())
        self.features = nnx.List(layers)
        total = sum(CHANNELS)
        self.alpha = nnx.Param(jnp.full((total,), 0.1, param_dtype))
        self.beta = nnx.Param(jnp.full((total,), 0.1, param_dtype))

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """Distance per image of `(..., H, W, 3)` inputs in [-1, 1] -> `(...)`."""
        lead = x.shape[:-3]
        x = (x.reshape((-1,) + x.shape[-3:]).astype(jnp.float32) + 1.0) / 2.0
        y = (y.reshape((-1,) + y.shape[-3:]).astype(jnp.float32) + 1.0) / 2.0
        n = x.shape[0]
        both = jnp.concatenate([x, y], axis=0)
        feats = [both]
        h = ((both - jnp.asarray(self.MEAN)) / jnp.asarray(self.STD)).astype(self.dtype)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                feats.append(h.astype(jnp.float32))
        alpha = self.alpha[...].astype(jnp.float32)
        beta = self.beta[...].astype(jnp.float32)
        w_sum = alpha.sum() + beta.sum()
        c1 = c2 = 1e-6
        d1 = jnp.zeros((n,), jnp.float32)
        d2 = jnp.zeros((n,), jnp.float32)
        offset = 0
        for f, c in zip(feats, CHANNELS):
            a, b = f[:n], f[n:]
            mx, my = a.mean(axis=(1, 2)), b.mean(axis=(1, 2))
            vx = ((a - mx[:, None, None]) ** 2).mean(axis=(1, 2))
            vy = ((b - my[:, None, None]) ** 2).mean(axis=(1, 2))
            cov = (a * b).mean(axis=(1, 2)) - mx * my
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            s2 = (2 * cov + c2) / (vx + vy + c2)
            d1 = d1 + (s1 * alpha[offset : offset + c] / w_sum).sum(-1)
            d2 = d2 + (s2 * beta[offset : offset + c] / w_sum).sum(-1)
            offset += c
        return (1.0 - (d1 + d2)).reshape(lead)


def _is_conv(i: int) -> bool:
    # torchvision vgg16 features: conv at even offsets within each block, ReLU after each conv.
    return i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
