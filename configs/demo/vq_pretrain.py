"""The `demo` preset's post-encoder + 256-word codebook on the trained demo VAE's latents (one index per
latent pixel: 16x10 indices at 128x80), on the demo corpus's training images (configs/demo/corpus.py).

    python -m train.vq_pretrain --config configs/demo/vq_pretrain.py --workdir runs/demo/vq \
        --config.vae_weights=runs/demo/vae/export --config.data.manual_dir=/work/corpus
"""

from __future__ import annotations

from configs import vq_pretrain
from configs.demo.vae_pretrain import HEIGHT, WIDTH
from configs.demo.corpus import image_data


def get_config(arg: str = "") -> object:
    c = vq_pretrain.get_config("paper")
    c.model = "demo"
    c.pixels_per_index = 8
    c.width, c.height = WIDTH, HEIGHT
    c.num_steps = 1500
    c.batch_size = 32
    c.log_every = 10
    c.checkpoint_every = 100
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 20
    c.optimizer.schedule = "constant"
    c.vq.restart_every = 50
    c.data = image_data()
    return c
