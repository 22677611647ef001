"""RAFT optical flow (Teed & Deng 2020) in Flax NNX, mirroring `torchvision.models.optical_flow.raft_*`.

Inputs are channels-last RGB in [-1, 1], height and width multiples of 8 (and >= 128 for the 4-level
pyramid). The GRU refinement runs as one `lax.scan`; only the final flow is upsampled (torchvision
upsamples every iterate, the last of which is the same number).
Encoders live in `raft_encoder.py`, correlation and upsampling in `raft_corr.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx, struct

from m3cvc_jax.errors import ConfigError, VideoError
from m3cvc_jax.nn.raft_corr import coords_grid, correlation_pyramid, lookup, upsample_bilinear, upsample_convex
from m3cvc_jax.nn.raft_encoder import ConvNormAct, FeatureEncoder, conv

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class RAFTConfig:
    """The keyword arguments of torchvision's `_raft` (norms: "instance", "batch" or None)."""

    feature_encoder_layers: tuple[int, ...] = (64, 64, 96, 128, 256)
    feature_encoder_block: str = "residual"
    feature_encoder_norm: str | None = "instance"
    context_encoder_layers: tuple[int, ...] = (64, 64, 96, 128, 256)
    context_encoder_block: str = "residual"
    context_encoder_norm: str | None = "batch"
    corr_block_num_levels: int = 4
    corr_block_radius: int = 4
    motion_encoder_corr_layers: tuple[int, ...] = (256, 192)
    motion_encoder_flow_layers: tuple[int, ...] = (128, 64)
    motion_encoder_out_channels: int = 128
    recurrent_block_hidden_state_size: int = 128
    recurrent_block_kernel_size: tuple = ((1, 5), (5, 1))
    recurrent_block_padding: tuple = ((0, 2), (2, 0))
    flow_head_hidden_size: int = 256
    use_mask_predictor: bool = True

    @classmethod
    def preset(cls, name: str) -> "RAFTConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown RAFT preset {name!r}; one of {', '.join(PRESETS)}")
        return PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RAFTConfig":
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v

        # A converted checkpoint's config also names its preset: not a field.
        return cls(**{k: tup(v) for k, v in d.items() if k != "preset"})


PRESETS: dict[str, RAFTConfig] = {
    "large": RAFTConfig(),
    "small": RAFTConfig(
        feature_encoder_layers=(32, 32, 64, 96, 128), feature_encoder_block="bottleneck",
        context_encoder_layers=(32, 32, 64, 96, 160), context_encoder_block="bottleneck", context_encoder_norm=None,
        corr_block_radius=3, motion_encoder_corr_layers=(96,), motion_encoder_flow_layers=(64, 32),
        motion_encoder_out_channels=82, recurrent_block_hidden_state_size=96, recurrent_block_kernel_size=(3,),
        recurrent_block_padding=(1,), flow_head_hidden_size=128, use_mask_predictor=False,
    ),
    # Same structure as "small" at a fraction of the width, 3 pyramid levels (frames >= 64 px): for tests
    # and the `tiny` pipeline preset.
    "tiny": RAFTConfig(
        feature_encoder_layers=(8, 8, 16, 16, 32), feature_encoder_block="bottleneck",
        context_encoder_layers=(8, 8, 16, 16, 40), context_encoder_block="bottleneck", context_encoder_norm=None,
        corr_block_num_levels=3, corr_block_radius=2, motion_encoder_corr_layers=(16,), motion_encoder_flow_layers=(16, 8),
        motion_encoder_out_channels=18, recurrent_block_hidden_state_size=24, recurrent_block_kernel_size=(3,),
        recurrent_block_padding=(1,), flow_head_hidden_size=16, use_mask_predictor=False,
    ),
}


