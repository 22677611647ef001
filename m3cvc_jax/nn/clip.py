"""CLIP (vision and text towers with projections) in Flax NNX, in the transformers `CLIPModel` layout.

Attribute names mirror transformers, so `text_model.encoder.layers.3.self_attn.q_proj.weight` is our
`text_model.encoder.layers.3.self_attn.q_proj.kernel`. Images enter channels-last and already normalised
(see `preprocess_images`); token ids come from `m3cvc_jax.nn.clip_tokenizer`.

Text pooling follows transformers: configs with `eos_token_id == 2` (the original OpenAI exports on the
hub carry this legacy value) pool at the argmax of the ids, i.e. at the first `<|endoftext|>` (49407 is the
largest id); any other value pools at the first position holding `eos_token_id`. Both agree for ids made
by our tokenizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.attention import dot_product_attention
from m3cvc_jax.nn.layers import LayerNorm

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    eos_token_id: int = 2  # the OpenAI exports' legacy value: pool at argmax(ids)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    text: CLIPTextConfig = CLIPTextConfig()
    vision: CLIPVisionConfig = CLIPVisionConfig()
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    @classmethod
    def preset(cls, name: str) -> "CLIPConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown CLIP preset {name!r}; one of {', '.join(PRESETS)}")
        return PRESETS[name]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLIPConfig":
        d = dict(d)
        return cls(text=CLIPTextConfig(**d.pop("text")), vision=CLIPVisionConfig(**d.pop("vision")), **d)

    @classmethod
    def from_transformers(cls, d: Mapping[str, Any]) -> "CLIPConfig":
        """From a transformers `config.json` dict (CLIPModel); absent fields take transformers' defaults."""
        text_defaults = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                             eos_token_id=49407)
        vision_defaults = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, patch_size=32)
        return cls(
            text=_pick(CLIPTextConfig, {**text_defaults, **(d.get("text_config") or {})}),
            vision=_pick(CLIPVisionConfig, {**vision_defaults, **(d.get("vision_config") or {})}),
            projection_dim=d.get("projection_dim", 512),
            logit_scale_init_value=d.get("logit_scale_init_value", 2.6592),
        )


def _pick(kind, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, CLIPConfig] = {
    "tiny": CLIPConfig(
        text=CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=224, patch_size=32),
        projection_dim=16,
    ),
    "vit-b-32": CLIPConfig(),
    "vit-b-16": CLIPConfig(vision=CLIPVisionConfig(patch_size=16)),
    "vit-l-14": CLIPConfig(
        text=CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
        vision=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                num_attention_heads=16, patch_size=14),
        projection_dim=768,
    ),
}


def _quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _gelu_new(x):
    return jax.nn.gelu(x, approximate=True)


# Module-level functions, not per-instance lambdas: the activation is a static attribute of the graph
# definition, and two models built from one config must compare equal (a jit cache key).
_ACTIVATIONS = {"quick_gelu": _quick_gelu, "gelu": _gelu, "gelu_new": _gelu_new}


def _activation(name: str):
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]
    raise ConfigError(f"unsupported CLIP activation {name!r}")


def _linear(i, o, *, bias=True, dtype, param_dtype, rngs):
    return nnx.Linear(i, o, use_bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class CLIPAttention(nnx.Module):
    def __init__(self, dim: int, heads: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = _linear(dim, dim, **kw)
        self.k_proj = _linear(dim, dim, **kw)
        self.v_proj = _linear(dim, dim, **kw)
        self.out_proj = _linear(dim, dim, **kw)
        self.heads = heads

    def __call__(self, x, *, mask=None, is_causal=False):
        b, n, d = x.shape
        split = lambda t: t.reshape(b, n, self.heads, d // self.heads)
        out = dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                    mask=mask, is_causal=is_causal)
        return self.out_proj(out.reshape(b, n, d))


class CLIPMLP(nnx.Module):
    def __init__(self, dim: int, hidden: int, act: str, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.fc1 = _linear(dim, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = _linear(hidden, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = _activation(act)

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = CLIPAttention(cfg.hidden_size, cfg.num_attention_heads, **kw)
        self.layer_norm1 = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)
        self.mlp = CLIPMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, **kw)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)

    def __call__(self, x, *, mask=None, is_causal=False):
        x = x + self.self_attn(self.layer_norm1(x), mask=mask, is_causal=is_causal)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nnx.Module):
    def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [CLIPEncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
        )

    def __call__(self, x, *, mask=None, is_causal=False):
        for layer in self.layers:
            x = layer(x, mask=mask, is_causal=is_causal)
        return x


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        self.position_embedding = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)

    def __call__(self, ids):
        return self.token_embedding(ids) + self.position_embedding(jnp.arange(ids.shape[-1]))[None]


class TowerOutput(NamedTuple):
    last_hidden_state: jax.Array  # (B, L, D): text after final_layer_norm; vision before post_layernorm
    pooler_output: jax.Array  # (B, D): EOS token (text) or post-normed CLS token (vision)


