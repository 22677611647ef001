"""The `demo` preset's VAE: SD's AutoencoderKL layout (8x down, 4 latent channels) at small widths
(`m3cvc_jax.nn.keyframe_codec.DEMO_VAE`), trained from scratch on the bundled clips at 128x80.

    python -m train.vae_pretrain --config configs/demo/vae_pretrain.py --workdir runs/demo/vae
"""

from __future__ import annotations

from configs import vae_pretrain
from m3cvc_jax.nn.keyframe_codec import DEMO_VAE
from configs.vq_pretrain import _data

WIDTH, HEIGHT = 128, 80


def get_config(arg: str = "") -> object:
    c = vae_pretrain.get_config("small")
    c.width, c.height = WIDTH, HEIGHT
    c.num_steps = 600  # about 35 min on 2 CPU cores (docs/demo.md)
    c.batch_size = 8
    c.log_every = 10
    c.checkpoint_every = 100
    c.vae.block_out_channels = DEMO_VAE.block_out_channels
    c.vae.layers_per_block = DEMO_VAE.layers_per_block
    c.vae.norm_num_groups = DEMO_VAE.norm_num_groups
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 50
    # Every frame of both clips at 12.5 fps (101 frames).
    c.data = _data(keyframes="interval", interval=1, fps=12.5)
    return c
