"""Host side of keyframe selection: CLIP + RAFT (or the Lucas–Kanade fallback) on a uint8 clip -> decision.

This is where jit is chosen for the selection (the encode pipeline calls `select_keyframes`); the maths
stays in `keyframes.py`. The M3-CVC scan runs as one jitted call with the flow network inside it, so
each frame's flow is computed against whichever keyframe is current at that point.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.codec.keyframes import Decision, KeyframeConfig, fixed_select, keyframe_indices, motion_magnitude, select
from m3cvc_jax.codec.lk_flow import lucas_kanade
from m3cvc_jax.errors import ConfigError, VideoError
from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel, preprocess_images
from m3cvc_jax.nn.raft import RAFT, RAFTConfig, preprocess_frames
from m3cvc_jax.weights import assign_params

CLASSICAL = "classical"


@dataclasses.dataclass
class KeyframeModels:
    clip: CLIPModel | None  # None only for method=fixed
    raft: RAFT | None  # None: the Lucas–Kanade fallback measures motion


def raft_preset_name(flow_model: str) -> str:
    """`raft_small` / `small` -> `small` (the config file uses torchvision's function names)."""
    return flow_model[len("raft_"):] if flow_model.startswith("raft_") else flow_model


def build_models(cfg: KeyframeConfig, *, clip_params: Mapping[str, Any] | None = None,
                 clip_config: CLIPConfig | None = None, raft_params: Mapping[str, Any] | None = None,
                 raft_config: RAFTConfig | None = None, seed: int = 0) -> KeyframeModels:
    """Models for `cfg`: converted params when given (with their configs), else random weights from the
    named presets (the `tiny` pipeline preset). `flow_model=classical` builds no RAFT."""
    clip = None
    if cfg.method != "fixed":
        ccfg = clip_config or CLIPConfig.preset(cfg.clip_model)
        clip = _build(lambda r: CLIPModel(ccfg, rngs=r), clip_params, seed)
    raft = None
    if cfg.uses_motion and cfg.flow_model != CLASSICAL:
        rcfg = raft_config or RAFTConfig.preset(raft_preset_name(cfg.flow_model))
        raft = _build(lambda r: RAFT(rcfg, rngs=r), raft_params, seed + 1)
    return KeyframeModels(clip, raft)


def load_models(cfg: KeyframeConfig, *, clip_dir: str | None, raft_dir: str | None) -> KeyframeModels:
    """Models from converted checkpoints (`python -m convert_weights clip|raft`). A RAFT checkpoint is
    required when the motion term is used, unless `flow_model=classical` (the Lucas–Kanade fallback)."""
    from m3cvc_jax.errors import WeightsError
    from m3cvc_jax.nn.clip import config_from_saved
    from m3cvc_jax.weights import load_checkpoint

    clip_params = clip_config = raft_params = raft_config = None
    if cfg.method != "fixed":
        if clip_dir is None:
            raise WeightsError("keyframe selection needs CLIP weights: python -m convert_weights clip SRC DST")
        meta, clip_params = load_checkpoint(clip_dir, family="clip")
        clip_config = config_from_saved(meta["config"])
        if not isinstance(clip_config, CLIPConfig):
            raise WeightsError(f"{clip_dir} holds a text-only CLIP; keyframe selection needs the image tower")
    if cfg.uses_motion and cfg.flow_model != CLASSICAL:
        if raft_dir is None:
            raise WeightsError("the motion term needs RAFT weights (python -m convert_weights raft SRC DST) "
                               "or keyframes.flow_model=classical")
        meta, raft_params = load_checkpoint(raft_dir, family="raft")
        raft_config = RAFTConfig.from_dict(meta["config"])
    return build_models(cfg, clip_params=clip_params, clip_config=clip_config, raft_params=raft_params,
                        raft_config=raft_config)


def _build(make, params, seed):
    model = nnx.eval_shape(lambda: make(nnx.Rngs(seed)))  # no traced initialisers: they compile slowly
    assign_params(model, random_params(model, seed) if params is None else params)
    return model


def random_params(model: nnx.Module, seed: int) -> dict[str, np.ndarray]:
    """Host-drawn random weights for a (possibly abstract) model: kernels N(0, 1/fan_in), embeddings
    N(0, 0.02^2), norm scales and variances 1, biases and means 0. For presets without checkpoints."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, shape = ".".join(map(str, path)), tuple(var.get_value().shape)
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "kernel":
            value = rng.normal(0.0, 1.0 / math.sqrt(max(1, math.prod(shape[:-1]))), shape)
        elif leaf in ("embedding", "class_embedding"):
            value = rng.normal(0.0, 0.02, shape)
        elif leaf in ("scale", "running_var"):
            value = np.ones(shape)
        elif leaf == "logit_scale":
            value = np.full(shape, math.log(1 / 0.07))
        else:
            value = np.zeros(shape)
        out[key] = value.astype(np.float32)
    return out


def flow_resolution(height: int, width: int, min_side: int = 128) -> tuple[int, int]:
    """Frames are resized for RAFT to multiples of 8 with both sides >= min_side (aspect kept);
    min_side = 16 * 2**(pyramid levels - 1) (128 for torchvision's 4 levels)."""
    scale = max(1.0, min_side / min(height, width))
    return (int(math.ceil(height * scale / 8)) * 8, int(math.ceil(width * scale / 8)) * 8)


@nnx.jit
def _clip_embed(clip: CLIPModel, frames: jax.Array) -> jax.Array:
    return clip.get_image_features(preprocess_images(frames, clip.config.vision.image_size))


def clip_embeddings(clip: CLIPModel, frames: np.ndarray, batch: int = 16) -> jax.Array:
    """(T, projection_dim) CLIP image embeddings of uint8 frames (T, H, W, 3), in equal-size batches."""
    size = min(batch, len(frames))
    out = []
    for start in range(0, len(frames), size):
        chunk = frames[start:start + size]
        n = len(chunk)
        if n < size:  # pad the tail so that one compiled shape serves every batch
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
        out.append(_clip_embed(clip, jnp.asarray(chunk))[:n])
    return jnp.concatenate(out)


def _resize_for_flow(frames: jax.Array, size: tuple[int, int]) -> jax.Array:
    x = preprocess_frames(frames)
    if x.shape[1:3] != size:
        x = jax.image.resize(x, (x.shape[0], *size, 3), method="linear", antialias=True)
    return x


@functools.partial(jax.jit, static_argnames=("cfg", "size", "num_flow_updates"))
def _select_with_raft(graphdef, state, embeddings, frames, cfg, size, num_flow_updates):
    flows_in = _resize_for_flow(frames, size)

    def motion(ref, frame):
        raft = nnx.merge(graphdef, state)
        return motion_magnitude(raft(ref[None], frame[None], num_flow_updates=num_flow_updates)[0])

    return select(embeddings, cfg, frames=flows_in, motion_fn=motion)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _select_with_lk(embeddings, frames, cfg):
    return select(embeddings, cfg, frames=frames.astype(jnp.float32),
                  motion_fn=lambda ref, frame: motion_magnitude(lucas_kanade(ref, frame)))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _select_without_motion(embeddings, cfg):
    return select(embeddings, cfg)


def select_keyframes(frames: np.ndarray, cfg: KeyframeConfig, models: KeyframeModels, *,
                     num_flow_updates: int | None = None) -> tuple[list[int], Decision]:
    """Keyframe positions and the per-frame decision for a (T, H, W, 3) uint8 clip
    (RAFT iterations: `num_flow_updates`, default `cfg.flow_updates`)."""
    num_flow_updates = cfg.flow_updates if num_flow_updates is None else num_flow_updates
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"keyframe selection needs (T, H, W, 3) frames, got shape {frames.shape}")
    if cfg.method == "fixed":
        decision = fixed_select(len(frames), cfg)
        return keyframe_indices(decision), decision
    if models.clip is None:
        raise ConfigError(f"keyframes.method={cfg.method} needs a CLIP model")
    embeddings = clip_embeddings(models.clip, frames)
    if not cfg.uses_motion:
        decision = _select_without_motion(embeddings, cfg)
    elif models.raft is not None:
        size = flow_resolution(*frames.shape[1:3], min_side=16 * 2 ** (models.raft.config.corr_block_num_levels - 1))
        graphdef, state = nnx.split(models.raft)
        decision = _select_with_raft(graphdef, state, embeddings, jnp.asarray(frames), cfg, size, num_flow_updates)
    else:
        decision = _select_with_lk(embeddings, jnp.asarray(frames), cfg)
    return keyframe_indices(decision), decision
