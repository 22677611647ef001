"""Fine-tuning the keyframe decoder: the SD UNet's linear layers + the conv_in extension, epsilon loss.

    python -m train.decoder_finetune --config configs/decoder_finetune.py:tiny --workdir /tmp/ft_tiny
    python -m train.decoder_finetune --config configs/decoder_finetune.py:paper --workdir runs/ft \
        --config.vae_weights=weights/sd15-vae --config.unet_weights=weights/sd15-unet \
        --config.text_weights=weights/clip-vit-l-14 --config.vq_weights=runs/vq/export \
        --config.data.captions=captions.json

Everything but the UNet's linear layers (attention projections, feed-forward, time embeddings, linear
proj_in/out) and the new conv_in input channels is frozen through optax masks. The text is replaced by
the empty prompt with probability `text_dropout`, which is what makes classifier-free guidance work.
Variants: `paper`, `paper64` (64x40 indices), `tiny` (random frozen parts, bundled clips, < 1 min).
"""

from __future__ import annotations

import ml_collections

from configs.vq_pretrain import _data


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = "paper"
    c.pixels_per_index = 16
    c.width, c.height = 512, 320
    c.vae_weights = ""  # converted checkpoints; '' = random init (allowed for `tiny` only)
    c.unet_weights = ""  # a plain SD UNet (4 input channels) is widened with zero channels
    c.text_weights = ""  # a converted CLIP (full model or text tower)
    c.vq_weights = ""  # <vq_pretrain workdir>/export
    c.text_dropout = 0.1
    c.trainable = "linear"  # 'linear': the paper (linear layers + conv_in extension); 'all': every UNet
    #                         weight (a UNet trained from scratch, e.g. the demo preset's)
    c.num_steps = 50_000
    c.batch_size = 8
    c.log_every = 100
    c.checkpoint_every = 5_000
    c.max_to_keep = 3
    c.progress = True
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=5e-5, warmup_steps=500, schedule="constant", b1=0.9, b2=0.999, weight_decay=0.0, grad_clip=1.0))
    c.data = _data()

    if arg == "paper":
        pass
    elif arg == "paper64":
        c.pixels_per_index = 8
    elif arg == "tiny":
        c.model = "tiny"
        c.width, c.height = 128, 80
        c.num_steps = 40
        c.batch_size = 8
        c.log_every = 10
        c.checkpoint_every = 20
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 5
        c.data = _data(keyframes="interval", interval=1)
    else:
        raise ValueError(f"unknown variant {arg!r}; one of paper, paper64, tiny")
    return c
