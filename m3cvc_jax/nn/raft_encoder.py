"""RAFT's feature/context encoders (torchvision layout), channels-last.

torchvision's `Conv2dNormActivation` is a Sequential (conv, norm, relu); `ConvNormAct` mirrors it as an
`nnx.List` so the keys stay `convnormrelu1.0.weight` (conv) and `convnormrelu1.1.weight` (batch norm).
Instance norm has no parameters (affine=False in torchvision), so it occupies no list slot here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.nn.layers import GroupNorm

F32 = jnp.float32


def conv(cin: int, cout: int, kernel, *, stride: int = 1, padding=None, dtype, param_dtype, rngs) -> nnx.Conv:
    """Conv2d with PyTorch's explicit padding; default padding keeps the size ((k - 1) // 2)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if padding is None:
        padding = ((kh - 1) // 2, (kw - 1) // 2)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return nnx.Conv(cin, cout, (kh, kw), strides=stride, padding=((ph, ph), (pw, pw)), use_bias=True,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class BatchNorm(nnx.Module):
    """BatchNorm2d in inference mode. The running statistics are `nnx.Param`s on purpose: RAFT is only
    run here, never trained, and Params travel with the converted checkpoint like any weight."""

    def __init__(self, channels: int, *, eps: float = 1e-5, dtype=F32, param_dtype=F32):
        self.scale = nnx.Param(jnp.ones((channels,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype))
        self.running_mean = nnx.Param(jnp.zeros((channels,), param_dtype))
        self.running_var = nnx.Param(jnp.ones((channels,), param_dtype))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x):
        inv = jax.lax.rsqrt(self.running_var[...].astype(F32) + self.eps) * self.scale[...].astype(F32)
        y = (x.astype(F32) - self.running_mean[...].astype(F32)) * inv + self.bias[...].astype(F32)
        return y.astype(self.dtype)


def instance_norm(x: jax.Array, dtype) -> jax.Array:
    """InstanceNorm2d(affine=False): per sample and channel over H, W, float32."""
    return GroupNorm(x.shape[-1], x.shape[-1], affine=False, dtype=dtype)(x)


class ConvNormAct(nnx.List):
    """Conv2dNormActivation: conv (slot 0), optional batch norm (slot 1), optional instance norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel, *, stride: int = 1, norm: str | None = None,
                 act: bool = True, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        mods: list[Any] = [conv(cin, cout, kernel, stride=stride, dtype=dtype, param_dtype=param_dtype, rngs=rngs)]
        if norm == "batch":
            mods.append(BatchNorm(cout, dtype=dtype, param_dtype=param_dtype))
        super().__init__(mods)
        self.norm, self.act, self.dtype = norm, act, dtype

    def __call__(self, x):
        x = self[0](x)
        if self.norm == "batch":
            x = self[1](x)
        elif self.norm == "instance":
            x = instance_norm(x, self.dtype)
        return jax.nn.relu(x) if self.act else x


class ResidualBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, *, norm, stride: int = 1, dtype=F32, param_dtype=F32, rngs):
        kw = dict(norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.convnormrelu1 = ConvNormAct(cin, cout, 3, stride=stride, **kw)
        self.convnormrelu2 = ConvNormAct(cout, cout, 3, **kw)
        self.downsample = ConvNormAct(cin, cout, 1, stride=stride, act=False, **kw) if stride != 1 else None

    def __call__(self, x):
        y = self.convnormrelu2(self.convnormrelu1(x))
        if self.downsample is not None:
            x = self.downsample(x)
        return jax.nn.relu(x + y)


class BottleneckBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, *, norm, stride: int = 1, dtype=F32, param_dtype=F32, rngs):
        kw = dict(norm=norm, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.convnormrelu1 = ConvNormAct(cin, cout // 4, 1, **kw)
        self.convnormrelu2 = ConvNormAct(cout // 4, cout // 4, 3, stride=stride, **kw)
        self.convnormrelu3 = ConvNormAct(cout // 4, cout, 1, **kw)
        self.downsample = ConvNormAct(cin, cout, 1, stride=stride, act=False, **kw) if stride != 1 else None

    def __call__(self, x):
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        if self.downsample is not None:
            x = self.downsample(x)
        return jax.nn.relu(x + y)


BLOCKS = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}


class FeatureEncoder(nnx.Module):
    """Downsamples by 8: 7x7 stride-2 stem, three pairs of blocks (strides 1, 2, 2), 1x1 output conv."""

    def __init__(self, layers: tuple[int, ...], *, block: str, norm: str | None, dtype=F32, param_dtype=F32,
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        make = BLOCKS[block]
        self.convnormrelu = ConvNormAct(3, layers[0], 7, stride=2, norm=norm, **kw)
        for i, stride in zip((1, 2, 3), (1, 2, 2)):
            pair = nnx.List([make(layers[i - 1], layers[i], norm=norm, stride=stride, **kw),
                             make(layers[i], layers[i], norm=norm, stride=1, **kw)])
            setattr(self, f"layer{i}", pair)
        self.conv = conv(layers[3], layers[4], 1, **kw)

    def __call__(self, x):
        x = self.convnormrelu(x)
        for pair in (self.layer1, self.layer2, self.layer3):
            for block in pair:
                x = block(x)
        return self.conv(x)
