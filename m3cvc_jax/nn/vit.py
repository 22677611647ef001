"""transformers `ViTModel` (pre-LayerNorm ViT, no pooler), channels-last: the DINO ViT-B/16 that VBench's
subject consistency reads (`facebook/dino-vitb16`; DINO's own hub model has the same maths).

`ViTModel(config)(pixels (B, H, W, 3)) -> last_hidden_state (B, 1 + H/p * W/p, D)`; DINO's feature is
token 0 (`features`). Inputs whose patch grid is not the trained one get the position table resized
bicubically, as `interpolate_pos_encoding=True` does (torch's bicubic, see torch_resize).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.attention import dot_product_attention
from m3cvc_jax.nn.layers import LayerNorm, linear
from m3cvc_jax.nn.torch_resize import resize

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """transformers ViTConfig fields this port uses (same names)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads or self.image_size % self.patch_size:
            raise ConfigError(f"ViTConfig: {self.hidden_size} dims / {self.num_attention_heads} heads or "
                              f"{self.image_size} px / {self.patch_size} patches do not divide")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ViTConfig":
        return cls(**d)

    @classmethod
    def from_transformers(cls, d: Mapping[str, Any]) -> "ViTConfig":
        """From a ViTModel `config.json`; other activations or an encoder stride are a ConfigError."""
        if d.get("hidden_act", "gelu") != "gelu":
            raise ConfigError(f"unsupported ViT config: hidden_act={d['hidden_act']!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    @classmethod
    def preset(cls, name: str) -> "ViTConfig":
        if name not in VIT_PRESETS:
            raise ConfigError(f"unknown ViT preset {name!r}; one of {', '.join(VIT_PRESETS)}")
        return VIT_PRESETS[name]


VIT_PRESETS = {
    "dino-vitb16": ViTConfig(),
    "tiny": ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      image_size=32, patch_size=8),
}


class ViTEmbeddings(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        p, d = cfg.patch_size, cfg.hidden_size
        self.patch_size, self.dtype = p, dtype
        self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, d), param_dtype))
        n = (cfg.image_size // p) ** 2 + 1
        self.position_embeddings = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, n, d), param_dtype))
        self.patch_embeddings = _Patches(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def positions(self, gh: int, gw: int) -> jax.Array:
        table = self.position_embeddings[...].astype(F32)
        side = round((table.shape[1] - 1) ** 0.5)
        if (gh, gw) == (side, side):
            return table
        grid = resize(table[0, 1:].reshape(side, side, -1), (gh, gw), "bicubic")
        return jnp.concatenate([table[:, :1], grid.reshape(1, gh * gw, -1)], axis=1)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        patches = self.patch_embeddings.projection(pixels.astype(self.dtype))
        b, gh, gw, d = patches.shape
        cls = jnp.broadcast_to(self.cls_token[...].astype(self.dtype), (b, 1, d))
        x = jnp.concatenate([cls, patches.reshape(b, gh * gw, d)], axis=1)
        return x + self.positions(gh, gw).astype(self.dtype)


class _Patches(nnx.Module):
    """`patch_embeddings.projection`: a p x p conv of stride p."""

    def __init__(self, cfg: ViTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        p = cfg.patch_size
        self.projection = nnx.Conv(cfg.num_channels, cfg.hidden_size, (p, p), strides=(p, p), padding="VALID",
                                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class _SelfAttention(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=cfg.qkv_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.query, self.key, self.value = (linear(d, d, **kw) for _ in range(3))

    def __call__(self, x):
        split = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)
        out = dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return out.reshape(*x.shape[:-1], -1)


class _Dense(nnx.Module):
    """transformers' `ViTSelfOutput` / `ViTIntermediate` / `ViTOutput`: one `dense` Linear."""

    def __init__(self, i: int, o: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.dense = linear(i, o, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class _Attention(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attention = _SelfAttention(cfg, **kw)
        self.output = _Dense(cfg.hidden_size, cfg.hidden_size, **kw)

    def __call__(self, x):
        return self.output.dense(self.attention(x))


class ViTLayer(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        d = cfg.hidden_size
        self.layernorm_before = LayerNorm(d, eps=cfg.layer_norm_eps, **kw)
        self.attention = _Attention(cfg, **kw)
        self.layernorm_after = LayerNorm(d, eps=cfg.layer_norm_eps, **kw)
        self.intermediate = _Dense(d, cfg.intermediate_size, **kw)
        self.output = _Dense(cfg.intermediate_size, d, **kw)

    def __call__(self, x):
        x = x + self.attention(self.layernorm_before(x))
        h = jax.nn.gelu(self.intermediate.dense(self.layernorm_after(x)), approximate=False)
        return x + self.output.dense(h)


class _Encoder(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.layer = nnx.List([ViTLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                               for _ in range(cfg.num_hidden_layers)])


class ViTModel(nnx.Module):
    """`embeddings`, `encoder.layer.N`, `layernorm` (transformers names; no pooler, as DINO)."""

    def __init__(self, config: ViTConfig, *, dtype=F32, param_dtype=F32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = config
        self.embeddings = ViTEmbeddings(config, **kw)
        self.encoder = _Encoder(config, **kw)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, **kw)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels `(B, H, W, 3)` normalised with the ImageNet mean/std. Rows and columns past the last whole
        patch are ignored, as torch's strided patch conv ignores them."""
        p = self.config.patch_size
        pixels = pixels[:, : pixels.shape[1] // p * p, : pixels.shape[2] // p * p]
        x = self.embeddings(pixels)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)

    def features(self, pixels: jax.Array) -> jax.Array:
        """DINO's image feature: the class token of the last hidden state `(B, D)`."""
        return self(pixels)[:, 0]
