"""`OUT/report.html`: one page a browser opens from disk (no server, no network) with the whole evaluation.

It shows the RD curves per metric (`rd_<metric>.png`, written by `report.write_report` first), the averaged
RD table, the BD-rate table, every point of `results.csv`, and per sequence a frame grid and the clips
side by side (the original and each codec at its lowest rate, from `eval/previews.py`). For codecs whose
streams are m3cvc bitstreams (`ours`, its ablation rows), it lists the bits per part and the texts sent
per keyframe and clip. The run's settings close the page (and go to `OUT/settings.json`).

Every file the page uses sits beside it under OUT and is referenced by a relative URL; numeric cells carry
their full value in `data-value`, so the tables can be checked against the CSV files.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import defaultdict
from typing import Mapping, Sequence
from urllib.parse import quote

from m3cvc_jax.eval import previews, report
from m3cvc_jax.io.atomic import atomic_path

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { width: 380px; margin: 4px; border: 1px solid #eee; }
.grid img, .clips video { image-rendering: pixelated; display: block; }
.clips { display: flex; flex-wrap: wrap; gap: 10px; } .clips figure { margin: 0; }
figcaption, .small { font-size: 12px; color: #555; } .texts li { margin-bottom: .3em; }
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _url(out: str, path: str) -> str:
    return quote(os.path.relpath(path, out).replace(os.sep, "/"))


_FORMATS = {"bpp": "{:.5f}", "bytes": "{:.0f}", "encode_s": "{:.2f}", "decode_s": "{:.2f}"}


def _cell(value, metric: str) -> str:
    v = float(value)
    if metric in _FORMATS:
        shown = _FORMATS[metric].format(v) if math.isfinite(v) else "n/a"
    else:
        shown = report.format_metric(v, metric)
    return f'<td class="num" data-metric="{_e(metric)}" data-value="{v!r}">{shown}</td>'


def _rd_table(curves: Mapping[str, list[dict]], metrics: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(report.LABELS.get(m, m))}</th>" for m in metrics)
    rows = []
    for codec in sorted(curves):
        for p in curves[codec]:
            cells = _cell(p["bpp"], "bpp") + "".join(_cell(p[m], m) for m in metrics)
            rows.append(f'<tr data-codec="{_e(codec)}" data-rate-point="{_e(p["rate_point"])}"><td>{_e(codec)}</td>'
                        f"<td>{_e(p['rate_point'])}</td>{cells}</tr>")
    return (f'<table id="rd-table"><tr><th>codec</th><th>rate point</th><th>bpp</th>{head}</tr>'
            + "".join(rows) + "</table>")


def _bd_table(bd: Mapping[str, Mapping[str, tuple[float, int]]], metrics: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(report.LABELS.get(m, m))}</th>" for m in metrics)
    rows = []
    for codec in sorted(bd):
        cells = []
        for m in metrics:
            v, n = bd[codec][m]
            shown = f"{v:+.1f}&nbsp;% (n={n})" if math.isfinite(v) else f"n/a (n={n})"
            cells.append(f'<td class="num" data-metric="{_e(m)}" data-value="{float(v)!r}" data-n="{n}">{shown}</td>')
        rows.append(f'<tr data-codec="{_e(codec)}"><td>{_e(codec)}</td>{"".join(cells)}</tr>')
    return f'<table id="bd-table"><tr><th>codec</th>{head}</tr>' + "".join(rows) + "</table>"


def _results_table(rows: Sequence[dict], metrics: Sequence[str]) -> str:
    cols = ["bpp", "bytes", "encode_s", "decode_s", *metrics]
    head = "".join(f"<th>{_e(report.LABELS.get(c, c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = "".join(_cell(r.get(c, math.nan), c) for c in cols)
        body.append(f'<tr data-sequence="{_e(r["sequence"])}" data-codec="{_e(r["codec"])}" '
                    f'data-rate-point="{_e(r["rate_point"])}"><td>{_e(r["sequence"])}</td><td>{_e(r["codec"])}</td>'
                    f"<td>{_e(r['rate_point'])}</td>{cells}</tr>")
    return (f'<table id="results-table"><tr><th>sequence</th><th>codec</th><th>rate point</th>{head}</tr>'
            + "".join(body) + "</table>")


def _lowest(rows: Sequence[dict], sequence: str) -> list[tuple[str, dict]]:
    """(codec, its lowest-bpp row) for one sequence, codecs in name order."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["sequence"] == sequence:
            by[r["codec"]].append(r)
    return [(c, min(by[c], key=lambda r: r["bpp"])) for c in sorted(by)]


