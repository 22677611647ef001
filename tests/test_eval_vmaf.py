"""VMAF (`eval/vmaf.py`) against a direct `ffmpeg -lavfi libvmaf` run on the same clip pair."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from m3cvc_jax.eval import vmaf
from m3cvc_jax.eval.anchors import ffmpeg_exe
from m3cvc_jax.io.video import read_video
from tests.pipeline_fixtures import CARPHONE, run_ffmpeg



@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A lossless 4:2:0 reference (12 frames of carphone, 176x144) and two H.264 encodes of it."""
    tmp = tmp_path_factory.mktemp("vmaf")
    ref = str(tmp / "ref.y4m")
    run_ffmpeg("-i", CARPHONE, "-frames:v", "12", "-pix_fmt", "yuv420p", ref)
    dists = {}
    for crf in (30, 42):
        dists[crf] = str(tmp / f"crf{crf}.mp4")
        run_ffmpeg("-i", ref, "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p", dists[crf])
    return ref, dists


def _direct_vmaf(distorted: str, reference: str) -> float:
    """What a user would type: distorted first, reference second; ffmpeg prints the pooled mean."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", distorted, "-i", reference,
                           "-lavfi", "[0:v][1:v]libvmaf", "-f", "null", "-"], capture_output=True, check=True)
    m = re.search(r"VMAF score: ([0-9.]+)", proc.stderr.decode(errors="replace"))
    assert m, proc.stderr.decode(errors="replace")[-500:]
    return float(m.group(1))


def test_vmaf_matches_direct_ffmpeg_libvmaf(pair):
    assert vmaf.available()
    ref, dists = pair
    ref_frames = read_video(ref).frames
    ours = {}
    for crf, path in dists.items():
        dec = read_video(path).frames
        per_frame = vmaf.vmaf(ref_frames, dec)
        assert per_frame.shape == (12,)
        ours[crf] = float(per_frame.mean())
        # Our frames went YUV -> RGB (PyAV) -> YUV (libvmaf's input): only that round trip's rounding differs.
        assert ours[crf] == pytest.approx(_direct_vmaf(path, ref), abs=0.5), crf
    assert ours[30] > ours[42] + 10  # the metric separates the two rates
    same = vmaf.vmaf(ref_frames[:3], ref_frames[:3])
    assert np.all(same > 97)


def test_vmaf_odd_sizes_and_shape_errors():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 37, 45, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert vmaf.vmaf(a, b).shape == (3,)
    with pytest.raises(ValueError):
        vmaf.vmaf(a, b[:2])


def test_with_vmaf_adds_the_column():
    calls = []

    def inner(a, b):
        calls.append(a.shape)
        return {"psnr": np.zeros(len(a))}

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    out = vmaf.WithVmaf(inner)(a, a)
    assert set(out) == {"psnr", "vmaf"} and calls == [a.shape] and np.all(out["vmaf"] > 90)


def test_ffmpeg_without_libvmaf(tmp_path, monkeypatch, capsys):
    from m3cvc_jax.cli import main as cli_main

    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' T.. scale             V->V       Scale the input video size.'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("M3CVC_FFMPEG", str(fake))
    assert not vmaf.available()
    assert cli_main(["eval", CARPHONE, "--codecs", "x264", "--metrics", "psnr,vmaf", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metric vmaf needs an ffmpeg with libvmaf" in err[0]
