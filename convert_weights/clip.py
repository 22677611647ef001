"""CLIP: transformers `CLIPModel` (or text-only `CLIPTextModel`, e.g. Stable Diffusion's `text_encoder`).

    python -m convert_weights clip openai-clip-vit-base-patch32/ weights/clip
    python -m convert_weights clip sd/text_encoder/ weights/sd_text --text-only
    python -m convert_weights clip model.safetensors weights/clip --preset vit-b-32

Our attribute names are transformers' own, so the key map is the identity except for buffers that older
exports store (`position_ids`), which the port recomputes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto, read_json, read_state_dict
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.clip import PRESETS, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel
from m3cvc_jax.weights import save_checkpoint


def add_arguments(parser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), help="model config when SRC has no config.json")
    parser.add_argument("--text-only", action="store_true", help="convert only the text tower (CLIPTextModel)")


def _rename(key: str) -> str | None:
    if key.endswith("position_ids"):
        return None
    return key


def convert_state_dict(state_dict: Mapping[str, np.ndarray], config: CLIPConfig | CLIPTextConfig,
                       *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Reference tensors -> our flat params for `CLIPModel(config)` or, given a text config, `CLIPTextModel`."""
    if isinstance(config, CLIPTextConfig):
        build = lambda: CLIPTextModel(config, rngs=nnx.Rngs(0))
        # transformers 4 saved CLIPTextModel under `text_model.`, transformers 5 saves it bare; a
        # projection (CLIPTextModelWithProjection) stays out of the tower.
        tower = ("embeddings.", "encoder.", "final_layer_norm.")
        state_dict = {("text_model." + k if k.startswith(tower) else k): v for k, v in state_dict.items()}
        state_dict = {k: v for k, v in state_dict.items() if k.startswith("text_model.")}
    else:
        build = lambda: CLIPModel(config, rngs=nnx.Rngs(0))
    return map_onto(abstract_shapes(build), state_dict, rename=_rename, source=source)


def _config_from_source(src: str, preset: str | None) -> CLIPConfig:
    if preset is not None:
        return PRESETS[preset]
    cfg_path = os.path.join(src if os.path.isdir(src) else os.path.dirname(src), "config.json")
    if not os.path.isfile(cfg_path):
        raise WeightsError(f"{src}: no config.json beside the weights; pass --preset ({', '.join(sorted(PRESETS))})")
    d = read_json(cfg_path)
    if "text_config" not in d and "vocab_size" in d:  # a CLIPTextModel folder: its fields are the text config
        d = {"text_config": d, "projection_dim": d.get("projection_dim", 512)}
    return CLIPConfig.from_transformers(d)


def convert(src: str, dst: str, *, preset: str | None = None, text_only: bool = False, overwrite: bool = False) -> str:
    config = _config_from_source(src, preset)
    state_dict = read_state_dict(src)
    if text_only:
        params = convert_state_dict(state_dict, config.text, source=src)
        saved = {"kind": "text", **dataclasses.asdict(config.text)}
    else:
        params = convert_state_dict(state_dict, config, source=src)
        saved = {"kind": "full", **dataclasses.asdict(config)}
    return save_checkpoint(dst, family="clip", config=saved, params=params, overwrite=overwrite)