def _caption(r: dict, metrics: Sequence[str]) -> str:
    vals = ", ".join(f"{report.LABELS.get(m, m)} {report.format_metric(float(r[m]), m)}" for m in metrics if m in r)
    return f"{_e(r['codec'])} @ {_e(r['rate_point'])}: {float(r['bpp']):.4f} bpp; {_e(vals)}"


def _display_width(width: int, cap: int) -> int:
    # Small frames (the demo's 128x80) are shown enlarged, pixel for pixel; large ones shrunk to fit the page.
    return min(width * max(1, 256 // max(width, 1)), cap)


def _sequence_section(out: str, sequence: str, rows: Sequence[dict], metrics: Sequence[str]) -> str:
    lowest = _lowest(rows, sequence)
    some = lowest[0][1]
    width, frames = int(some["width"]), int(some["frames"])
    shown, clip_shown = _display_width(width, 256), _display_width(width, 384)
    entries = [(previews.ORIGINAL, "original", None)] + [
        (previews.point_name(c, r["rate_point"]), _caption(r, metrics), r) for c, r in lowest]
    indices = previews.grid_indices(frames)
    parts = [f'<section class="sequence" data-sequence="{_e(sequence)}"><h3>{_e(sequence)}</h3>',
             f"<p class='small'>Frame grid: frames {', '.join(str(i) for i in indices)} of {frames}; each codec at "
             "its lowest rate.</p><table class='grid'><tr><th></th>"
             + "".join(f"<th>frame {i}</th>" for i in indices) + "</tr>"]
    missing = []
    for name, caption, _ in entries:
        cells = []
        for i in indices:
            p = previews.frame_path(out, sequence, name, i)
            if os.path.isfile(p):
                cells.append(f'<td><img src="{_url(out, p)}" width="{shown}" alt="{_e(name)} frame {i}"></td>')
            else:
                cells.append("<td>-</td>")
                missing.append(name)
        parts.append(f"<tr><th class='small'>{caption}</th>{''.join(cells)}</tr>")
    parts.append("</table><p class='small'>Clips (H.264 copies for viewing; CRF 12):</p><div class='clips'>")
    for name, caption, _ in entries:
        p = previews.clip_path(out, sequence, name)
        if os.path.isfile(p):
            parts.append(f'<figure style="width: {clip_shown}px"><video src="{_url(out, p)}" width="{clip_shown}" controls muted loop autoplay '
                         f'playsinline preload="auto"></video><figcaption>{caption}</figcaption></figure>')
        else:
            missing.append(name)
    parts.append("</div>")
    if missing:
        parts.append(f"<p class='small'>No preview for {_e(', '.join(sorted(set(missing))))} "
                     "(points computed by an earlier version; delete their rows from results.csv to redo them).</p>")
    parts.append(_streams_section(out, sequence, rows))
    parts.append("</section>")
    return "\n".join(parts)


def _streams_section(out: str, sequence: str, rows: Sequence[dict]) -> str:
    """Bits per part and transmitted texts of every m3cvc bitstream of this sequence."""
    from m3cvc_jax.io.bitstream_file import read_bitstream_with_bits
    from m3cvc_jax.errors import M3CVCError

    parts = []
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["sequence"] == sequence:
            by[r["codec"]].append(r)
    for codec in sorted(by):
        streams = []
        for r in sorted(by[codec], key=lambda r: r["bpp"]):
            path = os.path.join(out, "streams", sequence, codec, f"{r['rate_point']}.m3cvc")
            if not os.path.isfile(path):
                continue
            try:
                streams.append((r, *read_bitstream_with_bits(path)))
            except M3CVCError:
                continue
        if not streams:
            continue
        table = ["<table class='bits' data-codec='" + _e(codec) + "'><tr><th>rate point</th><th>keyframes</th>"
                 "<th>header</th><th>text</th><th>indices</th><th>extra</th><th>w (IT2V)</th><th>mean colours</th>"
                 "<th>total bits</th>"
                 "<th>bpp</th></tr>"]
        texts = []
        for k, (r, stream, bits) in enumerate(streams):
            b = bits.as_dict()
            table.append(f"<tr><td>{_e(r['rate_point'])}</td><td>{_e(list(stream.header.keyframes))}</td>"
                         + "".join(f'<td class="num" data-part="{p}" data-value="{b[p]}">{b[p]}</td>'
                                   for p in ("header", "text", "indices", "extra", "weights", "colour", "total"))
                         + f"<td class='num'>{bits.bpp(stream.header):.5f}</td></tr>")
            items = [f"<li><b>keyframe {i} (frame {f})</b>: {_text(t)}</li>"
                     for i, (f, t) in enumerate(zip(stream.header.keyframes, stream.keyframe_texts))]
            items += [f"<li><b>clip {i}</b>: {_text(t)}</li>" for i, t in enumerate(stream.clip_texts)]
            texts.append(f"<details{' open' if k == 0 else ''}><summary>texts sent at {_e(r['rate_point'])}</summary>"
                         f"<ul class='texts'>{''.join(items)}</ul></details>")
        parts.append(f"<h4>{_e(codec)}: bits per part</h4>" + "".join(table) + "</table>" + "".join(texts))
    return "\n".join(parts)


def _text(t: str) -> str:
    # The demo preset sends no texts (its describer is a stand-in): say so rather than show nothing.
    return _e(t) if t else "<i>(empty)</i>"


def _settings_table(settings: Mapping) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v if isinstance(v, str) else json.dumps(v))}</code></td></tr>"
                   for k, v in settings.items())
    return f'<table id="settings">{rows}</table>'


