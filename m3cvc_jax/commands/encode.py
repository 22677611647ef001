"""`m3cvc encode INPUT -o OUT [--preset NAME] [--weights DIR] [--set KEY=VALUE]...`"""

from __future__ import annotations

import os
import sys

from m3cvc_jax.commands import runtime, stand_ins
from m3cvc_jax.errors import VideoError
from m3cvc_jax.pipelines.modes import MODES
from m3cvc_jax.pipelines.presets import DEFAULT_PRESET, PRESETS

DESCRIPTION = (
    "Compress a video into an m3cvc bitstream: keyframes chosen by CLIP + optical flow, described by a "
    "multimodal LLM (texts), coded as VQ indices; clips between keyframes are left to the decoder's video "
    "model. --mode tt2v (CMVC) sends the texts only. Every setting of m3cvc_jax/pipelines/presets.py can be "
    "changed with --set KEY=VALUE."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("encode", help="compress a video into a bitstream", description=DESCRIPTION)
    p.add_argument("input", metavar="INPUT", help="a video file ffmpeg reads, or a PNG folder written by decode")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="bitstream to write (atomically)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"{' | '.join(PRESETS)} (default {DEFAULT_PRESET})")
    p.add_argument("--weights", metavar="DIR", help="folder of converted checkpoints (paper)")
    p.add_argument("--mode", choices=tuple(MODES),
                   help="how the decoder rebuilds clips, recorded in the stream: interpolation | prediction (SEINE "
                        "from coded keyframes) | tt2v (CMVC: texts only, AnimateDiff; CMVC keyframes unless "
                        "keyframes.method is set). Default: the preset's decode.mode")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. keyframes.threshold=0.3 (repeatable)")
    p.set_defaults(func=run)


def format_seconds(timings) -> str:
    parts = [f"{name} {sec:.2f}s" for name, sec in timings.items()]
    return ", ".join(parts) + f"; total {sum(timings.values()):.2f}s"


def run(args) -> int:
    if not os.path.exists(args.input):
        raise VideoError(f"{args.input}: no such file")
    runtime.setup()
    from m3cvc_jax.pipelines.codec import Codec  # JAX: loaded by the commands that compute only

    overrides = list(args.set) + ([f"decode.mode={args.mode}"] if args.mode else [])
    codec = Codec.load(args.preset, weights=args.weights, overrides=overrides)
    config = codec.config
    result = codec.encode_file(args.input, args.output)
    h, b = result.stream.header, result.bits
    print(f"{args.input} -> {args.output}: {h.width}x{h.height}, {h.num_frames} frames at {float(h.fps):g} fps, "
          f"preset {h.preset}, weights {h.weights_fingerprint}")
    print(f"keyframes  {list(h.keyframes)} ({len(h.keyframes)}, {h.keyframe_method}); mode {h.mode}")
    print(f"bits       header {b.header}, text {b.text}, indices {b.indices}, extra {b.extra}, total {b.total} "
          f"({b.total // 8} bytes)")
    print(f"bpp        {b.bpp(h):.6g}")
    for line in stand_ins.from_config(config):
        print(f"stand-in   {line}")
    print(f"time       {format_seconds(result.timings)}")
    sys.stdout.flush()
    return 0
