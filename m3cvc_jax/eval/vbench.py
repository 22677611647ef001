"""VBench's video-quality dimensions that CMVC reports for its TT2V mode (its Fig. 4), computed as VBench
(Huang et al., CVPR 2024; Vchitect/VBench) defines them. No-reference: each reads the decoded video only.

Each function returns per-step values whose mean over the video is VBench's per-video score (the eval
runner averages them); VBench's dataset score is the mean over all steps of all videos (its `sim / cnt`).

`size` (224, VBench's) is a parameter only so tests can run tiny networks.

- `temporal_flickering`: per consecutive pair, (255 - mean |I_t - I_{t+1}|) / 255 over all pixels and
  channels of the uint8 frames at their full size. (VBench applies it to the static subset of its prompts;
  here it runs on whatever video it is given.)
- `subject_consistency`: DINO ViT-B/16 class-token features of each frame (frames resized, shorter side
  224, bilinear without antialiasing, rounded back to uint8 as torchvision does on uint8 tensors; /255;
  ImageNet mean/std; no crop), L2-normalised; for each frame t >= 1 the mean of max(0, cos(f_{t-1}, f_t))
  and max(0, cos(f_0, f_t)).
- `background_consistency`: the same on CLIP image embeddings (VBench: ViT-B/32 `encode_image`; frames
  resized bicubically, shorter side 224, centre-cropped to 224, /255, CLIP mean/std).
- `aesthetic_quality`: per frame, LAION's linear aesthetic head (`sa_0_4_vit_l_14_linear.pth`, 768 -> 1)
  on L2-normalised CLIP ViT-L/14 image embeddings (same CLIP transform), divided by 10.

Not provided: motion smoothness (AMT-S frame interpolation) and imaging quality (MUSIQ): see
docs/evaluation.md.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from m3cvc_jax.nn.torch_resize import resize

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

FeatureFn = Callable[[jax.Array], jax.Array]


def _check_video(video: jax.Array) -> None:
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != jnp.uint8:
        raise ValueError(f"expected a uint8 video (T, H, W, 3), got {video.dtype} {video.shape}")


def temporal_flickering(video: jax.Array) -> jax.Array:
    """(T - 1,) per-pair scores in [0, 1]; 1 for a still video."""
    _check_video(video)
    x = video.astype(jnp.float32)
    mae = jnp.mean(jnp.abs(x[1:] - x[:-1]), axis=(1, 2, 3))
    return (255.0 - mae) / 255.0


def consistency(features: jax.Array) -> jax.Array:
    """(T - 1,) VBench consistency terms of per-frame features `(T, D)`."""
    f = features.astype(jnp.float32)
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    previous = jnp.maximum(jnp.sum(f[1:] * f[:-1], axis=-1), 0.0)
    first = jnp.maximum(jnp.sum(f[1:] * f[:1], axis=-1), 0.0)
    return (previous + first) / 2


def _shorter_side(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision Resize(size) output: shorter side `size`, longer side truncated."""
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def _resize_uint8(video: jax.Array, size: int, mode: str) -> jax.Array:
    """torchvision's tensor Resize on uint8: interpolate in float, then round and clamp back to 0..255."""
    out = resize(video.astype(jnp.float32), _shorter_side(video.shape[1], video.shape[2], size), mode)
    return jnp.clip(jnp.round(out), 0, 255)


def _normalise(x: jax.Array, mean, std) -> jax.Array:
    return (x / 255.0 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def dino_transform(video: jax.Array, size: int = 224) -> jax.Array:
    _check_video(video)
    return _normalise(_resize_uint8(video, size, "bilinear"), IMAGENET_MEAN, IMAGENET_STD)


def clip_transform(video: jax.Array, size: int = 224) -> jax.Array:
    _check_video(video)
    x = _resize_uint8(video, size, "bicubic")
    h, w = x.shape[1:3]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return _normalise(x[:, top:top + size, left:left + size], CLIP_MEAN, CLIP_STD)


def subject_consistency(dino_features: FeatureFn, video: jax.Array, size: int = 224) -> jax.Array:
    """dino_features: transformed frames -> `(T, D)` (e.g. `nn.vit.ViTModel.features`)."""
    return consistency(dino_features(dino_transform(video, size)))


def background_consistency(clip_features: FeatureFn, video: jax.Array, size: int = 224) -> jax.Array:
    """clip_features: transformed frames -> `(T, D)` image embeddings (`CLIPModel.get_image_features`)."""
    return consistency(clip_features(clip_transform(video, size)))


def aesthetic_quality(clip_features: FeatureFn, head: Callable[[jax.Array], jax.Array], video: jax.Array,
                      size: int = 224) -> jax.Array:
    """(T,) per-frame aesthetic scores / 10; `head` maps normalised ViT-L/14 embeddings `(T, 768)` to `(T, 1)`."""
    return aesthetic_scores(head, clip_features(clip_transform(video, size)))


def aesthetic_scores(head: Callable[[jax.Array], jax.Array], embeddings: jax.Array) -> jax.Array:
    """(T,) VBench aesthetic scores of CLIP image embeddings `(T, D)`: head(normalised) / 10."""
    e = embeddings.astype(jnp.float32)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    return head(e)[:, 0].astype(jnp.float32) / 10.0
