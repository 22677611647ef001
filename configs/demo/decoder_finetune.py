"""The `demo` preset's keyframe UNet, trained from random (`trainable='all'`: there is no pretrained SD
UNet to fine-tune) on the demo VAE latents, conditioned on the demo VQ indices and the empty prompt of the
random tiny CLIP text tower; on the demo corpus's training images (configs/demo/corpus.py).

    python -m train.decoder_finetune --config configs/demo/decoder_finetune.py --workdir runs/demo/unet \
        --config.vae_weights=runs/demo/vae/export --config.vq_weights=runs/demo/vq/export \
        --config.text_weights=runs/demo/clip --config.data.manual_dir=/work/corpus
"""

from __future__ import annotations

from configs import decoder_finetune
from configs.demo.vae_pretrain import HEIGHT, WIDTH
from configs.demo.corpus import image_data


def get_config(arg: str = "") -> object:
    c = decoder_finetune.get_config("paper")
    c.model = "demo"
    c.pixels_per_index = 8
    c.width, c.height = WIDTH, HEIGHT
    c.trainable = "all"
    # The frozen VAE encodes each of the corpus's training images once, not every batch.
    c.cache_latents = True
    # The shipped UNet stopped at 5000 of a planned 6000 (constant learning rate, so a run configured for 5000
    # is the same run); continue one with --config.num_steps=N: the trainer resumes from its last checkpoint.
    c.num_steps = 5000
    c.batch_size = 16
    c.log_every = 10
    c.checkpoint_every = 100
    c.optimizer.learning_rate = 5e-4
    c.optimizer.warmup_steps = 50
    c.data = image_data()
    return c
