"""The `demo` preset's keyframe UNet, trained from random (`trainable='all'`: there is no pretrained SD
UNet to fine-tune) on the demo VAE latents, conditioned on the demo VQ indices and the empty prompt of the
random tiny CLIP text tower.

    python -m train.decoder_finetune --config configs/demo/decoder_finetune.py --workdir runs/demo/unet \
        --config.vae_weights=runs/demo/vae/export --config.vq_weights=runs/demo/vq/export \
        --config.text_weights=runs/demo/clip
"""

from __future__ import annotations

from configs import decoder_finetune
from configs.demo.vae_pretrain import HEIGHT, WIDTH
from configs.vq_pretrain import _data


def get_config(arg: str = "") -> object:
    c = decoder_finetune.get_config("paper")
    c.model = "demo"
    c.pixels_per_index = 8
    c.width, c.height = WIDTH, HEIGHT
    c.trainable = "all"
    c.num_steps = 1500
    c.batch_size = 8
    c.log_every = 10
    c.checkpoint_every = 100
    c.optimizer.learning_rate = 5e-4
    c.optimizer.warmup_steps = 50
    c.data = _data(keyframes="interval", interval=1, fps=12.5)
    return c
