"""`m3cvc eval` as a new user meets it: the preset's frame size by default, any container PyAV opens,
progress inside a point, and the frame count of long sequences."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from m3cvc_jax.cli import main as cli_main
from m3cvc_jax.eval import codecs, datasets, runner
from tests.pipeline_fixtures import CARPHONE, run_cli, run_ffmpeg



@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """An MPEG-1 program stream, an AVI, an MP4 named like the AVI, a still image, a text file, a hidden file."""
    d = tmp_path_factory.mktemp("mixed")
    run_ffmpeg("-i", CARPHONE, "-t", "1", "-c:v", "mpeg1video", str(d / "talk.mpg"))
    run_ffmpeg("-i", CARPHONE, "-t", "1", "-c:v", "mpeg4", str(d / "phone.avi"))
    run_ffmpeg("-i", CARPHONE, "-t", "1", "-c:v", "libx264", str(d / "phone.mp4"))
    run_ffmpeg("-i", CARPHONE, "-t", "1", "-c:v", "libx264", "-f", "matroska", str(d / "noext"))
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "poster.png")
    (d / "notes.txt").write_text("not a video\n")
    (d / ".DS_Store").write_bytes(b"\0\1\2")
    return d


def test_folder_takes_every_container_pyav_opens(mixed_folder):
    skipped = []
    label, seqs = datasets.list_sequences(str(mixed_folder), skipped=skipped)
    names = {s.name: os.path.basename(s.path) for s in seqs}
    # Same stem twice: both kept under their file names; no extension at all: probed like the rest.
    assert names == {"talk": "talk.mpg", "phone.avi": "phone.avi", "phone.mp4": "phone.mp4", "noext": "noext"}
    assert sorted(skipped) == ["notes.txt (not a video ffmpeg can read)", "poster.png (a still image)"]
    assert datasets.probe(str(mixed_folder / "talk.mpg")) == ""
    for s in seqs:  # and each one really loads
        assert datasets.load_sequence(s, runner.PreprocessConfig(width=64, height=48, max_frames=2)).frames.shape == (2, 48, 64, 3)


def test_folder_without_videos_names_what_it_skipped(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert cli_main(["eval", str(tmp_path), "--codecs", "x264", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no videos ffmpeg can read; skipped notes.txt" in err[0]


def test_mpg_and_avi_are_evaluated_at_the_presets_size(mixed_folder, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["eval", str(mixed_folder), "--codecs", "x264", "--out", str(out),
                                 "--max-frames", "2", "--rate-points", "x264=40", "--metrics", "psnr", "--no-progress"])
    assert code == 0, err
    rows = runner.read_results(str(out / "results.csv"))
    assert {r["sequence"] for r in rows} == {"talk", "phone.avi", "phone.mp4", "noext"}
    # No --width/--height: the default preset's (demo) size, not the paper's 512x320.
    assert {(r["width"], r["height"]) for r in rows} == {(128.0, 80.0)}
    assert "skipped notes.txt" in err and "skipped poster.png" in err and "frames 128x80 (the preset's size)" in err
    assert "not a video, skipped: notes.txt" in (out / "summary.md").read_text()
    code, _, err = run_cli(["eval", str(mixed_folder / "talk.mpg"), "--codecs", "x264", "--out", str(tmp_path / "p"),
                            "--max-frames", "1", "--rate-points", "x264=40", "--metrics", "psnr", "--no-progress",
                            "--preset", "paper"])
    assert code == 0, err
    assert runner.read_results(str(tmp_path / "p" / "results.csv"))[0]["width"] == 512


class StageCodec:
    """A stand-in for "ours" that reports stages as the real one does, and records the frame size."""

    name = "ours"
    rate_points = ("a",)

    def __init__(self, log):
        self.log = log

    def encode(self, frames, fps, rate_point, workdir, progress=None):
        for i in range(3):
            progress("encode keyframes", i + 1, 3)
        self.log.append(frames.shape)
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "a.npy")
        np.save(path, frames)
        return path

    def decode(self, path, progress=None):
        frames = np.load(path)
        progress("SEINE frames (interpolation)", len(frames), len(frames))
        return frames


@pytest.fixture
def stage_codec(monkeypatch):
    log = []
    monkeypatch.setitem(codecs.CODECS, "ours", lambda **_: StageCodec(log))
    return log


def test_progress_inside_a_point_and_long_sequences(tmp_path, stage_codec, monkeypatch):
    monkeypatch.setattr(runner, "LONG_SEQUENCE", 3)
    out = tmp_path / "out"
    code, _, err = run_cli(["eval", CARPHONE, "--codecs", "ours", "--out", str(out), "--max-frames", "4",
                            "--metrics", "psnr", "--preset", "tiny", "--width", "64", "--height", "48"])
    assert code == 0, err
    assert stage_codec == [(4, 48, 64, 3)]
    # The bar's label follows the codec's own stages, and the runner's.
    assert "carphone ours@a: encode: encode keyframes 2/3" in err
    assert "carphone ours@a: decode: SEINE frames (interpolation) 4/4" in err
    assert "carphone ours@a: metrics on 4 frames" in err
    assert "carphone: evaluating 4 frames at 64x48, 8 fps" in err
    # A size other than the preset's is allowed, with a warning naming both.
    assert "m3cvc: warning: frames 64x48 differ from preset tiny's 128x80" in err


def test_frame_size_options_are_checked(tmp_path, capsys):
    for extra, msg in ((["--width", "64"], "give both --width and --height"),
                       (["--width", "0", "--height", "8"], "--width must be >= 1"),
                       (["--fps", "nan"], "--fps must be a positive number"),
                       (["--preset", "huge"], "--preset 'huge'")):
        assert cli_main(["eval", CARPHONE, "--codecs", "x264", "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (extra, err)