class CLIPTextTransformer(nnx.Module):
    def __init__(self, cfg: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = CLIPTextEmbeddings(cfg, **kw)
        self.encoder = CLIPEncoder(cfg, **kw)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)
        self.eos_token_id = cfg.eos_token_id

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> TowerOutput:
        """input_ids (B, L) int; attention_mask (B, L), 1 for real tokens (optional: CLIP's causal mask
        already hides the padding after EOS from the pooled output)."""
        x = self.embeddings(input_ids)
        mask = None if attention_mask is None else attention_mask.astype(bool)[:, None, None, :]
        x = self.final_layer_norm(self.encoder(x, mask=mask, is_causal=True))
        if self.eos_token_id == 2:
            eos = jnp.argmax(input_ids, axis=-1)
        else:
            eos = jnp.argmax((input_ids == self.eos_token_id).astype(jnp.int32), axis=-1)
        return TowerOutput(x, jnp.take_along_axis(x, eos[:, None, None], axis=1)[:, 0])


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, cfg: CLIPVisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        p = cfg.patch_size
        self.class_embedding = nnx.Param(jax.random.normal(rngs.params(), (cfg.hidden_size,), param_dtype))
        self.patch_embedding = nnx.Conv(cfg.num_channels, cfg.hidden_size, (p, p), strides=(p, p), padding="VALID",
                                        use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        num_positions = (cfg.image_size // p) ** 2 + 1
        self.position_embedding = nnx.Embed(num_positions, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
                                            rngs=rngs)
        self.dtype = dtype

    def __call__(self, pixels):
        patches = self.patch_embedding(pixels.astype(self.dtype))
        b, h, w, d = patches.shape
        cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype), (b, 1, d))
        x = jnp.concatenate([cls, patches.reshape(b, h * w, d)], axis=1)
        return x + self.position_embedding.embedding[...].astype(self.dtype)[None]


class CLIPVisionTransformer(nnx.Module):
    def __init__(self, cfg: CLIPVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = CLIPVisionEmbeddings(cfg, **kw)
        self.pre_layrnorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)  # sic: transformers' spelling
        self.encoder = CLIPEncoder(cfg, **kw)
        self.post_layernorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps, **kw)

    def __call__(self, pixel_values: jax.Array) -> TowerOutput:
        """pixel_values (B, S, S, 3) normalised with the CLIP mean/std (`preprocess_images`)."""
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return TowerOutput(x, self.post_layernorm(x[:, 0]))


class CLIPModel(nnx.Module):
    """Both towers plus `visual_projection`, `text_projection` and `logit_scale` (transformers CLIPModel)."""

    def __init__(self, cfg: CLIPConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = cfg
        self.text_model = CLIPTextTransformer(cfg.text, **kw)
        self.vision_model = CLIPVisionTransformer(cfg.vision, **kw)
        self.visual_projection = _linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False, **kw)
        self.text_projection = _linear(cfg.text.hidden_size, cfg.projection_dim, bias=False, **kw)
        self.logit_scale = nnx.Param(jnp.asarray(cfg.logit_scale_init_value, param_dtype))

    def get_image_features(self, pixel_values: jax.Array) -> jax.Array:
        """Projected (not normalised) image embeddings (B, projection_dim)."""
        return self.visual_projection(self.vision_model(pixel_values).pooler_output)

    def get_text_features(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Projected (not normalised) text embeddings (B, projection_dim)."""
        return self.text_projection(self.text_model(input_ids, attention_mask).pooler_output)

    def __call__(self, input_ids, pixel_values, attention_mask=None):
        """(logits_per_image (Bi, Bt), logits_per_text (Bt, Bi)) as in transformers."""
        img = _unit(self.get_image_features(pixel_values))
        txt = _unit(self.get_text_features(input_ids, attention_mask))
        logits_per_text = jnp.exp(self.logit_scale[...].astype(jnp.float32)) * (txt @ img.T)
        return logits_per_text.T, logits_per_text


class CLIPTextModel(nnx.Module):
    """Text tower alone (transformers `CLIPTextModel`, Stable Diffusion's `text_encoder`)."""

    def __init__(self, cfg: CLIPTextConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.text_model = CLIPTextTransformer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, input_ids, attention_mask=None) -> TowerOutput:
        return self.text_model(input_ids, attention_mask)


def _unit(x):
    x = x.astype(jnp.float32)
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def config_from_saved(d: Mapping[str, Any]) -> CLIPConfig | CLIPTextConfig:
    """The model config stored by `python -m convert_weights clip` (`kind` full or text)."""
    rest = {k: v for k, v in d.items() if k != "kind"}
    return CLIPTextConfig(**rest) if d.get("kind") == "text" else CLIPConfig.from_dict(rest)


def preprocess_images(images: jax.Array, size: int = 224) -> jax.Array:
    """CLIP's image preprocessing in jnp: (B, H, W, 3) uint8 or [0, 255] floats -> (B, size, size, 3).

    Resize the shortest side to `size` (bicubic with antialiasing: the Keys a=-0.5 kernel, widened when
    downsampling, as PIL does), centre crop (top/left offsets `(extent - size) // 2`, as transformers),
    scale to [0, 1], normalise with the CLIP mean/std. The resized image is rounded to integers like PIL's
    uint8 output, but PIL also rounds between its two separable passes: on a real 640x272 frame (bikes.mp4)
    the result differs from PIL's by 0.06 grey levels on average, at most 1 (6% of values off by one);
    tests/test_clip_parity.py bounds it on a synthetic textured frame.
    """
    b, h, w, c = images.shape
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    x = images.astype(jnp.float32)
    if (nh, nw) != (h, w):
        x = jax.image.resize(x, (b, nh, nw, c), method="bicubic", antialias=True)
        x = jnp.clip(jnp.round(x), 0.0, 255.0)  # PIL's output is uint8: round like it does
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, top:top + size, left:left + size] / 255.0
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def image_embeddings(model: CLIPModel, images: jax.Array) -> jax.Array:
    """Images `(N, H, W, 3)` in [0, 255] -> CLIP image embeddings `(N, D)`: CLIP's preprocessing, then the
    image tower and its projection (the keyframe decision's, the training data's and CLIP-sim's features)."""
    return model.get_image_features(preprocess_images(images, model.config.vision.image_size))
