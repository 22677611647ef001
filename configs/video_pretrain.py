"""Video model pretraining: SEINE's video UNet, epsilon loss, masks first1 / onelast1, empty prompt.

    python -m train.video_pretrain --config configs/video_pretrain.py:tiny --workdir /tmp/video_tiny
    python -m train.video_pretrain --config configs/demo/video_pretrain.py --workdir runs/demo/video \
        --config.vae_weights=runs/demo/vae/export --config.text_weights=runs/demo/clip

The paper uses the released SEINE; this trainer makes the `demo` preset's video model. Variants: `tiny`
(toy widths, random frozen VAE and text tower, bundled clips; seconds), `small` (SEINE's layout at a
fifth of its width, 16-frame windows: a starting point for a real run, needs `vae_weights`).
"""

from __future__ import annotations

import os

import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.width, c.height = 256, 160
    c.window = 16  # frames per training clip (SEINE's window)
    c.mask_types = ("first1", "onelast1")  # prediction and interpolation, drawn per example
    c.vae_weights = ""  # an sd-vae checkpoint (train.vae_pretrain export or converted); '' = random tiny VAE
    c.vae_preset = "tiny"  # only for a random VAE
    c.text_weights = ""  # a full CLIP checkpoint (its text tower embeds ""); '' = random tiny tower
    c.clip_preset = "tiny"  # only for a random text tower
    c.text_pad_id = 49407
    c.num_steps = 50_000
    c.batch_size = 4
    c.log_every = 50
    c.checkpoint_every = 1_000
    c.max_to_keep = 3
    c.progress = True
    c.unet = ml_collections.ConfigDict(dict(
        block_out_channels=(64, 128, 256, 256), layers_per_block=2, num_heads=(2, 4, 4, 4), norm_num_groups=32))
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, warmup_steps=500, schedule="constant", b1=0.9, b2=0.999, weight_decay=0.0, grad_clip=1.0))
    c.data = ml_collections.ConfigDict(dict(
        manual_dir=os.path.join(REPO, "assets", "clips"), fps=8.0, stride=1, flip=True, max_frames=0))

    if arg == "small":
        pass
    elif arg == "tiny":
        c.width, c.height = 64, 48
        c.window = 6
        c.num_steps = 40
        c.batch_size = 2
        c.log_every = 5
        c.checkpoint_every = 20
        c.unet = ml_collections.ConfigDict(dict(
            block_out_channels=(32, 32), layers_per_block=1, num_heads=(1, 1), norm_num_groups=8))
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 2
        c.data.fps = 4.0
        c.data.stride = 2
    else:
        raise ValueError(f"unknown variant {arg!r}; one of small, tiny")
    return c