def write_html(out: str, rows: Sequence[dict], *, anchor: str | None = None, dataset: str = "",
               notes: Sequence[str] = (), settings: Mapping | None = None) -> dict[str, str]:
    """Write OUT/report.html (and OUT/settings.json); returns {"html": path, ...} ({} when no rows)."""
    if not rows:
        return {}
    written = {}
    metrics = report.metric_columns(rows)
    curves = report.average_curves(rows)
    sequences = sorted({r["sequence"] for r in rows})
    title = f"m3cvc eval{': ' + dataset if dataset else ''}"
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>{len(sequences)} sequence(s), {int(rows[0]['width'])}x{int(rows[0]['height'])} at "
            f"{float(rows[0]['fps']):g} fps, {int(rows[0]['frames'])} frames (first sequence). bpp = bytes of the "
            "real bitstream &middot; 8 / (W &middot; H &middot; frames).</p>"]
    if notes:
        body.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    body.append("<h2>Rate-distortion curves</h2><div class='plots'>")
    for m in metrics:
        p = os.path.join(out, f"rd_{m}.png")
        if os.path.isfile(p):
            body.append(f'<img src="{_url(out, p)}" alt="RD curve {_e(m)}">')
    body.append("</div><h2>Mean over sequences</h2>" + _rd_table(curves, metrics))
    if anchor and any(r["codec"] == anchor for r in rows) and len(curves) > 1:
        body.append(f"<h2>BD-rate against {_e(anchor)}</h2><p class='small'>Percent (negative = fewer bits at equal "
                    "quality); piecewise cubic (pchip) per sequence, then the mean over the n sequences where the "
                    "curves overlap.</p>" + _bd_table(report.bd_rates(rows, anchor), metrics))
    body.append("<h2>Sequences</h2>")
    body += [_sequence_section(out, s, rows, metrics) for s in sequences]
    body.append("<h2>Every point</h2><details><summary>results.csv</summary>" + _results_table(rows, metrics)
                + "</details>")
    if settings:
        body.append("<h2>Settings</h2>" + _settings_table(settings))
        written["settings"] = _write_atomic(os.path.join(out, "settings.json"), json.dumps(settings, indent=1) + "\n")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    written["html"] = _write_atomic(os.path.join(out, "report.html"), page)
    return written


def _write_atomic(path: str, text: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return path
