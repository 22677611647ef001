"""Encode + decode a clip with the `demo` preset; print bpp, PSNR, SSIM and MS-SSIM; write a frame grid.

    python scripts/demo_grid.py assets/clips/bikes_4s.mp4 docs/demo_grid.png [--frames 31]

MS-SSIM uses 3 scales (weights renormalised): the standard 5 need frames over 160 px on each side and
the demo codes 128x80.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
from PIL import Image

from m3cvc_jax.eval import metrics
from m3cvc_jax.pipelines.codec import Codec, decode_file, read_input


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("grid")
    p.add_argument("--frames", type=int, default=31)
    p.add_argument("--columns", type=int, default=6)
    args = p.parse_args()
    codec = Codec.load("demo", overrides=[f"video.max_frames={args.frames}"])
    with tempfile.TemporaryDirectory() as tmp:
        stream = os.path.join(tmp, "clip.m3cvc")
        enc = codec.encode_file(args.input, stream)
        dec = decode_file(stream, os.path.join(tmp, "out"), store=codec.store)
        size = os.path.getsize(stream)
    original = read_input(args.input, codec.config).frames
    decoded = dec.video.frames
    t, h, w, _ = original.shape
    w3 = np.asarray(metrics.MS_SSIM_WEIGHTS[:3])
    print(f"frames {t} at {w}x{h}, keyframes {list(enc.stream.header.keyframes)}")
    print(f"bytes {size}  bpp {size * 8 / (w * h * t):.4f}")
    print(f"PSNR {float(np.mean(metrics.psnr(original, decoded))):.2f} dB  "
          f"SSIM {float(np.mean(metrics.ssim(original, decoded))):.4f}  "
          f"MS-SSIM(3 scales) {float(np.mean(metrics.ms_ssim(original, decoded, weights=tuple(w3 / w3.sum())))):.4f}")
    picks = np.round(np.linspace(0, t - 1, args.columns)).astype(int)
    grid = np.concatenate([np.concatenate([original[i] for i in picks], axis=1),
                           np.concatenate([decoded[i] for i in picks], axis=1)], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(args.grid)
    print(f"grid {args.grid}: top original, bottom decoded; frames {list(picks)}")


if __name__ == "__main__":
    main()
