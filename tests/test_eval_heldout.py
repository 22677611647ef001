"""scripts/eval_heldout.py: the held-out sequences of a corpus through `ours` and the anchors, with the
issue's metrics and targets. End to end on a tiny corpus with the `tiny` preset (random weights) and
x265, on two frames; the target checks on hand-made rows."""

import csv
import importlib.util
import os

import numpy as np
import pytest

from m3cvc_jax.eval import metrics

from tests.corpus_fixtures import SETTINGS, make_sources
from train.data import corpus_build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("eval_heldout", os.path.join(REPO, "scripts", "eval_heldout.py"))
eval_heldout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval_heldout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    sources = make_sources(str(tmp_path_factory.mktemp("sources")))
    # The clip is held out here, as bikes is in the real corpus.
    sources = [corpus_build.dataclasses.replace(s, split="heldout") if s.kind == "clip" else s for s in sources]
    dest = str(tmp_path_factory.mktemp("c") / "corpus")
    corpus_build.build(dest, sources, SETTINGS, log=lambda *_: None)
    return dest


def test_sequences_are_the_heldout_clips_and_first_camera_paths(corpus):
    seqs = eval_heldout.sequences(corpus, 0)
    assert [n for n, _ in seqs] == ["clip", "pic0_0"] or [n for n, _ in seqs] == ["clip", "pic1_0"]
    assert all("/heldout/" in p for _, p in seqs)


def test_end_to_end_with_the_tiny_preset(corpus, tmp_path, capsys):
    out = str(tmp_path / "eval")
    rc = eval_heldout.main([corpus, out, "--preset", "tiny", "--codecs", "ours,x265", "--rate-points", "g16-t0.1",
                            "--frames", "2", "--width", "64", "--height", "48", "--max-sequences", "1"])
    assert rc == 0
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {(r["sequence"], r["codec"], r["rate_point"]) for r in rows} == {
        (s, c, rp) for s, _ in eval_heldout.sequences(corpus, 1) for c, rp in (("ours", "g16-t0.1"), ("x265", "51"))}
    for r in rows:
        assert int(r["frames"]) == 2 and float(r["bpp"]) == pytest.approx(int(r["bytes"]) * 8 / (2 * 64 * 48))
        assert 0 < float(r["psnr_rgb"]) < 100 and 0 <= float(r["vmaf"]) <= 100 and float(r["colour_error"]) >= 0
    assert os.path.exists(os.path.join(out, "grid_clip.png"))
    summary = open(os.path.join(out, "summary.md")).read()
    assert "PSNR-RGB within 4 dB of x265's lowest point" in summary and "| ours | g16-t0.1 | 2 |" in summary


def test_refuses_weights_the_demo_preset_would_ignore(corpus, tmp_path, capsys):
    assert eval_heldout.main([corpus, str(tmp_path / "e"), "--weights", str(tmp_path)]) == 2
    assert "ignores --weights" in capsys.readouterr().err


def test_colour_error_is_the_worst_channel_of_the_mean_colour():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[..., 2] = 6  # blue off by 6 levels everywhere
    b[0, :2, :, 0] = 10  # red off by 5 on average in frame 0, 0 in frame 1 -> 2.5
    assert metrics.mean_colour_error(a, b) == pytest.approx(6.0)


def _row(codec, rp, bpp, psnr, colour=1.0):
    return dict(sequence="s", codec=codec, rate_point=rp, frames=2, bytes=1, bpp=bpp, psnr_rgb=psnr, ms_ssim3=0.5,
                vmaf=10.0, colour_error=colour)


def test_summary_checks_the_issue_targets():
    good = eval_heldout.summarise([_row("x265", "51", 0.02, 20.0), _row("ours", "g8-i15", 0.008, 16.5),
                                   _row("ours", "g8-i4", 0.014, 17.6)])
    assert "| PSNR-RGB within 4 dB of x265's lowest point | ours g8-i4: 17.60 dB vs x265 20.00 dB | yes |" in good
    assert "g8-i15 -> g8-i4: +1.10 dB | yes |" in good and "NO" not in good
    bad = eval_heldout.summarise([_row("x265", "51", 0.02, 20.0), _row("ours", "g8-i15", 0.008, 15.5, 6.0),
                                  _row("ours", "g8-i4", 0.02, 15.9, 6.0)])
    # The densest point is over the budget: the check uses the best point within it.
    assert "ours g8-i15: 15.50 dB vs x265 20.00 dB | NO |" in bad and "| mean colour within 5/255 | ours g8-i15: 6.00 | NO |" in bad
    assert "+0.40 dB | NO |" in bad
