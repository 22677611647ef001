"""`python -m benchmarks.t2v_step [--repeats N] [--frames T] [--size S]`: one AnimateDiff UNet forward
(SD UNet + motion modules), jitted JAX against diffusers' UNetMotionModel (best of 1 and 2 threads) on the
same weights.

Config: the reduced SD UNet of `benchmarks.unet_step` (widths 64/128/256/256, 2 layers per block, text
77x256) with an SD-1.5-style motion adapter at those widths (8 heads, 32 groups, mid-block module), one
clip of 16 frames at a 16x16 latent (128x128 pixels): the shape of one denoising step of one TT2V window
(a CFG step runs it on a batch of 2). The motion `proj_out` weights, zero at init, are randomised so the
temporal path affects the output being compared. JAX and PyTorch runs are interleaved; prints medians and
minima, the max difference, and `ratio=jax/torch` (medians, torch at its best thread count) last. The CPU
is shared by other jobs: expect noise of tens of percent between runs.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from benchmarks.unet_step import CONFIG, compiled_forward, interleaved_runs, print_ratio

ADAPTER = dict(block_out_channels=CONFIG["block_out_channels"], motion_layers_per_block=CONFIG["layers_per_block"],
               motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="latent height and width")
    args = parser.parse_args(argv)
    if not (1 <= args.frames <= 32 and args.size >= 8 and args.repeats >= 1):
        parser.error("need 1 <= --frames <= 32, --size >= 8, --repeats >= 1")

    import diffusers
    import torch

    from convert_weights.animatediff import convert_state_dict
    from convert_weights.sd_unet import convert_params
    from m3cvc_jax.nn.animatediff import MotionAdapterConfig, UNetMotionModel, merge_params
    from m3cvc_jax.nn.unet import UNetConfig
    from m3cvc_jax.weights import assign_params

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**CONFIG)
    adapter = diffusers.MotionAdapter(**ADAPTER)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.02)
    ref = diffusers.UNetMotionModel.from_unet2d(unet, adapter).eval()
    ucfg = UNetConfig.from_diffusers(dict(unet.config))
    mcfg = MotionAdapterConfig.from_diffusers(dict(adapter.config))
    unet_sd = {k: v.detach().numpy() for k, v in unet.state_dict().items()}
    motion_sd = {k: v.detach().numpy() for k, v in adapter.state_dict().items()}
    model = nnx.eval_shape(lambda: UNetMotionModel(ucfg, mcfg, rngs=nnx.Rngs(0)))
    assign_params(model, merge_params(convert_params(ucfg, unet_sd, lambda k: k.replace("Conv2d_0.", "conv.")),
                                      convert_state_dict(motion_sd, mcfg)))
    n_params = sum(p.numel() for p in ref.parameters())

    rng = np.random.default_rng(0)
    f, s = args.frames, args.size
    x = rng.normal(size=(1, f, s, s, 4)).astype(np.float32)
    ctx = rng.normal(size=(1, 77, 256)).astype(np.float32)
    t = np.array([500.0], np.float32)

    run_jax, out, compile_s = compiled_forward(model, x, t, ctx)

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))
    tt, ct = torch.from_numpy(t), torch.from_numpy(np.repeat(ctx, f, axis=0))
    runs, want = interleaved_runs(run_jax,
                                  lambda: ref(xt, tt, ct).sample, args.repeats)
    want = want.numpy().transpose(0, 2, 3, 4, 1)
    diff = float(np.abs(np.asarray(out) - want).max())

    print(f"config: widths {CONFIG['block_out_channels']} + motion modules, {f} frames at {s}x{s} latent, "
          f"text 77x256, {n_params / 1e6:.1f}M params, jax {jax.__version__}, torch {torch.__version__}")
    print(f"jax compile + first run: {compile_s:.1f} s; max |jax - torch| = {diff:.2e} "
          f"(output max {np.abs(want).max():.2f})")
    return print_ratio(runs)

if __name__ == "__main__":
    main()
