"""CMVC IT2V against M3-CVC's interpolation mode at matched keyframes, on one clip; a frame grid.

    python scripts/it2v_demo.py assets/clips/bikes_4s.mp4 docs/it2v_grid.png [--preset demo]
        [--frames 17] [--interval 8] [--set cmvc.lora_steps=100 ...]

Both modes code the same keyframes (`keyframes.method=fixed` every `--interval` frames; `--frames - 1`
a multiple of it, so IT2V's forced last keyframe is one of them) with the same keyframe codec; only the
frames between differ (SEINE vs LoRA morphing). Prints per mode: bits per part, bpp, PSNR, MS-SSIM (3
scales: 128x80 frames are too small for 5), VMAF (when ffmpeg has libvmaf), wall time; the grid rows are
original / interpolation / it2v. `--set` applies to both modes (e.g. the `cmvc` block).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.eval import metrics, vmaf
from m3cvc_jax.io.video import Video
from m3cvc_jax.pipelines.codec import Codec, read_input


def run(codec: Codec, video: Video):
    start = time.perf_counter()
    stream, _ = codec.encode(video)
    bits = bs.unpack_with_bits(bs.pack(stream, bs.WRITE_VERSION))[1]  # what m3cvc encode writes
    decoded = Codec.for_stream(stream, store=codec.store).decode(stream).video.frames
    return stream, bits, decoded, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("grid")
    p.add_argument("--preset", default="demo")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--interval", type=int, default=8)
    p.add_argument("--columns", type=int, default=6)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    args = p.parse_args()
    if (args.frames - 1) % args.interval:
        p.error("--frames - 1 must be a multiple of --interval (matched keyframes)")
    base = [f"video.max_frames={args.frames}", "keyframes.method=fixed", f"keyframes.interval={args.interval}",
            *args.overrides]
    rows = {}
    store = None
    for mode in ("interpolation", "it2v"):
        codec = Codec.load(args.preset, overrides=base, mode=mode, store=store)
        store = codec.store
        original = read_input(args.input, codec.config)
        stream, bits, decoded, seconds = run(codec, original)
        o = original.frames
        t, h, w, _ = o.shape
        w3 = np.asarray(metrics.MS_SSIM_WEIGHTS[:3])
        row = {
            "keyframes": list(stream.header.keyframes),
            "bits": bits.as_dict(),
            "bpp": bits.bpp(stream.header),
            "psnr": float(np.mean(metrics.psnr(o, decoded))),
            "ms_ssim": float(np.mean(metrics.ms_ssim(o, decoded, weights=tuple(w3 / w3.sum())))),
            "vmaf": float(np.mean(vmaf.vmaf(o, decoded))) if vmaf.available() else float("nan"),
            "seconds": seconds,
        }
        rows[mode] = (row, decoded, o)
        print(f"{mode:14s} keyframes {row['keyframes']} bits {row['bits']} bpp {row['bpp']:.4f} "
              f"PSNR {row['psnr']:.2f} dB MS-SSIM(3) {row['ms_ssim']:.4f} VMAF {row['vmaf']:.2f} "
              f"time {seconds:.0f}s", flush=True)
    original = rows["it2v"][2]
    picks = np.round(np.linspace(0, original.shape[0] - 1, args.columns)).astype(int)
    strips = [original] + [rows[m][1] for m in ("interpolation", "it2v")]
    grid = np.concatenate([np.concatenate([s[i] for i in picks], axis=1) for s in strips], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(args.grid)
    print(f"grid {args.grid}: rows original / interpolation / it2v; frames {list(picks)}")


if __name__ == "__main__":
    main()
