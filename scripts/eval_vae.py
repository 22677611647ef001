"""The VAE alone on the held-out split: every frame encoded (posterior mean) and decoded, no codec around it.
The ceiling of every decoded frame's quality, and where the demo's colour error starts (docs/demo.md).

    python scripts/eval_vae.py /work/corpus VAE_EXPORT [VAE_EXPORT ...]     # e.g. runs/demo/vae/export

Sequences, size and frame rate as scripts/eval_heldout.py (held-out real clips, then the first camera path
across each held-out photograph; 128x80, 8 fps, 33 frames). Prints PSNR-RGB and mean-colour error (/255) per
sequence and their means for each VAE given, so two stages compare on the same frames.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from m3cvc_jax import weights  # noqa: E402
from m3cvc_jax.errors import M3CVCError  # noqa: E402
from m3cvc_jax.eval import metrics  # noqa: E402
from m3cvc_jax.io.video import PreprocessConfig, load_video  # noqa: E402
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig  # noqa: E402
from scripts.eval_heldout import sequences  # noqa: E402


def reconstruct_fn(export: str):
    vae = weights.load_module(export, family="sd-vae",
                              build=lambda c, rngs: AutoencoderKL(VAEConfig.from_dict(c), rngs=rngs))
    graph, params = nnx.split(vae)

    @jax.jit
    def rec(params, frames):
        v = nnx.merge(graph, params)
        return v.decode(v.encode(metrics.to_signed(frames))[0])

    return lambda frames: np.round(np.asarray(metrics.to_unit255(rec(params, frames)))).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus")
    p.add_argument("exports", nargs="+")
    p.add_argument("--max-sequences", type=int, default=5, help="camera-path sequences to use (0 = all)")
    args = p.parse_args(argv)
    try:
        if args.max_sequences < 0:
            raise M3CVCError("--max-sequences must be >= 0")
        pre = PreprocessConfig(width=128, height=80, fps=8.0, max_frames=33)
        videos = [(name, load_video(path, pre).frames) for name, path in sequences(args.corpus, args.max_sequences)]
        for export in args.exports:
            rec = reconstruct_fn(export)
            psnrs, colours = [], []
            for name, frames in videos:
                out = np.concatenate([rec(frames[i:i + 11]) for i in range(0, len(frames), 11)])
                psnrs.append(float(np.mean(metrics.psnr(frames, out))))
                colours.append(metrics.mean_colour_error(frames, out))
                print(f"{export} {name}: PSNR-RGB {psnrs[-1]:.2f} dB, colour error {colours[-1]:.2f}")
            print(f"{export} mean over {len(videos)}: PSNR-RGB {np.mean(psnrs):.2f} dB, "
                  f"colour error {np.mean(colours):.2f}")
    except M3CVCError as e:
        print(f"eval_vae: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
