"""Build a Qwen2-VL model from a preset (random weights) or from a converted checkpoint directory."""

from __future__ import annotations

import jax.numpy as jnp

from m3cvc_jax.nn.qwen2_vl import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from m3cvc_jax.random_weights import random_module
from m3cvc_jax.weights import load_checkpoint, module_from_params

FAMILY = "qwen2-vl"


def random_model(cfg: Qwen2VLConfig | str, *, seed: int = 0, dtype=jnp.float32, param_dtype=jnp.float32,
                 std: float = 0.02) -> Qwen2VLForConditionalGeneration:
    """Random weights with transformers' Qwen2-VL statistics (matrices of standard deviation `std`, unit
    norms, zero biases), drawn by `m3cvc_jax.random_weights` (deterministic, no per-shape compiles)."""
    cfg = Qwen2VLConfig.preset(cfg) if isinstance(cfg, str) else cfg
    return random_module(lambda rngs: Qwen2VLForConditionalGeneration(cfg, rngs=rngs, dtype=dtype, param_dtype=param_dtype),
                         seed, "qwen2-vl", std=std)


def load_model(directory: str, *, dtype=jnp.float32, param_dtype=None) -> Qwen2VLForConditionalGeneration:
    """A converted checkpoint (`python -m convert_weights qwen2-vl ...`) as a ready model.

    param_dtype defaults to the stored dtype of the embedding (bf16 checkpoints stay bf16 in memory).
    """
    meta, params = load_checkpoint(directory, family=FAMILY)
    if param_dtype is None:
        param_dtype = params["model.language_model.embed_tokens.embedding"].dtype
    return module_from_params(meta, params, source=directory, build=lambda cfg, rngs: Qwen2VLForConditionalGeneration(
        Qwen2VLConfig.from_dict(cfg), rngs=rngs, dtype=dtype, param_dtype=param_dtype))
