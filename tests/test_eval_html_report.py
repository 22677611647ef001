"""OUT/report.html in a real headless Chromium, opened from disk: every image and clip loads, the tables
hold the CSV files' numbers, ours' bits and texts are the stream's, and the page is not blank."""

from __future__ import annotations

import csv
import io
import math
import os
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.entropy import IndexModel, encode_indices
from m3cvc_jax.eval import codecs, report
from m3cvc_jax.io import bitstream_file as bsf
from tests.chromium import Chromium, chromium_exe
from tests.pipeline_fixtures import CLIP, run_cli

CODECS = ("ours", "x264", "x265")
TEXT = "A <b>cyclist</b> & a 'van' on a road"  # markup in a text must show as text


class StreamCodec:
    """Stands in for "ours" (whose real encode and decode tests/test_eval_ours.py runs): writes a real m3cvc
    bitstream with k keyframes at rate point `k<k>` and decodes to a coarsened copy (finer with more keyframes)."""

    name = "ours"
    rate_points = ("k1", "k3")

    def encode(self, frames, fps, rate_point, workdir):
        t, h, w, _ = frames.shape
        self.frames = frames  # what decode coarsens (the runner decodes right after each encode)
        k = int(rate_point[1:])
        keyframes = tuple(int(i) for i in np.linspace(0, t - 1, k).round())
        model = IndexModel("adaptive", 16)
        rng = np.random.default_rng(k)
        header = bs.Header(width=w, height=h, fps=Fraction(fps), num_frames=t, keyframes=keyframes,
                           mode="interpolation", preset="tiny", weights_fingerprint="0123456789abcdef", seed=0,
                           keyframe_method="fixed", text_codec="lzw", index_grid=(5, 8), codebook_size=16,
                           entropy_model="adaptive")
        segments = [(a, b) for a, b in zip(keyframes, keyframes[1:] + (t - 1,)) if b > a]
        stream = bs.Bitstream(header, tuple(f"{TEXT} #{i}" for i in range(k)),
                              tuple(f"motion {i}" for i in range(len(segments))),
                              tuple(encode_indices(rng.integers(0, 16, (5, 8)), model) for _ in keyframes))
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, f"{rate_point}.m3cvc")
        bsf.write_bitstream(path, stream)
        return path

    def decode(self, path):
        stream = bsf.read_bitstream(path)
        step = 64 // len(stream.header.keyframes)
        return (self.frames // step * step + step // 2).astype(np.uint8)

# Waits for every <video> to have its first frame (or fail), then reads what the test checks.
PAGE_STATE = """(async () => {
  const videos = [...document.querySelectorAll('video')];
  const end = Date.now() + 30000;
  while (Date.now() < end && !videos.every(v => v.readyState >= 2 || v.error)) {
    await new Promise(r => setTimeout(r, 100));
  }
  const cells = sel => [...document.querySelectorAll(sel)].map(tr => ({
    data: {...tr.dataset},
    cells: [...tr.querySelectorAll('td[data-metric]')].map(td => ({metric: td.dataset.metric,
      value: td.dataset.value, n: td.dataset.n, text: td.textContent}))}));
  return {
    images: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})),
    videos: videos.map(v => ({src: v.getAttribute('src'), readyState: v.readyState, error: v.error && v.error.code,
      width: v.videoWidth})),
    rd: cells('#rd-table tr[data-codec]'), bd: cells('#bd-table tr[data-codec]'),
    results: cells('#results-table tr[data-codec]'),
    bits: [...document.querySelectorAll('table.bits tr')].slice(1).map(tr =>
      Object.fromEntries([...tr.querySelectorAll('td[data-part]')].map(td => [td.dataset.part, +td.dataset.value]))),
    texts: [...document.querySelectorAll('ul.texts li')].map(li => li.textContent),
    settings: document.querySelector('#settings') && document.querySelector('#settings').textContent,
  };
})()"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "out"
    codec = StreamCodec()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(codecs.CODECS, "ours", lambda **_: codec)
        code, stdout, err = run_cli([
            "eval", CLIP, "--codecs", ",".join(CODECS), "--out", str(out), "--max-frames", "5",
            "--rate-points", "x264=45,35", "--rate-points", "x265=45,35", "--no-progress"])
    assert code == 0, err
    return out, stdout


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_command_links_the_report(evaluated):
    out, stdout = evaluated
    last = stdout.strip().splitlines()[-1]
    assert last == f"open the report: file://{os.path.abspath(out / 'report.html')}"


def _check_cells(row_cells, want: dict, *, bd=False):
    for c in row_cells:
        csv_value = float(want[c["metric"]])
        shown = float(c["value"])
        if math.isnan(csv_value):
            assert math.isnan(shown) and c["text"].startswith("n/a")
            continue
        assert shown == pytest.approx(csv_value, rel=1e-5, abs=1e-9), c
        if bd:
            assert c["text"].startswith(f"{csv_value:+.1f}"), c
        elif c["metric"] == "bpp":
            assert c["text"] == f"{csv_value:.5f}", c
        elif c["metric"] == "bytes":
            assert c["text"] == str(int(csv_value)), c
        elif c["metric"] in ("encode_s", "decode_s"):
            assert c["text"] == f"{csv_value:.2f}", c
        else:
            assert c["text"] == report.format_metric(csv_value, c["metric"]), c


@pytest.mark.skipif(chromium_exe() is None, reason="Debian's chromium is not installed (make setup installs it "
                                                   "where apt-get is available); the HTML report is untested here")
def test_report_in_headless_chromium(evaluated):
    out, _ = evaluated
    with Chromium() as browser:
        page = browser.open((out / "report.html").as_uri())
        state = browser.evaluate(page, PAGE_STATE)
        png = browser.screenshot(page)
    (out / "report_screenshot.png").write_bytes(png)

    # Every picture and clip loaded from disk, in a format the browser plays.
    srcs = [i["src"] for i in state["images"]]
    assert {"rd_psnr.png", "rd_vmaf.png"} <= set(srcs)
    assert sum(s.startswith("frames/bikes_4s/grid/") for s in srcs) == 4 * (1 + len(CODECS))
    for img in state["images"]:
        assert img["complete"] and img["width"] > 0, img
    assert sorted(v["src"] for v in state["videos"]) == sorted(
        ["clips/bikes_4s/original.mp4", "clips/bikes_4s/ours_k1.mp4", "clips/bikes_4s/x264_45.mp4",
         "clips/bikes_4s/x265_45.mp4"])  # each codec at its lowest rate
    for v in state["videos"]:
        assert v["error"] is None and v["readyState"] >= 2 and v["width"] == 128, v

    # The tables hold the CSV files' numbers (full value in data-value, and as shown).
    curves = {(r["codec"], r["rate_point"]): r for r in _csv(out / "curves.csv")}
    assert len(state["rd"]) == len(curves) == 6
    for row in state["rd"]:
        _check_cells(row["cells"], curves[(row["data"]["codec"], row["data"]["ratePoint"])])
    assert {c["metric"] for c in state["rd"][0]["cells"]} == {"bpp", "psnr", "vmaf"}
    bd = {(r["codec"], r["metric"]): r for r in _csv(out / "bdrate.csv")}
    assert {r["data"]["codec"] for r in state["bd"]} == {"ours", "x264"}  # anchor: x265
    for row in state["bd"]:
        for c in row["cells"]:
            want = bd[(row["data"]["codec"], c["metric"])]
            assert c["n"] == want["sequences"]
            _check_cells([c], {c["metric"]: want["bd_rate_percent"]}, bd=True)
    x264 = next(row for row in state["bd"] if row["data"]["codec"] == "x264")
    assert all(math.isfinite(float(c["value"])) for c in x264["cells"])
    results = {(r["codec"], r["rate_point"]): r for r in _csv(out / "results.csv")}
    assert len(state["results"]) == len(results) == 6
    for row in state["results"]:
        _check_cells(row["cells"], results[(row["data"]["codec"], row["data"]["ratePoint"])])

    # Ours: bits per part and the texts sent, as the streams hold them (lowest rate first).
    want_bits, want_texts = [], []
    for rp in ("k1", "k3"):
        stream, bits = bsf.read_bitstream_with_bits(str(out / "streams" / "bikes_4s" / "ours" / f"{rp}.m3cvc"))
        want_bits.append(bits.as_dict())
        want_texts += [f"keyframe {i} (frame {k}): {t}" for i, (k, t) in
                       enumerate(zip(stream.header.keyframes, stream.keyframe_texts))]
        want_texts += [f"clip {i}: {t}" for i, t in enumerate(stream.clip_texts)]
    assert state["bits"] == want_bits
    assert state["texts"] == want_texts and "keyframe 2 (frame 4): " + TEXT + " #2" in want_texts
    assert "--rate-points x264=45,35" in state["settings"] and "vmaf_v0.6.1" in state["settings"]

    # The screenshot shows a page, not a blank canvas.
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
    assert shot.shape[1] >= 1000 and shot.shape[0] > 1500
    assert shot.std() > 25 and (shot < 200).mean() > 0.1


def test_compressai_result_files(evaluated):
    # CompressAI's result-file layout, so its plot tool overlays these curves on its published ones.
    import json

    out, _ = evaluated
    curves = _csv(out / "curves.csv")
    for codec in CODECS:
        doc = json.loads((out / "compressai" / f"{codec}.json").read_text())
        pts = [r for r in curves if r["codec"] == codec]
        assert doc["name"] == codec and set(doc["results"]) == {"bpp", "psnr-rgb", "vmaf"}
        assert doc["results"]["bpp"] == pytest.approx([float(r["bpp"]) for r in pts], rel=1e-5)
        assert doc["results"]["psnr-rgb"] == pytest.approx([float(r["psnr"]) for r in pts], rel=1e-5)
        assert doc["results"]["bpp"] == sorted(doc["results"]["bpp"])
