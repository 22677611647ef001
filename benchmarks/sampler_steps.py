"""Steps against quality: decode the demo preset's stream of the bundled clip with each sampler and step
count, and report decoded PSNR (keyframes, and the whole clip) and decode time per stage.

    python -m benchmarks.sampler_steps [--frames 16] [--settings "dpmpp2m:8,dpmpp2m:10" ...]

The stream is encoded once (demo preset, `--frames` frames: keyframes 0 and 15 for 16, one interpolated
clip). Each setting `KF_SAMPLER:KF_STEPS/VM_SAMPLER:VM_STEPS` is decoded twice with the same seed (the
first run compiles; the times printed are of the second, warm run); the decoded video is compared with the
preprocessed input. The first setting is the baseline (the demo before issue 21: DDIM 20 for keyframes,
DDIM 25 for SEINE, which at the demo's strength 0.5 runs 13 of them; the demo now runs DDIM 20 / DDIM 8). Last line: ratio = warm decode time of the last
setting / the baseline's (below 1: faster), with both PSNRs printed beside it to judge "same quality".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

CLIP = os.path.join(os.path.dirname(__file__), "..", "assets", "clips", "bikes_4s.mp4")
DEFAULT_SETTINGS = ("ddim:20/ddim:25", "ddim:20/ddim:8", "dpmpp2m:10/ddim:25", "dpmpp2m:8/ddim:25", "dpmpp2m:6/ddim:25",
                    "dpmpp2m:8/dpmpp2m:12", "dpmpp2m:8/dpmpp2m:8", "dpmpp2m:8/dpmpp2m:6")


def parse_setting(text: str) -> list[str]:
    kf, vm = text.split("/")
    kf_sampler, kf_steps = kf.split(":")
    vm_sampler, vm_steps = vm.split(":")
    return [f"keyframe_codec.sampler={kf_sampler}", f"keyframe_codec.steps={int(kf_steps)}",
            f"video_model.sampler={vm_sampler}", f"video_model.steps={int(vm_steps)}"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sampler_steps")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--clip", default=CLIP)
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    args = parser.parse_args(argv)
    os.environ.setdefault("M3CVC_JAX_CACHE", "off")
    from m3cvc_jax.commands import runtime
    from m3cvc_jax.eval.metrics import psnr
    from m3cvc_jax.pipelines.codec import Codec, read_input

    runtime.setup()
    codec = Codec.load("demo", overrides=[f"video.max_frames={args.frames}"])
    tmp = tempfile.mkdtemp(prefix="m3cvc-steps-")
    path = os.path.join(tmp, "clip.m3cvc")
    enc = codec.encode_file(args.clip, path)
    original = read_input(args.clip, codec.config).frames
    stream = enc.stream
    kf = list(stream.header.keyframes)
    print(f"{len(original)} frames {stream.header.width}x{stream.header.height}, keyframes {kf}, "
          f"{enc.bits.total} bits")
    print(f"{'keyframes':>14} {'SEINE':>14}  {'PSNR kf':>8} {'PSNR all':>8}  {'decode s':>8}  stages (warm)")
    results = []
    for setting in args.settings:
        decoder = Codec.for_stream(stream, overrides=parse_setting(setting), store=codec.store)
        for _ in range(2):
            start = time.perf_counter()
            result = decoder.decode(stream)
            total = time.perf_counter() - start
        frames = result.video.frames
        p_all = float(np.mean(np.asarray(psnr(frames, original))))
        p_kf = float(np.mean(np.asarray(psnr(frames[kf], original[kf]))))
        kf_s, vm_s = setting.split("/")
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        print(f"{kf_s:>14} {vm_s:>14}  {p_kf:8.2f} {p_all:8.2f}  {total:8.2f}  [{stages}]", flush=True)
        results.append((total, p_all))
    (t0, p0), (t1, p1) = results[0], results[-1]
    print(f"last setting vs baseline: {t1:.2f}s vs {t0:.2f}s, PSNR {p1:.2f} vs {p0:.2f} dB")
    print(f"ratio={t1 / t0:.3f}")


if __name__ == "__main__":
    main()
