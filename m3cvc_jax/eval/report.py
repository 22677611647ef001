"""Reports from `results.csv`: averaged RD table (markdown + CSV), BD-rates, RD plots, a visual grid.

Averaging: a codec's curve point is the mean over sequences of bpp and of each metric at one rate point
(only rate points every sequence has). BD-rate against the anchor is computed per sequence and then
averaged over the sequences where it is defined (the usual practice), with the count reported.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from typing import Sequence

import numpy as np
from PIL import Image

from m3cvc_jax.eval.bdrate import LOWER_IS_BETTER, bd_rate
from m3cvc_jax.io.atomic import atomic_path

NON_METRICS = {"dataset", "sequence", "codec", "rate_point", "width", "height", "frames", "fps", "bytes", "bpp",
               "encode_s", "decode_s"}
LABELS = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "lpips": "LPIPS", "dists": "DISTS", "clip_sim": "CLIP-sim", "vmaf": "VMAF", "bpp": "bpp"}


def metric_columns(rows: Sequence[dict]) -> list[str]:
    seen = []
    for r in rows:
        for k in r:
            if k not in NON_METRICS and k not in seen:
                seen.append(k)
    return seen


def average_curves(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """codec -> points sorted by bpp, each the mean over sequences at one rate point."""
    metrics = metric_columns(rows)
    sequences = {r["sequence"] for r in rows}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["codec"], r["rate_point"])].append(r)
    curves: dict[str, list[dict]] = defaultdict(list)
    for (codec, rp), rs in groups.items():
        if {r["sequence"] for r in rs} != sequences:
            continue
        point = {"rate_point": rp, "bpp": float(np.mean([r["bpp"] for r in rs]))}
        for m in metrics:
            point[m] = float(np.nanmean([r.get(m, math.nan) for r in rs]))
        curves[codec].append(point)
    return {c: sorted(p, key=lambda x: x["bpp"]) for c, p in curves.items()}


def bd_rates(rows: Sequence[dict], anchor: str) -> dict[str, dict[str, tuple[float, int]]]:
    """codec -> metric -> (mean per-sequence BD-rate %, number of sequences where it is defined)."""
    metrics = metric_columns(rows)
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by[(r["sequence"], r["codec"])].append(r)
    codecs = sorted({r["codec"] for r in rows} - {anchor})
    sequences = sorted({r["sequence"] for r in rows})
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for c in codecs:
        out[c] = {}
        for m in metrics:
            vals = []
            for s in sequences:
                a, t = by.get((s, anchor)), by.get((s, c))
                if not a or not t:
                    continue
                res = bd_rate([r["bpp"] for r in a], [r[m] for r in a], [r["bpp"] for r in t], [r[m] for r in t],
                              lower_is_better=m in LOWER_IS_BETTER)
                if math.isfinite(res.value):
                    vals.append(res.value)
            out[c][m] = (float(np.mean(vals)) if vals else math.nan, len(vals))
    return out


def markdown_table(curves: dict[str, list[dict]], metrics: Sequence[str]) -> str:
    head = "| codec | rate point | bpp | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |"
    sep = "|" + "---|" * (3 + len(metrics))
    lines = [head, sep]
    for codec in sorted(curves):
        for p in curves[codec]:
            vals = " | ".join(format_metric(p[m], m) for m in metrics)
            lines.append(f"| {codec} | {p['rate_point']} | {p['bpp']:.5f} | {vals} |")
    return "\n".join(lines)


def format_metric(v, metric):
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.2f}" if metric in ("psnr", "vmaf") else f"{v:.4f}"


def bd_markdown(bd: dict, anchor: str, metrics: Sequence[str], total: int) -> str:
    lines = [f"BD-rate (%) against **{anchor}** (negative = fewer bits at equal quality; pchip; "
             f"mean over sequences, n = sequences where defined, of {total}):", "",
             "| codec | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    for c in sorted(bd):
        cells = []
        for m in metrics:
            v, n = bd[c][m]
            cells.append(f"{v:+.1f} (n={n})" if math.isfinite(v) else f"n/a (n={n})")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_rd(curves: dict[str, list[dict]], metric: str, path: str, title: str = "") -> None:
    import matplotlib  # slow; only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow; only the plots need it

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for codec in sorted(curves):
        pts = [p for p in curves[codec] if math.isfinite(p.get(metric, math.nan))]
        if pts:
            ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], marker="o", ms=3, label=codec,
                    lw=2.0 if codec == "ours" else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel("bpp")
    ax.set_ylabel(LABELS.get(metric, metric) + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def visual_grid(out: str, rows: Sequence[dict], *, sequence: str | None = None, anchor: str | None = None,
                path: str | None = None) -> str | None:
    """Ground truth next to each codec's decode at the bpp closest to ours (else the lowest common bpp)."""
    import matplotlib  # slow; only the plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow; only the plots need it

    if not rows:
        return None
    sequence = sequence or sorted({r["sequence"] for r in rows})[0]
    rs = [r for r in rows if r["sequence"] == sequence]
    by_codec: dict[str, list[dict]] = defaultdict(list)
    for r in rs:
        by_codec[r["codec"]].append(r)
    if "ours" in by_codec:
        target = min(r["bpp"] for r in by_codec["ours"])
    else:
        target = max(min(r["bpp"] for r in v) for v in by_codec.values())
    order = [c for c in ("ours", anchor) if c and c in by_codec] + sorted(set(by_codec) - {"ours", anchor})
    frame_dir = os.path.join(out, "frames", sequence)
    panels = [("ground truth", os.path.join(frame_dir, "gt.png"))]
    for c in order:
        best = min(by_codec[c], key=lambda r: abs(math.log(max(r["bpp"], 1e-12) / target)))
        panels.append((f"{c} @ {best['bpp']:.4f} bpp", os.path.join(frame_dir, f"{c}_{best['rate_point']}.png")))
    panels = [(t, p) for t, p in panels if os.path.isfile(p)]
    if len(panels) < 2:
        return None
    n = len(panels)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    first = np.asarray(Image.open(panels[0][1]))
    aspect = first.shape[0] / first.shape[1]
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.2 * aspect * nrows + 0.4 * nrows), dpi=120, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, p) in zip(axes.flat, panels):
        ax.imshow(np.asarray(Image.open(p)))
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"{sequence} (middle frame)", fontsize=9)
    fig.tight_layout()
    path = path or os.path.join(out, f"grid_{sequence}.png")
    fig.savefig(path)
    plt.close(fig)
    return path


