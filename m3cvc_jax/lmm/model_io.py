"""Build a Qwen2-VL model from a preset (random weights) or from a converted checkpoint directory."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.nn.qwen2_vl import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from m3cvc_jax.weights import assign_params, load_checkpoint

FAMILY = "qwen2-vl"


def random_model(cfg: Qwen2VLConfig | str, *, seed: int = 0, dtype=jnp.float32, param_dtype=jnp.float32,
                 std: float = 0.02) -> Qwen2VLForConditionalGeneration:
    """Random weights as transformers initialises Qwen2-VL (normal(0, std) matrices, unit norms, zero biases).

    Drawn with numpy on an abstract model: eager JAX initialisers compile one program per shape, which
    costs tens of seconds on a busy CPU for a model that then runs in milliseconds.
    """
    cfg = Qwen2VLConfig.preset(cfg) if isinstance(cfg, str) else cfg
    model = nnx.eval_shape(
        lambda: Qwen2VLForConditionalGeneration(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype)
    )
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shape, leaf = var.get_value().shape, path[-1]
        if leaf == "scale":
            value = np.ones(shape, np.float32)
        elif leaf == "bias":
            value = np.zeros(shape, np.float32)
        else:
            value = rng.normal(0.0, std, size=shape).astype(np.float32)
        var.set_value(jnp.asarray(value, dtype=param_dtype))
    return model


def load_model(directory: str, *, dtype=jnp.float32, param_dtype=None) -> Qwen2VLForConditionalGeneration:
    """A converted checkpoint (`python -m convert_weights qwen2-vl ...`) as a ready model.

    param_dtype defaults to the stored dtype of the embedding (bf16 checkpoints stay bf16 in memory).
    """
    meta, params = load_checkpoint(directory, family=FAMILY)
    cfg = Qwen2VLConfig.from_dict(meta["config"])
    if param_dtype is None:
        param_dtype = params["model.language_model.embed_tokens.embedding"].dtype
    model = nnx.eval_shape(
        lambda: Qwen2VLForConditionalGeneration(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype)
    )
    # The abstract model's values are shapes only; assign_params fills each with the stored array.
    assign_params(model, params, source=directory)
    return model
