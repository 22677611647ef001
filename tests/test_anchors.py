"""Every classical anchor writes a real, decodable elementary stream whose size falls with the QP."""

import os
import stat
import sys

import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError, M3CVCError
from m3cvc_jax.eval import anchors
from m3cvc_jax.eval.codecs import available_codecs, make_codec


def _clip(t=3, h=64, w=64):
    """A textured pattern drifting right: content an encoder must spend bits on."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        img = np.stack([
            128 + 100 * np.sin((xx + 3 * i) / 5.0) * np.cos(yy / 7.0),
            128 + 90 * np.cos((xx - yy + 2 * i) / 9.0),
            (xx * 3 + yy * 2 + 8 * i) % 256,
        ], axis=-1)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return 10 * np.log10(255**2 / mse)


ENCODERS = anchors.ffmpeg_encoders()


@pytest.mark.parametrize("name", ["x264", "x265", "svtav1", "vvenc"])
def test_anchor_writes_decodable_stream_with_real_size(name, tmp_path):
    if anchors.ANCHORS[name] not in ENCODERS:
        pytest.skip(f"this ffmpeg has no {anchors.ANCHORS[name]}")
    # vvenc's default preset takes ~10 s even here; the test checks plumbing, not the preset.
    codec = anchors.VVenC(preset="faster") if name == "vvenc" else make_codec(name)
    frames = _clip()
    hi_q, lo_q = 30, max(codec.rate_points)
    sizes, quality = {}, {}
    for qp in (hi_q, lo_q):
        path = codec.encode(frames, 8, qp, str(tmp_path / name))
        assert os.path.isfile(path) and not path.endswith(".size")
        sizes[qp] = os.path.getsize(path)
        decoded = codec.decode(path)
        assert decoded.shape == frames.shape and decoded.dtype == np.uint8
        quality[qp] = _psnr(frames, decoded)
    assert 0 < sizes[lo_q] < sizes[hi_q], sizes
    assert quality[hi_q] > quality[lo_q] and quality[hi_q] > 25, quality


def test_odd_frame_sizes_are_padded_and_cropped_back(tmp_path):
    codec = make_codec("x264")
    frames = _clip(t=2, h=35, w=33)
    decoded = codec.decode(codec.encode(frames, 8, 20, str(tmp_path)))
    assert decoded.shape == frames.shape
    assert _psnr(frames, decoded) > 30


def test_x264_stream_is_low_delay(tmp_path):
    """No B-frames: an intra picture, then P pictures only."""
    import av
    from av.video.frame import PictureType

    path = make_codec("x264").encode(_clip(t=6), 8, 30, str(tmp_path))
    with av.open(path, format="h264") as c:
        kinds = [PictureType(f.pict_type).name for f in c.decode(video=0)]
    assert kinds[0] == "I" and "P" in kinds and "B" not in kinds, kinds


def test_registry_and_errors(tmp_path):
    assert {"x264", "x265", "svtav1", "vvenc", "vtm"} <= set(available_codecs())
    with pytest.raises(ConfigError, match="unknown codec"):
        make_codec("h263")
    with pytest.raises(ConfigError, match="--vtm"):
        make_codec("vtm")
    with pytest.raises(M3CVCError, match="no such file"):
        make_codec("x264").decode(str(tmp_path / "missing.264"))
    assert make_codec("x264", rate_points=[40, 30]).rate_points == (40, 30)


STAND_IN = """#!{python}
# Stands in for VTM's EncoderApp: parses its command line and encodes the YUV with libvvenc.
import subprocess, sys
a = sys.argv[1:]
opt = {{a[i]: a[i + 1] for i in range(len(a) - 1) if a[i].startswith("-") and not a[i].startswith("--")}}
assert "--InputBitDepth=8" in a and open(opt["-c"]).read().startswith("#LDP")
subprocess.run(["{ffmpeg}", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p",
                "-s", opt["-wdt"] + "x" + opt["-hgt"], "-i", opt["-i"], "-frames:v", opt["-f"],
                "-pix_fmt", "yuv420p10le", "-c:v", "libvvenc", "-qp", opt["-q"], "-f", "vvc", opt["-b"]], check=True)
"""


def test_vtm_wrapper_with_a_stand_in_encoder(tmp_path):
    if "libvvenc" not in ENCODERS:
        pytest.skip("this ffmpeg has no libvvenc for the stand-in")
    exe = tmp_path / "EncoderApp"
    exe.write_text(STAND_IN.format(python=sys.executable, ffmpeg=anchors.ffmpeg_exe()))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    cfg = tmp_path / "encoder_lowdelay_P_vtm.cfg"
    cfg.write_text("#LDP\n")
    codec = make_codec("vtm", vtm=str(exe), vtm_cfg=str(cfg))
    frames = _clip(t=2)
    path = codec.encode(frames, 8, 43, str(tmp_path / "out"))
    assert os.path.getsize(path) > 0
    assert codec.decode(path).shape == frames.shape


def test_vtm_real_binary(tmp_path):
    exe, cfg = os.environ.get("M3CVC_VTM_ENCODER"), os.environ.get("M3CVC_VTM_CFG")
    if not exe or not cfg:
        pytest.skip("set M3CVC_VTM_ENCODER and M3CVC_VTM_CFG to test a real VTM build")
    codec = make_codec("vtm", vtm=exe, vtm_cfg=cfg)
    frames = _clip(t=2)
    path = codec.encode(frames, 8, 43, str(tmp_path))
    assert os.path.getsize(path) > 0 and codec.decode(path).shape == frames.shape


@pytest.mark.parametrize("name", ["x264", "x265"])
def test_encoder_option_strings_are_not_in_the_stream(name, tmp_path):
    path = make_codec(name).encode(_clip(t=2), 8, 51, str(tmp_path))
    data = open(path, "rb").read()
    assert b"options:" not in data and b"x265 (build" not in data and b"x264 - core" not in data
