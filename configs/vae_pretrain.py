"""VAE pretraining (SD AutoencoderKL architecture) on a folder of videos: L1 + L2 + small KL.

    python -m train.vae_pretrain --config configs/vae_pretrain.py:tiny --workdir /tmp/vae_tiny
    python -m train.vae_pretrain --config configs/demo/vae_pretrain.py --workdir runs/demo/vae

The paper uses SD 1.5's VAE (convert it: `python -m convert_weights sd-vae`); this trainer makes the small
VAE of the `demo` preset. Variants: `tiny` (toy widths, bundled clips, seconds), `small` (a starting point
for a real run: SD's layout at half width). Every frame of the clips is a training image (keyframes
'interval' 1). The export's `scaling_factor` is measured after training (1 / std of the latent means).
"""

from __future__ import annotations

import ml_collections

from configs.vq_pretrain import _data


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.width, c.height = 256, 160
    c.num_steps = 20_000
    c.batch_size = 8
    c.log_every = 50
    c.checkpoint_every = 1_000
    c.max_to_keep = 3
    c.progress = True
    c.scale_batches = 16  # batches averaged for the exported scaling_factor
    c.vae = ml_collections.ConfigDict(dict(
        block_out_channels=(64, 128, 256, 256), layers_per_block=2, latent_channels=4, norm_num_groups=32,
        mid_block_add_attention=True))
    c.init_weights = ""  # an exported VAE to start from (its architecture must match `vae`)
    c.trainable = "all"  # or "decoder": post_quant_conv + decoder only (needs init_weights; latents stay valid)
    c.loss = ml_collections.ConfigDict(dict(l1_weight=1.0, l2_weight=1.0, kl_weight=1e-6, colour_weight=0.0))
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, warmup_steps=500, schedule="cosine", b1=0.9, b2=0.99, weight_decay=0.0, grad_clip=1.0))
    c.data = _data(keyframes="interval", interval=1)

    if arg == "small":
        pass
    elif arg == "tiny":
        c.width, c.height = 64, 48
        c.num_steps = 40
        c.batch_size = 4
        c.log_every = 5
        c.checkpoint_every = 20
        c.scale_batches = 2
        c.vae.block_out_channels = (8, 16, 16, 16)
        c.vae.layers_per_block = 1
        c.vae.norm_num_groups = 4
        c.optimizer.learning_rate = 3e-3
        c.optimizer.warmup_steps = 2
        c.optimizer.schedule = "constant"
        c.data = _data(keyframes="interval", interval=1, fps=4.0)
    else:
        raise ValueError(f"unknown variant {arg!r}; one of small, tiny")
    return c
