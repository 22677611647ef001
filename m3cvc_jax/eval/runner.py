"""The evaluation loop: every sequence x codec x rate point -> real file -> decoded frames -> metrics.

Results go to `OUT/results.csv` (one row per sequence, codec and rate point; rewritten atomically after each
row, so an interrupted run resumes where it stopped), the bitstreams to `OUT/streams/<sequence>/<codec>/`,
and a few frames and a playable copy of every decode to `OUT/frames/<sequence>/` and `OUT/clips/<sequence>/`
for the visual grids and the HTML report. bpp is always the bitstream file's size: bytes · 8 / (W · H · frames).

Progress: the bar counts points; inside a point its label follows the stage (encode, decode, metrics) and,
for a codec whose `encode`/`decode` take a `progress` keyword (codec `ours`), that codec's own stages as
`progress(stage, done, total)` reports them.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import os
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from m3cvc_jax.errors import ConfigError, M3CVCError
from m3cvc_jax.eval import previews
from m3cvc_jax.eval.codecs import Codec
from m3cvc_jax.eval.datasets import Sequence as Seq, load_sequence
from m3cvc_jax.io.video import PreprocessConfig, Video

BASE_FIELDS = ("dataset", "sequence", "codec", "rate_point", "width", "height", "frames", "fps", "bytes", "bpp",
               "encode_s", "decode_s")
MS_SSIM_MIN_SIDE = 161
LONG_SEQUENCE = 100  # frames from which the run says how many it evaluates (and how to cut them)


@dataclasses.dataclass
class EvalSettings:
    out: str
    metrics: Sequence[str] = ("psnr", "ms_ssim")
    preprocess: PreprocessConfig = PreprocessConfig()
    rate_points: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)  # codec -> override
    progress: bool = True


def results_path(out: str) -> str:
    return os.path.join(out, "results.csv")


def read_results(path: str) -> list[dict]:
    """Rows of a results CSV with numbers parsed back."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k in ("dataset", "sequence", "codec", "rate_point"):
                continue
            try:
                r[k] = float(v) if v not in ("", None) else float("nan")
            except ValueError:
                pass
    return rows


def write_results(path: str, rows: list[dict], metric_names: Sequence[str]) -> None:
    fields = list(BASE_FIELDS) + [m for m in metric_names if m not in BASE_FIELDS]
    extra = sorted({k for r in rows for k in r} - set(fields))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".csv", dir=directory)
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields + extra)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    os.replace(tmp, path)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.6e}"
    return v


def _key(dataset, sequence, codec, rate_point) -> tuple:
    return (str(dataset), str(sequence), str(codec), str(rate_point))


