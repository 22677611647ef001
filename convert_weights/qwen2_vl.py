"""`python -m convert_weights qwen2-vl SRC DST`: a transformers Qwen2-VL folder -> our checkpoint.

SRC holds `config.json` and safetensors (sharded with `model.safetensors.index.json`, or single files).
Tensors are streamed one at a time straight into the output dict, so the model is never held twice.
Both key layouts are accepted: transformers 5 (`model.visual.*`, `model.language_model.*`, `lm_head.*`) and
the one of the published checkpoints (`visual.*`, `model.*`, `lm_head.*`). Tokenizer and processor files
found in SRC are copied to `DST/tokenizer/` so the describer runs offline with the model's own vocabulary.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from typing import Iterator

import numpy as np

from convert_weights.core import abstract_shapes_rngs, iter_safetensors, map_onto, read_json, to_device_arrays
from m3cvc_jax.errors import ConfigError, WeightsError

FAMILY = "qwen2-vl"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "chat_template.json", "chat_template.jinja", "preprocessor_config.json",
    "generation_config.json",
)
DTYPES = ("float32", "bfloat16", "keep")


def add_arguments(parser) -> None:
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32",
        help="stored parameter dtype; 'keep' leaves each tensor as in SRC (bf16 checkpoints stay bf16)",
    )


def rename(key: str, *, tied: bool) -> str | None:
    """Reference key (either layout) -> our flat key before the leaf rename."""
    if key.startswith(("model.visual.", "model.language_model.")):
        return key
    if key.startswith("visual."):
        return "model." + key
    if key.startswith("lm_head."):
        # Tied checkpoints sometimes store the (identical) head anyway; our model reads the embedding.
        return None if tied else key
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    return key


def safetensors_files(src: str) -> list[str]:
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.isfile(index):
        names = sorted(set(read_json(index).get("weight_map", {}).values()))
        files = [os.path.join(src, n) for n in names]
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise WeightsError(f"{src}: shards named in the index are missing: {', '.join(map(os.path.basename, absent))}")
        return files
    files = sorted(glob.glob(os.path.join(src, "*.safetensors")))
    if not files:
        raise WeightsError(f"{src}: no safetensors weights in this folder")
    return files


class _Stream:
    """A Mapping look-alike whose `items()` reads tensors lazily, for `map_onto`."""

    def __init__(self, files: list[str], dtype: str):
        self.files, self.dtype = files, dtype

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for path in self.files:
            for key, value in iter_safetensors(path):
                yield key, _cast(value, self.dtype)


def _cast(value: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "keep":
        return value
    if dtype == "bfloat16":
        import ml_dtypes

        return value.astype(ml_dtypes.bfloat16)
    return value.astype(np.float32)


def convert(src: str, dst: str, *, dtype: str = "float32", overwrite: bool = False) -> str:
    from m3cvc_jax.nn.qwen2_vl import Qwen2VLConfig
    from m3cvc_jax.weights import save_checkpoint

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if not os.path.isdir(src):
        raise WeightsError(f"{src}: expected a transformers Qwen2-VL folder (config.json + safetensors)")
    cfg = Qwen2VLConfig.from_hf(read_json(os.path.join(src, "config.json")))
    shapes = abstract_shapes_rngs(lambda rngs: _build(cfg, rngs))
    params = map_onto(
        shapes, _Stream(safetensors_files(src), dtype),
        rename=lambda k: rename(k, tied=cfg.tie_word_embeddings), source=src,
    )
    params = to_device_arrays(params)
    config = dataclasses.asdict(cfg)
    fp = save_checkpoint(dst, family=FAMILY, config=config, params=params, overwrite=overwrite, compress=False)
    copied = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(src, f))]
    if copied:
        os.makedirs(os.path.join(dst, "tokenizer"), exist_ok=True)
        for f in copied:
            shutil.copy2(os.path.join(src, f), os.path.join(dst, "tokenizer", f))
    return fp


def _build(cfg, rngs):
    from m3cvc_jax.nn.qwen2_vl import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration(cfg, rngs=rngs)


def hf_config_dict(cfg) -> dict:
    """Our config -> a transformers 5 `Qwen2VLConfig` dict (tests and the benchmark build references with it)."""
    t, v = cfg.text, cfg.vision
    return {
        "text_config": {
            "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads, "rms_norm_eps": t.rms_norm_eps,
            "hidden_act": t.hidden_act, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                                "mrope_section": list(t.mrope_section)},
        },
        "vision_config": {
            "depth": v.depth, "embed_dim": v.embed_dim, "hidden_size": v.hidden_size, "hidden_act": v.hidden_act,
            "mlp_ratio": int(v.mlp_ratio), "num_heads": v.num_heads, "in_channels": v.in_channels,
            "patch_size": v.patch_size, "spatial_merge_size": v.spatial_merge_size,
            "temporal_patch_size": v.temporal_patch_size,
        },
        "image_token_id": cfg.image_token_id, "video_token_id": cfg.video_token_id,
        "vision_start_token_id": cfg.vision_start_token_id, "vision_end_token_id": cfg.vision_end_token_id,
        "tie_word_embeddings": cfg.tie_word_embeddings,
    }
