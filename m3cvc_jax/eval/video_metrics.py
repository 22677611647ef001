"""The VBench dimensions (eval/vbench.py) as `m3cvc eval --metrics` entries.

They are no-reference and need whole videos (consecutive and first frames), so they do not fit the
frame-sharded `sharding.BatchMetrics`; `VideoMetrics` has the same call, `(reference, decoded) -> {name:
per-step values}`, reads the decoded video only, and runs each network jitted over fixed-size chunks of
frames (one compile per frame size). `with_video_metrics` joins it to a BatchMetrics.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.eval import vbench

VBENCH_METRICS = ("temporal_flickering", "subject_consistency", "background_consistency", "aesthetic_quality")
# Which networks each dimension needs (commands/eval.py maps them to weight options).
NEEDS = {"subject_consistency": ("dino",), "background_consistency": ("clip",),
         "aesthetic_quality": ("aesthetic_clip", "aesthetic_head")}


def _chunked(fn: Callable[[jax.Array], jax.Array], video: np.ndarray, chunk: int) -> jax.Array:
    """fn over `chunk` frames at a time (the last chunk padded with its first frame), concatenated."""
    out = []
    for start in range(0, video.shape[0], chunk):
        part = video[start:start + chunk]
        real = part.shape[0]
        if real < chunk:
            part = np.concatenate([part, np.repeat(part[:1], chunk - real, 0)])
        out.append(np.asarray(fn(jnp.asarray(part)))[:real])
    return jnp.asarray(np.concatenate(out))


def _features(model, method: str, transform, size: int) -> Callable[[jax.Array], jax.Array]:
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, v: getattr(nnx.merge(graphdef, s), method)(transform(v, size)))
    return lambda v: run(state, v)


def _clip_size(model) -> int:
    # VBench's 224 is the input size of the CLIPs it uses; ours take their own (fixed position table).
    return model.config.vision.image_size


class VideoMetrics:
    """VBench dimensions on decoded videos. Models: `dino` (nn.vit.ViTModel), `clip` (nn.clip.CLIPModel,
    VBench: ViT-B/32), `aesthetic_clip` (CLIPModel ViT-L/14) and `aesthetic_head` (nn.aesthetic)."""

    def __init__(self, names, *, chunk: int = 16, **models: Any):
        self.names = list(names)
        unknown = [n for n in self.names if n not in VBENCH_METRICS]
        if unknown:
            raise ConfigError(f"not a VBench dimension: {', '.join(unknown)}")
        for n in self.names:
            missing = [m for m in NEEDS.get(n, ()) if models.get(m) is None]
            if missing:
                raise ConfigError(f"metric {n} needs the {' and '.join(missing)} weights")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self._fns = {}
        if "subject_consistency" in self.names:
            self._fns["subject_consistency"] = _features(models["dino"], "features", vbench.dino_transform, 224)
        if "background_consistency" in self.names:
            clip = models["clip"]
            self._fns["background_consistency"] = _features(clip, "get_image_features", vbench.clip_transform,
                                                            _clip_size(clip))
        if "aesthetic_quality" in self.names:
            clip = models["aesthetic_clip"]
            self._fns["aesthetic_quality"] = _features(clip, "get_image_features", vbench.clip_transform,
                                                       _clip_size(clip))
            head = models["aesthetic_head"]
            self._head = nnx.jit(vbench.aesthetic_scores)
            self._head_model = head

    def __call__(self, reference: np.ndarray, decoded: np.ndarray) -> dict[str, np.ndarray]:
        video = np.asarray(decoded)
        if video.dtype != np.uint8 or video.ndim != 4:
            raise ValueError(f"expected decoded uint8 frames (T, H, W, 3), got {video.dtype} {video.shape}")
        out = {}
        for name in self.names:
            if name == "temporal_flickering":
                out[name] = vbench.temporal_flickering(jnp.asarray(video))
            elif name == "aesthetic_quality":
                out[name] = self._head(self._head_model, _chunked(self._fns[name], video, self.chunk))
            else:
                out[name] = vbench.consistency(_chunked(self._fns[name], video, self.chunk))
        return {k: np.asarray(v, np.float32) for k, v in out.items()}


def with_video_metrics(batch, video: VideoMetrics | None):
    """One `(reference, decoded) -> dict` call over a frame BatchMetrics (or None) and VideoMetrics."""
    if video is None:
        return batch

    def call(reference, decoded):
        out = dict(batch(reference, decoded)) if batch is not None else {}
        out.update(video(reference, decoded))
        return out

    return call