def evaluate(
    dataset: str,
    sequences: Sequence[Seq],
    codecs: Mapping[str, Codec],
    batch_metrics,
    settings: EvalSettings,
) -> list[dict]:
    """Run the loop; `batch_metrics(a, b) -> {name: per-frame values}` (e.g. `sharding.BatchMetrics`)."""
    os.makedirs(settings.out, exist_ok=True)
    csv_path = results_path(settings.out)
    rows = read_results(csv_path)
    done = {_key(r["dataset"], r["sequence"], r["codec"], r["rate_point"]) for r in rows}
    points = {name: list(settings.rate_points.get(name) or codec.rate_points) for name, codec in codecs.items()}
    total = len(sequences) * sum(len(p) for p in points.values())
    metric_names = [m for m in settings.metrics]
    bar = tqdm(total=total, desc=f"eval {dataset}", unit="point", disable=not settings.progress)
    try:
        for seq in sequences:
            todo = [(c, rp) for c in codecs for rp in points[c] if _key(dataset, seq.name, c, rp) not in done]
            bar.update(sum(len(p) for p in points.values()) - len(todo))
            if not todo:
                continue
            bar.set_postfix_str(f"{seq.name}: reading")
            video = load_sequence(seq, settings.preprocess)
            frames = video.frames
            t, h, w, _ = frames.shape
            if t >= LONG_SEQUENCE:
                bar.write(f"{seq.name}: evaluating {t} frames at {w}x{h}, {float(video.fps):g} fps "
                          f"({t / float(video.fps):.1f} s; --max-frames N evaluates fewer)", file=sys.stderr)
            frame_dir = os.path.join(settings.out, "frames", seq.name)
            os.makedirs(frame_dir, exist_ok=True)
            _save_png(os.path.join(frame_dir, "gt.png"), frames[t // 2])
            previews.save(settings.out, seq.name, previews.ORIGINAL, video)
            for codec_name, rp in todo:
                label = f"{seq.name} {codec_name}@{rp}"

                def status(stage, done=None, total=None, _label=label):
                    count = f" {done}/{total}" if total else ""
                    bar.set_postfix_str(f"{_label}: {stage}{count}", refresh=True)

                row = _one_point(dataset, seq.name, codec_name, codecs[codec_name], rp, video, batch_metrics, settings,
                                 status)
                decoded = row.pop("_decoded")
                _save_png(os.path.join(frame_dir, f"{codec_name}_{rp}.png"), decoded[t // 2])
                previews.save(settings.out, seq.name, previews.point_name(codec_name, rp), Video(decoded, video.fps))
                rows.append(row)
                write_results(csv_path, rows, metric_names)
                bar.update(1)
    finally:
        bar.close()
    return rows


def _one_point(dataset, seq_name, codec_name, codec, rp, video, batch_metrics, settings, status=None) -> dict:
    frames = video.frames
    t, h, w, _ = frames.shape
    workdir = os.path.join(settings.out, "streams", seq_name, codec_name)
    status = status or (lambda stage, done=None, total=None: None)
    t0 = time.perf_counter()
    status("encode")
    path = codec.encode(frames, video.fps, rp, workdir, **_progress_kw(codec.encode, "encode", status))
    t1 = time.perf_counter()
    status("decode")
    decoded = np.asarray(codec.decode(path, **_progress_kw(codec.decode, "decode", status)))
    t2 = time.perf_counter()
    if not os.path.isfile(path):
        raise M3CVCError(f"codec {codec_name} reported {path}, which does not exist")
    if decoded.shape != frames.shape or decoded.dtype != np.uint8:
        raise M3CVCError(
            f"codec {codec_name} at {rp} decoded {decoded.dtype} {decoded.shape}, expected uint8 {frames.shape}"
        )
    nbytes = os.path.getsize(path)
    status(f"metrics on {t} frames")
    values = batch_metrics(frames, decoded)
    row = {
        "dataset": dataset, "sequence": seq_name, "codec": codec_name, "rate_point": str(rp),
        "width": w, "height": h, "frames": t, "fps": float(video.fps), "bytes": nbytes,
        "bpp": nbytes * 8.0 / (w * h * t), "encode_s": t1 - t0, "decode_s": t2 - t1,
    }
    for name, v in values.items():
        row[name] = float(np.mean(v))
    row["_decoded"] = decoded
    return row


def _progress_kw(method, phase: str, status) -> dict:
    """`{"progress": fn}` for codec methods that take it (stages reported as `phase: stage`), else {}."""
    try:
        takes = "progress" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        takes = False
    return {"progress": lambda stage, done, total: status(f"{phase}: {stage}", done, total)} if takes else {}


def _save_png(path: str, frame: np.ndarray) -> None:
    Image.fromarray(np.asarray(frame, np.uint8)).save(path)


def usable_metrics(names: Sequence[str], height: int, width: int) -> tuple[list[str], list[str]]:
    """(metrics computable at this frame size, dropped ones with the reason)."""
    keep, dropped = [], []
    for n in names:
        if n == "ms_ssim" and min(height, width) < MS_SSIM_MIN_SIDE:
            dropped.append(f"ms_ssim needs frames of at least {MS_SSIM_MIN_SIDE} px, these are {width}x{height}")
        else:
            keep.append(n)
    return keep, dropped


def parse_rate_points(specs: Sequence[str]) -> dict[str, list[Any]]:
    """["x264=51,45,39", "ours=0,1"] -> {"x264": [51, 45, 39], "ours": [0, 1]} (numbers where they parse)."""
    out: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name or not values:
            raise ConfigError(f"--rate-points {spec!r}: expected CODEC=V1,V2,...")
        out[name] = [_num(v) for v in values.split(",") if v]
    return out


def _num(v: str):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v
