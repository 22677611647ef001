"""End-to-end M3-CVC: wall time per stage and peak memory of encode and decode, and decoded quality.

    python -m benchmarks.end_to_end [--preset demo] [--runs 2] [--clip assets/clips/bikes_4s.mp4]
                                    [--before KEY=VALUE ...]

Presets: `tiny` (default; a 33-frame 512x320 clip, random weights) or `demo` (the README's main job: 32
frames at 128x80, the bundled weights). Each run encodes the clip, then decodes the stream twice with one
`Codec` (as `m3cvc decode` does):
- decode: with the stream's own settings (the preset's defaults);
- before: with the `--before` decoder settings (default: the step counts the preset had before issue 21:
  25 DDIM SEINE steps for demo instead of 8), the same stream and seed.
Both print the per-stage split and the decoded PSNR against the preprocessed input, so the quality check
of a faster setting (PSNR within 0.2 dB of `before`) reruns on any weights. Run 1 is cold (every program
compiled; the persistent XLA cache is off unless M3CVC_JAX_CACHE is set), later runs are warm. Memory:
peak resident set size of the process (`getrusage`, includes XLA buffers) and the peak of Python-level
allocations (`tracemalloc`) per run. Each decode also prints the process CPU time (a loaded machine
stretches the wall time, not the CPU time).
Last line: ratio = decode / before wall time of the last (warm) run (below 1: the stream's settings are faster).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc

import numpy as np

CLIP = os.path.join(os.path.dirname(__file__), "..", "assets", "clips", "bikes_4s.mp4")
SETTINGS = {"tiny": ["video.width=512", "video.height=320", "video.fps=9.0", "video.max_frames=33"],
            "demo": ["video.max_frames=32"]}
BEFORE = {"tiny": [],
          "demo": ["video_model.steps=25"]}


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads): on a loaded machine the wall time waits for
    other processes; the CPU time / cores is what an idle machine of that many cores would approach."""
    t = os.times()
    return t.user + t.system


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end")
    parser.add_argument("--preset", choices=sorted(SETTINGS), default="tiny")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clip", default=CLIP)
    parser.add_argument("--before", nargs="*", default=None,
                        help="decoder settings compared against (default: the preset's before issue 21)")
    args = parser.parse_args(argv)
    before_settings = BEFORE[args.preset] if args.before is None else args.before
    os.environ.setdefault("M3CVC_JAX_CACHE", "off")
    from m3cvc_jax.commands import runtime
    from m3cvc_jax.eval.metrics import psnr
    from m3cvc_jax.pipelines.codec import Codec, read_input

    runtime.setup()
    codec = Codec.load(args.preset, overrides=SETTINGS[args.preset])  # built once: warm runs reuse its models
    original = read_input(args.clip, codec.config).frames
    tmp = tempfile.mkdtemp(prefix="m3cvc-bench-")
    stream_path = os.path.join(tmp, "clip.m3cvc")

    def show(name, total, cpu, result):
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        quality = float(np.mean(np.asarray(psnr(result.video.frames, original))))
        print(f"  {name} {total:7.2f}s (CPU {cpu:.2f}s)  PSNR {quality:.2f} dB  [{stages}]")
        return quality

    def timed(fn):
        cpu, start = cpu_seconds(), time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start, cpu_seconds() - cpu

    decode_total = before_total = 0.0
    for run in range(1, args.runs + 1):
        label = "cold" if run == 1 else "warm"
        tracemalloc.start()
        start = time.perf_counter()
        enc = codec.encode_file(args.clip, stream_path)
        enc_total = time.perf_counter() - start
        enc_rss = peak_rss_mb()
        tracemalloc.reset_peak()
        stream = enc.stream
        # Decoder codecs share the encoder's model store, as a long-lived process would.
        decoder = Codec.for_stream(stream, store=codec.store)
        dec, decode_total, decode_cpu = timed(lambda: decoder.decode(stream))
        dec_py = tracemalloc.get_traced_memory()[1] / 2**20
        dec_rss = peak_rss_mb()
        old = Codec.for_stream(stream, overrides=before_settings, store=codec.store)
        ref, before_total, before_cpu = timed(lambda: old.decode(stream))
        tracemalloc.stop()
        h = stream.header
        print(f"run {run} ({label}): {h.num_frames} frames {h.width}x{h.height} at {float(h.fps):g} fps, "
              f"keyframes {list(h.keyframes)}, {enc.bits.total} bits, bpp {enc.bits.bpp(h):.5f}")
        print(f"  encode {enc_total:7.2f}s  [{', '.join(f'{k} {v:.2f}s' for k, v in enc.timings.items())}]")
        now_db = show("decode", decode_total, decode_cpu, dec)
        old_db = show("before", before_total, before_cpu, ref)
        print(f"  PSNR decode - before: {now_db - old_db:+.2f} dB")
        print(f"  peak RSS after encode {enc_rss:.0f} MB, after decode {dec_rss:.0f} MB, after before "
              f"{peak_rss_mb():.0f} MB; peak Python allocations decode {dec_py:.1f} MB")
    print(f"before settings: {' '.join(before_settings) or '(the same as the stream`s)'}")
    print(f"decode wall time, warm: decode {decode_total:.2f}s / before {before_total:.2f}s")
    print(f"ratio={decode_total / before_total:.3f}")


if __name__ == "__main__":
    main()
