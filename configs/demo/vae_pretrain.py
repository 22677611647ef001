"""The `demo` preset's VAE: SD's AutoencoderKL layout (8x down, 4 latent channels) at small widths
(`m3cvc_jax.nn.keyframe_codec.DEMO_VAE`), trained from scratch at 128x80 on the demo corpus
(configs/demo/corpus.py: views of ~100 photographs and the real training clips; never the held-out split).

    python -m train.vae_pretrain --config configs/demo/vae_pretrain.py --workdir runs/demo/vae \
        --config.data.manual_dir=/work/corpus
"""

from __future__ import annotations

from configs import vae_pretrain
from configs.demo.corpus import image_data
from m3cvc_jax.nn.keyframe_codec import DEMO_VAE

WIDTH, HEIGHT = 128, 80


def get_config(arg: str = "") -> object:
    c = vae_pretrain.get_config("small")
    c.width, c.height = WIDTH, HEIGHT
    # 24,000 images (about 14 passes over the corpus's 1,765 training images); about 2 h on 2 idle CPU
    # cores (4.6 s/step), longer when a niced run shares them (docs/demo.md).
    c.num_steps = 1500
    c.batch_size = 16
    c.log_every = 10
    c.checkpoint_every = 50  # a few minutes of work lost at most when a session ends mid-run
    c.vae.block_out_channels = DEMO_VAE.block_out_channels
    c.vae.layers_per_block = DEMO_VAE.layers_per_block
    c.vae.norm_num_groups = DEMO_VAE.norm_num_groups
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 50
    c.data = image_data()
    return c
