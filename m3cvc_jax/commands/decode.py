"""`m3cvc decode IN -o OUT(.mp4 | .y4m | folder of PNG) [--mode interpolation|prediction] [--fps N] [--seed N]`"""

from __future__ import annotations

import argparse

from m3cvc_jax.commands import runtime
from m3cvc_jax.commands.encode import format_seconds

DESCRIPTION = (
    "Rebuild a video from an m3cvc bitstream: keyframes by the diffusion decoder guided by their texts, "
    "clips between them by the video model. The preset, frame size and weights fingerprint come from the "
    "stream; a stream made with other weights is refused. OUT ending in .mp4 is an H.264 file, .y4m raw "
    "YUV 4:2:0, anything else a folder of lossless PNG frames."
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive frame rate, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64), got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("decode", help="rebuild a video from a bitstream", description=DESCRIPTION)
    p.add_argument("input", metavar="IN", help="an m3cvc bitstream")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.mp4, OUT.y4m, or a folder for PNG frames")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty output folder: replace only its frame_*.png files and video.json")
    p.add_argument("--mode", choices=("interpolation", "prediction"),
                   help="clip reconstruction (default: the mode in the stream)")
    p.add_argument("--fps", type=_positive_float, help="output frame rate (default: the stream's)")
    p.add_argument("--seed", type=_seed, help="sampling seed (default: the stream's)")
    p.add_argument("--weights", metavar="DIR", help="folder of converted checkpoints (streams made with paper)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a decoder setting, e.g. video_model.steps=50 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    runtime.setup()
    from m3cvc_jax.pipelines.codec import decode_file  # JAX: loaded by the commands that compute only

    result = decode_file(args.input, args.output, mode=args.mode, fps=args.fps, seed=args.seed,
                         weights=args.weights, overrides=args.set, force=args.force)
    v = result.video
    w, h = v.size
    print(f"{args.input} -> {args.output}: {v.num_frames} frames, {w}x{h} at {float(v.fps):g} fps")
    print(f"time       {format_seconds(result.timings)}")
    return 0
