"""End-to-end M3-CVC with the tiny preset on a 33-frame 512x320 clip: wall time per stage and peak memory.

    python -m benchmarks.end_to_end [--runs 2] [--clip assets/clips/bikes_4s.mp4]

Run 1 is cold (every program compiled; the persistent XLA cache is off unless M3CVC_JAX_CACHE is set),
later runs reuse the compiled programs, as every stream after the first in one process does. Memory:
peak resident set size of the process (`getrusage`, includes XLA buffers) and the peak of Python-level
allocations (`tracemalloc`, numpy frames and bytes) during each run. Last line: ratio = decode / encode
wall time of the last (warm) run.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import tracemalloc

CLIP = os.path.join(os.path.dirname(__file__), "..", "assets", "clips", "bikes_4s.mp4")
SETTINGS = ["video.width=512", "video.height=320", "video.fps=9.0", "video.max_frames=33"]


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clip", default=CLIP)
    args = parser.parse_args(argv)
    os.environ.setdefault("M3CVC_JAX_CACHE", "off")
    from m3cvc_jax.commands import runtime
    from m3cvc_jax.pipelines.codec import Codec, decode_file

    runtime.setup()
    codec = Codec.load("tiny", overrides=SETTINGS)  # built once: warm runs reuse its models
    tmp = tempfile.mkdtemp(prefix="m3cvc-bench-")
    stream_path, video_path = os.path.join(tmp, "clip.m3cvc"), os.path.join(tmp, "clip.mp4")
    enc_total = dec_total = 0.0
    for run in range(1, args.runs + 1):
        label = "cold" if run == 1 else "warm"
        tracemalloc.start()
        start = time.perf_counter()
        enc = codec.encode_file(args.clip, stream_path)
        enc_total = time.perf_counter() - start
        enc_py = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.reset_peak()
        enc_rss = peak_rss_mb()
        start = time.perf_counter()
        dec = decode_file(stream_path, video_path, store=codec.store)
        dec_total = time.perf_counter() - start
        dec_py = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        h = enc.stream.header
        print(f"run {run} ({label}): {h.num_frames} frames {h.width}x{h.height} at {float(h.fps):g} fps, "
              f"keyframes {list(h.keyframes)}, {enc.bits.total} bits, bpp {enc.bits.bpp(h):.5f}")
        for name, result, total in (("encode", enc, enc_total), ("decode", dec, dec_total)):
            stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
            print(f"  {name} {total:7.2f}s  [{stages}]")
        print(f"  peak RSS after encode {enc_rss:.0f} MB, after decode {peak_rss_mb():.0f} MB; "
              f"peak Python allocations encode {enc_py:.1f} MB, decode {dec_py:.1f} MB")
    print(f"decode/encode wall time, warm: {dec_total:.2f}s / {enc_total:.2f}s")
    print(f"ratio={dec_total / enc_total:.3f}")


if __name__ == "__main__":
    main()
