"""`python -m convert_weights dino SRC DST [--config C]`: DINO ViT (VBench's subject-consistency network).

SRC: a transformers ViTModel folder (`facebook/dino-vitb16` layout: config.json + weights; a `vit.` prefix
and a pooler, unused by DINO, are dropped), or the original DINO checkpoint that VBench loads through
torch.hub (`dino_vitbase16_pretrain.pth`: `blocks.N.attn.qkv`, `patch_embed.proj`, ...), whose fused qkv
is split. Config: `--config` (preset `dino-vitb16`/`tiny` or a ViT config.json), else the folder's
config.json, else (original checkpoints) inferred from the shapes with DINO's 64-dim heads and eps 1e-6.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto, read_state_dict
from convert_weights.sd_source import config_dict
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.vit import ViTConfig, ViTModel
from m3cvc_jax.weights import save_checkpoint

FAMILY = "dino"
# Original DINO (timm-style) name -> transformers name, after the qkv split.
_ORIGINAL = ((r"^cls_token$", "embeddings.cls_token"), (r"^pos_embed$", "embeddings.position_embeddings"),
             (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
             (r"^blocks\.(\d+)\.norm1\.", r"encoder.layer.\1.layernorm_before."),
             (r"^blocks\.(\d+)\.norm2\.", r"encoder.layer.\1.layernorm_after."),
             (r"^blocks\.(\d+)\.attn\.(query|key|value)\.", r"encoder.layer.\1.attention.attention.\2."),
             (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.output.dense."),
             (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
             (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
             (r"^norm\.", "layernorm."))


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=None,
                        help="preset (dino-vitb16, tiny) or a ViT config.json; default: the source's own")


def is_original(sd) -> bool:
    return "pos_embed" in sd or any(k.startswith("blocks.") for k in sd)


def split_qkv(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`blocks.N.attn.qkv.{weight,bias}` (3D rows: q, k, v) -> `blocks.N.attn.{query,key,value}.*`."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"^(blocks\.\d+\.attn\.)qkv\.(weight|bias)$", k)
        if m:
            for name, part in zip(("query", "key", "value"), np.split(np.asarray(v), 3, axis=0)):
                out[f"{m.group(1)}{name}.{m.group(2)}"] = part
        else:
            out[k] = v
    return out


def original_to_transformers(key: str) -> str:
    for pattern, repl in _ORIGINAL:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def infer_config(sd) -> ViTConfig:
    try:
        d = sd["cls_token"].shape[-1]
        patch = sd["patch_embed.proj.weight"]
        grid = round((sd["pos_embed"].shape[1] - 1) ** 0.5)
        layers = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
        return ViTConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=d // 64,
                         intermediate_size=sd["blocks.0.mlp.fc1.weight"].shape[0], patch_size=patch.shape[-1],
                         image_size=grid * patch.shape[-1], num_channels=patch.shape[1],
                         qkv_bias="blocks.0.attn.qkv.bias" in sd)
    except (KeyError, ValueError, IndexError) as e:
        raise WeightsError(f"cannot infer the ViT config from the weights ({e!r}); pass --config") from None


def load_reference(src: str, config: str | None = None) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """(config, state dict under transformers' ViTModel names, pooler dropped)."""
    sd = read_state_dict(src)
    found = os.path.join(src, "config.json") if os.path.isdir(src) else None
    cfg = config_dict(config, found if found and os.path.isfile(found) else None)
    if is_original(sd):
        if cfg is None:
            cfg = infer_config(sd)
        sd = {original_to_transformers(k): v for k, v in split_qkv(sd).items() if not k.startswith("head.")}
    elif cfg is None:
        raise WeightsError(f"{src}: no config.json beside these weights; pass --config")
    sd = {k.removeprefix("vit."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("pooler.")}
    cfg = ViTConfig.preset(cfg) if isinstance(cfg, str) else (cfg if isinstance(cfg, ViTConfig)
                                                               else ViTConfig.from_transformers(cfg))
    return cfg, sd


def convert_state_dict(sd, cfg: ViTConfig, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    shapes = abstract_shapes(lambda: ViTModel(cfg, rngs=nnx.Rngs(0)))
    return {k: np.asarray(v, np.float32) for k, v in map_onto(shapes, sd, source=source).items()}


def convert(src: str, dst: str, config: str | None = None, *, overwrite: bool = False) -> str:
    cfg, sd = load_reference(src, config)
    params = convert_state_dict(sd, cfg, source=src)
    return save_checkpoint(dst, family=FAMILY, config=dataclasses.asdict(cfg), params=params, overwrite=overwrite)
