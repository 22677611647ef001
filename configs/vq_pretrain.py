"""VQ pretraining of the keyframe codec: post-encoder + codebook (+ a training-only post-decoder).

    python -m train.vq_pretrain --config configs/vq_pretrain.py:tiny --workdir /tmp/vq_tiny
    python -m train.vq_pretrain --config configs/vq_pretrain.py:paper --workdir runs/vq \
        --config.vae_weights=weights/sd15-vae --config.data.name=msrvtt --config.data.manual_dir=/data/msrvtt

Variants: `paper` (SD 1.5 VAE, 32x20 indices at 512x320, 256 words), `paper64` (64x40 indices), `tiny`
(toy widths, random frozen VAE, the bundled clips in `assets/clips`; trains in well under a minute on CPU).
The loss is `rec (latent MSE / latent variance) + commit_weight * commit / D (+ codebook / D when vq.codebook_update='loss')`: the latent MSE of
the post-decoder's reconstruction from the quantised `h` keeps the indices informative (see docs/training.md).
"""

from __future__ import annotations

import os

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(**kw) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict(dict(
        name="video_folder",  # or "msrvtt"
        manual_dir=os.path.join(REPO, "assets", "clips"),
        data_dir="",  # '' -> <workdir>/data
        fps=8.0,
        keyframes="semantic",  # 'semantic' (lambda2 = 0, needs clip_weights) or 'interval'
        interval=8,
        threshold=0.15,  # D_th of the semantic rule
        max_clip_length=16,  # a keyframe at least every 16 frames (SEINE's window)
        clip_weights="",
        captions="",
        describer="none",  # 'none' or 'qwen2-vl' (for frames the captions file does not cover)
        describer_weights="",
        max_frames=0,
    ))
    d.update(kw)
    return d


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = "paper"  # keyframe codec preset (m3cvc_jax/nn/keyframe_codec.py)
    c.pixels_per_index = 16
    c.width, c.height = 512, 320
    c.vae_weights = ""  # converted SD VAE (python -m convert_weights sd-vae ...); '' = random (tiny only)
    c.num_steps = 100_000
    c.batch_size = 16
    c.log_every = 100
    c.checkpoint_every = 5_000
    c.max_to_keep = 3
    c.progress = True
    # Batches (at most one epoch, rounded up to whole batches) whose word counts are exported with the
    # weights for coding.entropy_model=static.
    c.histogram_batches = 64
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, warmup_steps=1_000, schedule="cosine", b1=0.9, b2=0.99, weight_decay=0.0, grad_clip=1.0))
    c.vq = ml_collections.ConfigDict(dict(
        codebook_update="ema",  # 'ema' (k-means EMA, codebook not in the optimiser) or 'loss' (codebook loss)
        commit_weight=0.25, ema_decay=0.99, restart_every=200, restart_threshold=0.03,
        # Rate term: rate_weight * the indices' code length (bits per index) under a spatial context model
        # (vq.context_rate_bits; softness rate_temperature, in mean squared distance per dimension). 0: off,
        # today's training exactly.
        rate_weight=0.0, rate_temperature=1.0))
    c.data = _data()

    if arg == "paper":
        pass
    elif arg == "paper64":
        c.pixels_per_index = 8
    elif arg == "tiny":
        c.model = "tiny"
        c.width, c.height = 128, 80
        c.num_steps = 80
        c.batch_size = 8
        c.log_every = 10
        c.checkpoint_every = 40
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 10
        c.optimizer.schedule = "constant"
        c.vq.ema_decay = 0.9
        c.vq.restart_every = 5
        c.vq.restart_threshold = 0.5
        c.data = _data(keyframes="interval", interval=1)
    else:
        raise ValueError(f"unknown variant {arg!r}; one of paper, paper64, tiny")
    return c