# CompressAI's result files name RGB metrics this way; `python -m compressai.utils.plot -f OUT/compressai/*.json`
# draws our curves next to its published ones.
COMPRESSAI_KEYS = {"psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb"}


def write_compressai_json(out: str, curves: dict[str, list[dict]], metrics: Sequence[str], dataset: str = "") -> str:
    """OUT/compressai/<codec>.json per codec: {"name", "description", "results": {"bpp": [...], metric: [...]}}
    with the points sorted by bpp (means over sequences, as curves.csv); returns the folder."""
    import json

    folder = os.path.join(out, "compressai")
    os.makedirs(folder, exist_ok=True)
    for codec, points in curves.items():
        results = {"bpp": [p["bpp"] for p in points]}
        for m in metrics:
            results[COMPRESSAI_KEYS.get(m, m)] = [p[m] if math.isfinite(p[m]) else None for p in points]
        doc = {"name": codec, "description": f"m3cvc eval on {dataset or 'a dataset'}: mean over sequences per rate "
                                              f"point ({', '.join(str(p['rate_point']) for p in points)})",
               "results": results}
        safe = "".join(ch if ch.isalnum() or ch in "-_.[]" else "_" for ch in codec)
        with atomic_path(os.path.join(folder, f"{safe}.json")) as tmp, open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
    return folder


def write_report(out: str, rows: Sequence[dict], *, anchor: str | None = None, dataset: str = "",
                 notes: Sequence[str] = ()) -> dict[str, str]:
    """summary.md, curves.csv, bdrate.csv, rd_<metric>.png and a grid; returns what was written."""
    written: dict[str, str] = {}
    if not rows:
        return written
    metrics = metric_columns(rows)
    curves = average_curves(rows)
    with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["codec", "rate_point", "bpp", *metrics])
        for c in sorted(curves):
            for p in curves[c]:
                w.writerow([c, p["rate_point"], f"{p['bpp']:.6g}", *(f"{p[m]:.6g}" for m in metrics)])
    written["curves"] = os.path.join(out, "curves.csv")
    written["compressai"] = write_compressai_json(out, curves, metrics, dataset)
    sequences = sorted({r["sequence"] for r in rows})
    parts = [f"# Evaluation{': ' + dataset if dataset else ''}", "",
             f"{len(sequences)} sequence(s): {', '.join(sequences)}. "
             f"Frames {int(rows[0]['width'])}x{int(rows[0]['height'])} at {rows[0]['fps']:g} fps. "
             "bpp from the real bitstream sizes.", ""]
    parts += [f"- {n}" for n in notes]
    parts += ["", "## Rate-distortion (mean over sequences)", "", markdown_table(curves, metrics), ""]
    if anchor and any(r["codec"] == anchor for r in rows) and len(curves) > 1:
        bd = bd_rates(rows, anchor)
        parts += ["## BD-rate", "", bd_markdown(bd, anchor, metrics, len(sequences)), ""]
        with open(os.path.join(out, "bdrate.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["codec", "anchor", "metric", "bd_rate_percent", "sequences"])
            for c in sorted(bd):
                for m in metrics:
                    w.writerow([c, anchor, m, f"{bd[c][m][0]:.4f}", bd[c][m][1]])
        written["bdrate"] = os.path.join(out, "bdrate.csv")
    parts += ["## Plots", ""]
    for m in metrics:
        p = os.path.join(out, f"rd_{m}.png")
        plot_rd(curves, m, p, title=f"{dataset} {LABELS.get(m, m)}")
        written[f"rd_{m}"] = p
        parts.append(f"![{m}](rd_{m}.png)")
    grid = visual_grid(out, rows, anchor=anchor)
    if grid:
        written["grid"] = grid
        parts += ["", f"![visual comparison]({os.path.basename(grid)})"]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(parts) + "\n")
    written["summary"] = os.path.join(out, "summary.md")
    return written
