"""The `demo` VAE's second stage: its decoder fine-tuned on the demo corpus with the encoder frozen.

    python -m train.vae_pretrain --config configs/demo/vae_decoder_finetune.py --workdir runs/demo/vae_decoder \
        --config.data.manual_dir=/work/corpus --config.init_weights=runs/demo/vae/export

Why: after the first stage (configs/demo/vae_pretrain.py, 1,500 steps) the VAE alone reconstructs held-out
frames at about 21 dB and drifts their mean colour (docs/demo.md), and every decoded frame goes through
its decoder. Freezing the encoder keeps every latent, hence the VQ, the keyframe UNet and the video model
trained on them, valid, so only this stage and the packing have to be rerun. The mean-colour term weighs
the per-image, per-channel mean error that the first stage left large.
"""

from __future__ import annotations

from configs.demo import vae_pretrain


def get_config(arg: str = "") -> object:
    c = vae_pretrain.get_config(arg)
    c.trainable = "decoder"
    c.num_steps = 3000
    c.checkpoint_every = 50
    c.loss.colour_weight = 1.0
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 20
    c.optimizer.schedule = "constant"  # resumable past num_steps (--config.num_steps=N) without a jump in lr
    return c
