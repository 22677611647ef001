"""End-to-end M3-CVC: wall time per stage and peak memory of encode, and of decode two ways.

    python -m benchmarks.end_to_end [--preset demo] [--runs 2] [--clip assets/clips/bikes_4s.mp4]
                                    [--after KEY=VALUE ...]

Presets: `tiny` (default; a 33-frame 512x320 clip, random weights) or `demo` (the README's main job: 32
frames at 128x80, the bundled weights). Each run encodes the clip, then decodes the stream
- before: `m3cvc.decode_stream` as the CLI runs it today (keyframes one by one, SEINE clip by clip and
  window by window, the stream's samplers);
- after: the batched pieces (`api.decode_keyframe_batch`: all keyframes in one program;
  `VideoReconstructor.clips`: window k of every clip in one program) with the `--after` decoder
  settings (default: DPM-Solver++ 2M, 15 keyframe steps, 8 SEINE steps), once with every window of a
  round in one call ("after, batched") and once one window per call ("after, 1/call": the same compiled
  program run per window, faster on a 2-core CPU where a batch of windows spills the caches).
Both print the per-stage split and the decoded PSNR against the preprocessed input. Run 1 is cold (every
program compiled; the persistent XLA cache is off unless M3CVC_JAX_CACHE is set), later runs are warm.
Memory: peak resident set size of the process (`getrusage`, includes XLA buffers) and the peak of
Python-level allocations (`tracemalloc`) per run.
Last line: ratio = after (1/call) / before decode wall time of the last (warm) run (below 1: faster).
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
AFTER = ["keyframe_codec.sampler=dpmpp2m", "keyframe_codec.steps=15", "video_model.sampler=dpmpp2m",
         "video_model.steps=8"]


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


_KEPT: dict = {}  # models and reconstructor of the batched path, kept across runs as a long-lived decoder would


def batched_decode(stream, config, windows_per_call=None):
    """`m3cvc.decode_stream` with every keyframe in one batched program and every clip's windows batched
    per round: (frames uint8 (T, H, W, 3), Timings). Same keys as `decode_stream`, so the same frames."""
    import jax
    import jax.numpy as jnp

    from m3cvc_jax.codec.entropy import IndexModel, decode_indices
    from m3cvc_jax.pipelines import api, m3cvc
    from m3cvc_jax.pipelines.models import Models

    timings = m3cvc.Timings()
    h = stream.header
    with timings.stage("models"):
        if "models" not in _KEPT:
            from m3cvc_jax.pipelines.video_reconstruction import VideoReconstructor

            models = Models(config)
            models.require(("sd-vae", "post-encoder", "keyframe-unet", "clip", "seine"))
            params, spec = api.models_params(models), api.spec_for(models)
            # Its own reconstructor: api.reconstructor keeps one, which the "before" path (other settings) uses.
            _KEPT.update(models=models, params=params, spec=spec,
                         recon=VideoReconstructor(params["seine"], params["codec"].vae, spec.clip))
        models, params, spec, recon = (_KEPT[k] for k in ("models", "params", "spec", "recon"))
        m3cvc.check_stream(stream, models)
    with timings.stage("entropy + text decoding"):
        imodel = IndexModel(h.entropy_model, h.codebook_size, m3cvc.index_model(config, models).counts)
        maps = np.stack([decode_indices(blob, tuple(h.index_grid), imodel) for blob in stream.index_data])
        segments = m3cvc.clip_segments(h.keyframes, h.num_frames)
    kf_key, clip_key = jax.random.split(jax.random.key(h.seed))
    with timings.stage("text encoding"):
        texts = [""] + list(stream.keyframe_texts) + list(stream.clip_texts)
        emb = np.concatenate([np.asarray(api.encode_text(params, api.tokenize(texts[i:i + 1])))
                              for i in range(len(texts))])
        null, kf_emb, clip_emb = emb[0], emb[1:1 + len(h.keyframes)], emb[1 + len(h.keyframes):]
    with timings.stage("keyframes (SD, one batch)"):
        keys = jnp.stack([jax.random.fold_in(kf_key, i) for i in range(len(h.keyframes))])
        decoded = jax.block_until_ready(api.decode_keyframe_batch(params, jnp.asarray(maps), jnp.asarray(kf_emb),
                                                                  keys, spec.keyframe, jnp.asarray(null)))
    with timings.stage("clips (SEINE, windows batched)"):
        index_of = {k: i for i, k in enumerate(h.keyframes)}
        both = [config.decode.mode == "interpolation" and e in index_of for _, e in segments]
        videos = recon.clips(decoded[np.array([index_of[s] for s, _ in segments])],
                             [decoded[index_of[e]] if b else None for (_, e), b in zip(segments, both)],
                             [e - s + 1 for s, e in segments],
                             ["interpolation" if b else "prediction" for b in both], jnp.asarray(clip_emb),
                             jnp.asarray(null)[None],
                             jnp.stack([jax.random.fold_in(clip_key, j) for j in range(len(segments))]),
                             windows_per_call)
        out = np.zeros((h.num_frames, h.height, h.width, 3), np.uint8)
        for (s, e), video in zip(segments, videos):
            out[s:e + 1] = m3cvc.to_uint8(video)
        keyframes = m3cvc.to_uint8(decoded)
        out[: h.keyframes[0]] = keyframes[0]
        out[list(h.keyframes)] = keyframes
    return out, timings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end")
    parser.add_argument("--preset", choices=sorted(SETTINGS), default="tiny")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clip", default=CLIP)
    parser.add_argument("--after", nargs="*", default=AFTER, help="decoder settings of the batched path")
    args = parser.parse_args(argv)
    os.environ.setdefault("M3CVC_JAX_CACHE", "off")
    from m3cvc_jax.eval.metrics import psnr
    from m3cvc_jax.pipelines import m3cvc, runtime
    from m3cvc_jax.pipelines.settings import load_config

    runtime.setup()
    config = load_config(args.preset, SETTINGS[args.preset])
    original = m3cvc.read_input(args.clip, config).frames
    tmp = tempfile.mkdtemp(prefix="m3cvc-bench-")
    stream_path = os.path.join(tmp, "clip.m3cvc")

    def show(name, total, timings, frames):
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
        quality = float(np.mean(np.asarray(psnr(frames, original))))
        print(f"  {name} {total:7.2f}s  PSNR {quality:.2f} dB  [{stages}]")

    for run in range(1, args.runs + 1):
        label = "cold" if run == 1 else "warm"
        tracemalloc.start()
        start = time.perf_counter()
        enc = m3cvc.encode_file(args.clip, stream_path, config)
        enc_total = time.perf_counter() - start
        enc_rss = peak_rss_mb()
        tracemalloc.reset_peak()
        stream = enc.stream
        start = time.perf_counter()
        dec = m3cvc.decode_stream(stream, m3cvc.decoder_config(stream))
        before = time.perf_counter() - start
        dec_py = tracemalloc.get_traced_memory()[1] / 2**20
        before_rss = peak_rss_mb()
        tracemalloc.reset_peak()
        start = time.perf_counter()
        fast, fast_timings = batched_decode(stream, m3cvc.decoder_config(stream, overrides=args.after))
        batched = time.perf_counter() - start
        start = time.perf_counter()
        one, one_timings = batched_decode(stream, m3cvc.decoder_config(stream, overrides=args.after), 1)
        after = time.perf_counter() - start
        fast_py = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        h = stream.header
        print(f"run {run} ({label}): {h.num_frames} frames {h.width}x{h.height} at {float(h.fps):g} fps, "
              f"keyframes {list(h.keyframes)}, {enc.bits.total} bits, bpp {enc.bits.bpp(h):.5f}")
        print(f"  encode {enc_total:7.2f}s  [{', '.join(f'{k} {v:.2f}s' for k, v in enc.timings.items())}]")
        show("decode before", before, dec.timings, dec.video.frames)
        show("decode after, batched", batched, fast_timings, fast)
        show("decode after, 1/call ", after, one_timings, one)
        print(f"  peak RSS after encode {enc_rss:.0f} MB, after decode before {before_rss:.0f} MB, after decode "
              f"after {peak_rss_mb():.0f} MB; peak Python allocations decode {dec_py:.1f} / {fast_py:.1f} MB")
    print(f"after settings: {' '.join(args.after) or '(the stream`s)'}")
    print(f"decode wall time, warm: after {after:.2f}s / before {before:.2f}s")
    print(f"ratio={after / before:.3f}")


if __name__ == "__main__":
    main()