class MotionEncoder(nnx.Module):
    def __init__(self, cfg: RAFTConfig, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        corr_channels = cfg.corr_block_num_levels * (2 * cfg.corr_block_radius + 1) ** 2
        corr, flow = cfg.motion_encoder_corr_layers, cfg.motion_encoder_flow_layers
        self.convcorr1 = ConvNormAct(corr_channels, corr[0], 1, **kw)
        self.convcorr2 = ConvNormAct(corr[0], corr[1], 3, **kw) if len(corr) == 2 else None
        self.convflow1 = ConvNormAct(2, flow[0], 7, **kw)
        self.convflow2 = ConvNormAct(flow[0], flow[1], 3, **kw)
        self.conv = ConvNormAct(corr[-1] + flow[-1], cfg.motion_encoder_out_channels - 2, 3, **kw)

    def __call__(self, flow, corr_features):
        corr = self.convcorr1(corr_features)
        if self.convcorr2 is not None:
            corr = self.convcorr2(corr)
        f = self.convflow2(self.convflow1(flow))
        out = self.conv(jnp.concatenate([corr, f], axis=-1))
        return jnp.concatenate([out, flow.astype(out.dtype)], axis=-1)


class ConvGRU(nnx.Module):
    def __init__(self, input_size, hidden_size, kernel, padding, *, dtype, param_dtype, rngs):
        kw = dict(padding=padding, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.convz = conv(hidden_size + input_size, hidden_size, kernel, **kw)
        self.convr = conv(hidden_size + input_size, hidden_size, kernel, **kw)
        self.convq = conv(hidden_size + input_size, hidden_size, kernel, **kw)

    def __call__(self, h, x):
        hx = jnp.concatenate([h, x], axis=-1)
        z = jax.nn.sigmoid(self.convz(hx))
        r = jax.nn.sigmoid(self.convr(hx))
        q = jnp.tanh(self.convq(jnp.concatenate([r * h, x], axis=-1)))
        return (1 - z) * h + z * q


def _conv_with(conv_module: nnx.Conv, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`conv_module`'s convolution (stride 1, its padding) with another kernel, without its bias."""
    return jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), conv_module.padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@struct.dataclass
class GRUPlan:
    """A ConvGRU's weights for the refinement loop, where the leading channels of its input x (the context)
    are the same at every update. A zero-padded convolution is a sum over its input channels, so the
    context's share of the three gate convolutions (with their biases) is computed once per pair
    (`zr_const`, `q_const`), and each update convolves only the hidden state and the motion features;
    the z and r gates share one convolution of 2x the outputs."""

    zr_kernel: jax.Array  # (kh, kw, hidden + motion, 2 * hidden)
    q_kernel: jax.Array  # (kh, kw, hidden + motion, hidden)
    zr_const: jax.Array  # (B, h, w, 2 * hidden)
    q_const: jax.Array  # (B, h, w, hidden)


def plan_gru(gru: "ConvGRU", hidden_size: int, context: jax.Array) -> GRUPlan:
    lo, hi = hidden_size, hidden_size + context.shape[-1]

    def varying(k):  # the kernel's input channels of the hidden state and the motion features
        return jnp.concatenate([k[:, :, :lo], k[:, :, hi:]], axis=2)

    kz, kr, kq = (c.kernel.value for c in (gru.convz, gru.convr, gru.convq))
    def const(c, k):  # the bias is cast to the compute dtype (as the convolution itself casts it)
        y = _conv_with(c, context, k[:, :, lo:hi])
        return y + c.bias.value.astype(y.dtype)

    zr_const = jnp.concatenate([const(gru.convz, kz), const(gru.convr, kr)], axis=-1)
    q_const = const(gru.convq, kq)
    return GRUPlan(jnp.concatenate([varying(kz), varying(kr)], axis=-1), varying(kq), zr_const, q_const)


def gru_step(gru: "ConvGRU", plan: GRUPlan, h: jax.Array, motion: jax.Array) -> jax.Array:
    """`gru(h, concat([context, motion]))` from its plan."""
    hidden = h.shape[-1]
    zr = jax.nn.sigmoid(_conv_with(gru.convz, jnp.concatenate([h, motion], axis=-1), plan.zr_kernel) + plan.zr_const)
    z, r = zr[..., :hidden], zr[..., hidden:]
    q = jnp.tanh(_conv_with(gru.convq, jnp.concatenate([r * h, motion], axis=-1), plan.q_kernel) + plan.q_const)
    return (1 - z) * h + z * q


class RecurrentBlock(nnx.Module):
    def __init__(self, cfg: RAFTConfig, input_size: int, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        hidden, kernels, pads = (cfg.recurrent_block_hidden_state_size, cfg.recurrent_block_kernel_size,
                                 cfg.recurrent_block_padding)
        self.convgru1 = ConvGRU(input_size, hidden, kernels[0], pads[0], **kw)
        self.convgru2 = ConvGRU(input_size, hidden, kernels[1], pads[1], **kw) if len(kernels) == 2 else None

    def __call__(self, h, x):
        h = self.convgru1(h, x)
        return self.convgru2(h, x) if self.convgru2 is not None else h

    def plan(self, hidden_size: int, context: jax.Array) -> tuple[GRUPlan, ...]:
        grus = (self.convgru1,) if self.convgru2 is None else (self.convgru1, self.convgru2)
        return tuple(plan_gru(g, hidden_size, context) for g in grus)

    def step(self, plans: tuple[GRUPlan, ...], h, motion):
        """`self(h, concat([context, motion]))` with the context's share precomputed by `plan`."""
        grus = (self.convgru1,) if self.convgru2 is None else (self.convgru1, self.convgru2)
        for g, p in zip(grus, plans):
            h = gru_step(g, p, h, motion)
        return h


class FlowHead(nnx.Module):
    def __init__(self, cin: int, hidden: int, *, dtype, param_dtype, rngs):
        self.conv1 = conv(cin, hidden, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv2 = conv(hidden, 2, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv2(jax.nn.relu(self.conv1(x)))


class UpdateBlock(nnx.Module):
    def __init__(self, cfg: RAFTConfig, *, dtype, param_dtype, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        context = cfg.context_encoder_layers[-1] - cfg.recurrent_block_hidden_state_size
        self.motion_encoder = MotionEncoder(cfg, **kw)
        self.recurrent_block = RecurrentBlock(cfg, cfg.motion_encoder_out_channels + context, **kw)
        self.flow_head = FlowHead(cfg.recurrent_block_hidden_state_size, cfg.flow_head_hidden_size, **kw)

    def __call__(self, hidden, context, corr_features, flow):
        motion = self.motion_encoder(flow, corr_features)
        hidden = self.recurrent_block(hidden, jnp.concatenate([context, motion], axis=-1))
        return hidden, self.flow_head(hidden)

    def step(self, plans, hidden, corr_features, flow):
        """`self(hidden, context, ...)` with `plans = self.recurrent_block.plan(hidden size, context)`."""
        motion = self.motion_encoder(flow, corr_features)
        hidden = self.recurrent_block.step(plans, hidden, motion)
        return hidden, self.flow_head(hidden)


class MaskPredictor(nnx.Module):
    def __init__(self, cin: int, hidden: int = 256, *, dtype, param_dtype, rngs):
        self.convrelu = ConvNormAct(cin, hidden, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv = conv(hidden, 8 * 8 * 9, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        # torchvision (and the original) scale by 0.25 to damp this branch's gradients.
        return 0.25 * self.conv(self.convrelu(x))


class RAFT(nnx.Module):
    def __init__(self, cfg: RAFTConfig, *, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        if cfg.context_encoder_layers[-1] <= cfg.recurrent_block_hidden_state_size:
            raise ConfigError("RAFT: the context encoder must output more channels than the hidden state")
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = cfg
        self.feature_encoder = FeatureEncoder(cfg.feature_encoder_layers, block=cfg.feature_encoder_block,
                                              norm=cfg.feature_encoder_norm, **kw)
        self.context_encoder = FeatureEncoder(cfg.context_encoder_layers, block=cfg.context_encoder_block,
                                              norm=cfg.context_encoder_norm, **kw)
        self.update_block = UpdateBlock(cfg, **kw)
        self.mask_predictor = (MaskPredictor(cfg.recurrent_block_hidden_state_size, **kw)
                               if cfg.use_mask_predictor else None)

    def __call__(self, image1: jax.Array, image2: jax.Array, num_flow_updates: int = 12) -> jax.Array:
        """Flow `(B, H, W, 2)` (x, y displacement in pixels) from image1 to image2, both `(B, H, W, 3)` in [-1, 1]."""
        b = image1.shape[0]
        if image2.shape != image1.shape:
            raise VideoError(f"RAFT: frames differ in shape: {image1.shape} vs {image2.shape}")
        self._check_size(image1.shape)
        # One batch through the feature encoder, as the reference does.
        fmaps = self.feature_encoder(jnp.concatenate([image1, image2], axis=0))
        return self.flow_from_features(fmaps[:b], self.context(image1), fmaps[b:], num_flow_updates)

    def _check_size(self, shape) -> None:
        h, w = shape[-3], shape[-2]
        min_side = 8 * 2 * 2 ** (self.config.corr_block_num_levels - 1)
        if h % 8 or w % 8 or h < min_side or w < min_side:
            raise VideoError(f"RAFT needs height and width multiples of 8 and >= {min_side}, got {h}x{w}")

    def features(self, images: jax.Array) -> jax.Array:
        """The 1/8-resolution feature map correlated between frames: `(B, H/8, W/8, C)`."""
        self._check_size(images.shape)
        return self.feature_encoder(images)

    def context(self, image1: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(initial hidden state, context) of the update block, from the first frame only."""
        self._check_size(image1.shape)
        hs = self.config.recurrent_block_hidden_state_size
        out = self.context_encoder(image1)
        return jnp.tanh(out[..., :hs]), jax.nn.relu(out[..., hs:])

    def flow_from_features(self, fmap1: jax.Array, context1: tuple[jax.Array, jax.Array], fmap2: jax.Array,
                           num_flow_updates: int = 12) -> jax.Array:
        """The flow of `__call__` from precomputed `features` and `context`: a sequence compared against
        one frame encodes every frame once instead of once per pair."""
        return self.flow_from_reference(self.reference(fmap1, context1), fmap2, num_flow_updates)

    def reference(self, fmap1: jax.Array, context1: tuple[jax.Array, jax.Array]) -> "FlowReference":
        """What the refinement needs of the first frame, computed once for any number of second frames."""
        hidden, context = context1
        # The context is the same at every update: its share of the GRU convolutions is computed once.
        plans = self.update_block.recurrent_block.plan(self.config.recurrent_block_hidden_state_size, context)
        return FlowReference(fmap1, hidden, plans)

    def flow_from_reference(self, ref: "FlowReference", fmap2: jax.Array,
                            num_flow_updates: int = 12) -> jax.Array:
        """Flows `(B, H, W, 2)` from the reference frame(s) to `fmap2` `(B, h, w, C)`. A reference of batch 1
        serves a batch of B second frames (one frame against several: batched convolutions keep both
        cores busy where batch 1 does not)."""
        cfg = self.config
        b, h8, w8, _ = fmap2.shape
        pyramid = correlation_pyramid(ref.fmap1, fmap2, cfg.corr_block_num_levels, cfg.corr_block_radius)
        hidden = jnp.broadcast_to(ref.hidden, (b,) + ref.hidden.shape[1:])
        coords0 = coords_grid(b, h8, w8)
        graphdef, state = nnx.split(self.update_block)

        def step(carry, _):
            hidden, coords1 = carry
            corr = lookup(pyramid, coords1, cfg.corr_block_radius)
            hidden, delta = nnx.merge(graphdef, state).step(ref.plans, hidden, corr, coords1 - coords0)
            return (hidden, coords1 + delta.astype(F32)), None

        (hidden, coords1), _ = jax.lax.scan(step, (hidden, coords0), None, length=num_flow_updates)
        flow = coords1 - coords0
        if self.mask_predictor is None:
            return upsample_bilinear(flow)
        return upsample_convex(flow, self.mask_predictor(hidden))


@struct.dataclass
class FlowReference:
    """The first frame of a flow, prepared by `RAFT.reference`: its features, the initial hidden state, and
    its context's share of the GRU convolutions."""

    fmap1: jax.Array  # (1 or B, h, w, C)
    hidden: jax.Array  # (1 or B, h, w, hidden)
    plans: tuple[GRUPlan, ...]


def preprocess_frames(frames: jax.Array) -> jax.Array:
    """(..., H, W, 3) uint8 or [0, 255] floats -> [-1, 1] float32, RAFT's (torchvision's) input range."""
    return frames.astype(F32) / 127.5 - 1.0
