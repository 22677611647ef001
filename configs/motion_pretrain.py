"""Motion-module pretraining (AnimateDiff): motion modules on a frozen spatial UNet, epsilon loss.

    python -m train.motion_pretrain --config configs/motion_pretrain.py:tiny --workdir /tmp/motion_tiny
    python -m train.motion_pretrain --config configs/motion_pretrain.py:demo --workdir runs/demo/motion

The frozen parts default to the bundled `demo` weights (m3cvc_jax/assets/demo): its keyframe UNet (the
index-condition channels of its conv_in are dropped), VAE and CLIP text tower (which embeds ""). Variants:
`demo` (16-frame windows of 128x80 frames at 8 fps, the demo codec's size and rate), `tiny` (4-frame
windows, a few steps: the tests; well under a minute).
"""

from __future__ import annotations

import os

import ml_collections

from m3cvc_jax.pipelines.models import DEMO_WEIGHTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.width, c.height = 128, 80
    c.window = 16  # frames per training clip (AnimateDiff's 16)
    c.unet_weights = os.path.join(DEMO_WEIGHTS, "keyframe-unet")  # an sd-unet checkpoint, frozen
    c.vae_weights = os.path.join(DEMO_WEIGHTS, "sd-vae")
    c.text_weights = os.path.join(DEMO_WEIGHTS, "clip")  # a full CLIP checkpoint; its text tower embeds ""
    c.text_pad_id = 49407
    c.beta_schedule = "linear"  # AnimateDiff's training and sampling schedule; 'scaled_linear': SD's
    # MotionAdapterConfig fields; its block widths and layers per block are the UNet's.
    c.motion = ml_collections.ConfigDict(dict(
        motion_num_attention_heads=(2, 4), motion_transformer_layers_per_block=1,
        motion_mid_block_layers_per_block=1, motion_transformer_layers_per_mid_block=1,
        motion_norm_num_groups=16, motion_max_seq_length=32, use_motion_mid_block=True))
    c.num_steps = 1500
    c.batch_size = 2
    c.log_every = 10
    c.checkpoint_every = 100
    c.max_to_keep = 3
    c.progress = True
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=5e-4, warmup_steps=50, schedule="constant", b1=0.9, b2=0.999, weight_decay=0.0, grad_clip=1.0))
    c.data = ml_collections.ConfigDict(dict(
        manual_dir=os.path.join(REPO, "assets", "clips"), fps=8.0, stride=1, flip=True, max_frames=0))

    if arg == "demo":
        pass
    elif arg == "tiny":
        c.window = 4
        c.num_steps = 30
        c.batch_size = 2
        c.log_every = 5
        c.checkpoint_every = 10
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 2
        c.data.fps = 4.0
        c.data.stride = 4
        c.data.flip = False
    else:
        raise ValueError(f"unknown variant {arg!r}; one of demo, tiny")
    return c
