"""`python -m convert_weights FAMILY SRC DST [options]`: PyTorch checkpoints -> our orbax checkpoints.

Each family lives in its own module exposing `add_arguments(parser)` (optional) and
`convert(src, dst, overwrite=False, **options) -> fingerprint`. DST must be new or an empty folder, or
(with --force) a checkpoint this converter wrote; anything else is refused before the conversion starts.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from m3cvc_jax.errors import M3CVCError
from m3cvc_jax.weights import check_checkpoint_destination

FAMILIES = {
    "sd-vae": "convert_weights.sd_vae",
    "sd-unet": "convert_weights.sd_unet",
    "sd-lora": "convert_weights.sd_lora",
    "clip": "convert_weights.clip",
    "raft": "convert_weights.raft",
    "seine": "convert_weights.seine",
    "qwen2-vl": "convert_weights.qwen2_vl",
    "lpips": "convert_weights.lpips",
    "dists": "convert_weights.dists",
    "animatediff": "convert_weights.animatediff",
    "dino": "convert_weights.dino",
    "aesthetic": "convert_weights.aesthetic",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in FAMILIES:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"convert_weights: error: unknown family {argv[0]!r}; one of {', '.join(FAMILIES)}", file=sys.stderr)
            return 2
        print(f"usage: python -m convert_weights {{{','.join(FAMILIES)}}} SRC DST [options]")
        return 0
    family = argv[0]
    module = importlib.import_module(FAMILIES[family])
    parser = argparse.ArgumentParser(prog=f"python -m convert_weights {family}")
    parser.add_argument("src", help="reference checkpoint: folder, .safetensors, or .pt/.pth/.ckpt")
    parser.add_argument("dst", help="output directory (orbax params + config.json)")
    parser.add_argument("--force", action="store_true",
                        help="replace DST if it already holds a checkpoint written by this converter")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = vars(parser.parse_args(argv[1:]))
    debug, force, src, dst = args.pop("debug"), args.pop("force"), args.pop("src"), args.pop("dst")
    try:
        # before the conversion, which can take minutes, so a bad destination fails at once
        check_checkpoint_destination(dst, source=src, overwrite=force)
        fp = module.convert(src, dst, overwrite=force, **args)
    except M3CVCError as e:
        if debug:
            traceback.print_exc()
        print(f"convert_weights: error: {e}", file=sys.stderr)
        return 2
    print(f"converted {family} -> {argv[2]} (fingerprint {fp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
