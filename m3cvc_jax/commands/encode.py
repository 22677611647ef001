"""`m3cvc encode INPUT -o OUT [--preset NAME] [--weights DIR] [--set KEY=VALUE]...`"""

from __future__ import annotations

import os
import sys

from m3cvc_jax.codec import rate_target
from m3cvc_jax.commands import runtime, stand_ins
from m3cvc_jax.errors import VideoError
from m3cvc_jax.pipelines.modes import MODES
from m3cvc_jax.pipelines.presets import DEFAULT_PRESET, PRESETS

MODE_NAMES = tuple(MODES)

DESCRIPTION = (
    "Compress a video into an m3cvc bitstream: keyframes chosen by CLIP + optical flow, described by a "
    "multimodal LLM (texts), coded as VQ indices; clips between keyframes are left to the decoder's video "
    "model. --mode it2v (CMVC) adds per-frame LoRA interpolation weights; --mode tt2v (CMVC) sends the texts only. Every setting of m3cvc_jax/pipelines/presets.py can be "
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
                        "from coded keyframes) | it2v (CMVC: coded keyframes + motion text, LoRA morphing with "
                        "coded weights) | tt2v (CMVC: texts only, AnimateDiff); the CMVC modes use CMVC keyframes "
                        "unless keyframes.method is set. Default: the preset's decode.mode")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. keyframes.threshold=0.3 (repeatable)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-bpp", type=float, metavar="X",
                        help="choose keyframes, index grid and dialogue turns for the largest stream <= X bpp")
    target.add_argument("--target-bytes", type=int, metavar="N", help="as --target-bpp, for a file of <= N bytes")
    p.set_defaults(func=run)


def format_seconds(timings) -> str:
    parts = [f"{name} {sec:.2f}s" for name, sec in timings.items()]
    return ", ".join(parts) + f"; total {sum(timings.values()):.2f}s"


def run(args) -> int:
    if not os.path.exists(args.input):
        raise VideoError(f"{args.input}: no such file")
    target = None
    if args.target_bpp is not None:
        target = rate_target.bpp_target(args.target_bpp)
    elif args.target_bytes is not None:
        target = rate_target.bytes_target(args.target_bytes)
    runtime.setup()
    from m3cvc_jax.pipelines import rate_control  # JAX: loaded by the commands that compute only
    from m3cvc_jax.pipelines.codec import Codec

    overrides = list(args.set) + ([f"decode.mode={args.mode}"] if args.mode else [])
    codec = Codec.load(args.preset, weights=args.weights, overrides=overrides)
    config = codec.config
    if target is None:
        result = codec.encode_file(args.input, args.output)
    else:
        result, choice = rate_control.encode_file(codec, args.input, args.output, target)
        config = rate_control.derive(config, choice.overrides)
    h, b = result.stream.header, result.bits
    print(f"{args.input} -> {args.output}: {h.width}x{h.height}, {h.num_frames} frames at {float(h.fps):g} fps, "
          f"preset {h.preset}, weights {h.weights_fingerprint}")
    print(f"keyframes  {list(h.keyframes)} ({len(h.keyframes)}, {h.keyframe_method}); mode {h.mode}")
    print(f"bits       header {b.header}, text {b.text}, indices {b.indices}, extra {b.extra}, w {b.weights}, "
          f"colour {b.colour}, total {b.total} ({b.total // 8} bytes)")
    print(f"bpp        {b.bpp(h):.6g}")
    if target is not None:
        print(f"rate       target {target.label} (<= {choice.max_bytes} bytes here), achieved {b.total // 8} bytes "
              f"= {b.bpp(h):.6g} bpp; chosen of {len(choice.sizes)}: --set {' --set '.join(choice.overrides)}")
    for line in stand_ins.from_config(config):
        print(f"stand-in   {line}")
    print(f"time       {format_seconds(result.timings)}")
    sys.stdout.flush()
    return 0
