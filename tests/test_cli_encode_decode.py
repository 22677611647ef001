"""Every user error of `m3cvc encode` / `m3cvc decode` exits 2 with one line `m3cvc: error: ...`."""

from __future__ import annotations

import dataclasses
import os

import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.io import bitstream_file as bsf
from tests.pipeline_fixtures import CLIP, encoded, run_cli, workdir  # noqa: F401


def assert_user_error(argv, *needles):
    code, out, err = run_cli(argv)
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("m3cvc: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def out(tmp_path):
    return str(tmp_path / "out.m3cvc")


def test_encode_missing_input(out, tmp_path):
    assert_user_error(["encode", str(tmp_path / "nope.mp4"), "-o", out], "nope.mp4", "no such file")
    assert not os.path.exists(out)


def test_encode_not_a_video(out, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    assert_user_error(["encode", str(text), "-o", out], "notes.mp4")
    assert not os.path.exists(out)  # nothing half-written


@pytest.mark.parametrize("setting, needle", [
    ("keyframes.treshold=0.3", "unknown setting 'keyframes.treshold'; did you mean keyframes.threshold"),
    ("keyframes.threshold=abc", "expected a float"),
    ("video.width=12.5", "expected a int"),
    ("decode.mode=sideways", "decode.mode='sideways'"),
    ("coding.text_codec=gzip", "coding.text_codec"),
    ("video_model.steps=0", "must be in [1, 1000]"),
    ("video.fps=inf", "video.fps=inf: must be a finite number"),
    ("video_model.strength=2", "must be in (0, 1]"),
    ("novalue", "KEY=VALUE"),
])
def test_encode_bad_setting(out, setting, needle):
    assert_user_error(["encode", CLIP, "-o", out, "--preset", "tiny", "--set", setting], needle)


def test_unknown_preset(out):
    assert_user_error(["encode", CLIP, "-o", out, "--preset", "huge"], "unknown preset 'huge'")


def test_paper_needs_weights(out, tmp_path):
    assert_user_error(["encode", CLIP, "-o", out, "--preset", "paper"], "--weights DIR")
    assert_user_error(["encode", CLIP, "-o", out, "--preset", "paper", "--weights", str(tmp_path / "none")],
                      "does not exist")
    empty = tmp_path / "weights"
    empty.mkdir()
    line = assert_user_error(["encode", CLIP, "-o", out, "--preset", "paper", "--weights", str(empty)],
                             "missing", "python -m convert_weights")
    assert os.path.join(str(empty), "clip") in line  # the first component the encoder needs, by folder


def test_decode_missing_input(tmp_path):
    assert_user_error(["decode", str(tmp_path / "nope.m3cvc"), "-o", str(tmp_path / "o.mp4")], "no such file")


def test_decode_not_a_bitstream(tmp_path):
    junk = tmp_path / "junk.m3cvc"
    junk.write_bytes(b"hello, not a stream")
    assert_user_error(["decode", str(junk), "-o", str(tmp_path / "o.mp4")], "not an m3cvc bitstream")


def test_decode_corrupt_stream(encoded, tmp_path):
    data = bytearray(open(encoded[0], "rb").read())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "corrupt.m3cvc"
    bad.write_bytes(bytes(data))
    assert_user_error(["decode", str(bad), "-o", str(tmp_path / "o.mp4")], "corrupt")
    assert_user_error(["decode", str(bad), "-o", str(tmp_path / "o.mp4")], "CRC32")


def test_decode_fingerprint_mismatch(encoded, tmp_path):
    stream = bsf.read_bitstream(encoded[0])
    foreign = dataclasses.replace(stream, header=dataclasses.replace(stream.header,
                                                                      weights_fingerprint="0123456789abcdef"))
    path = tmp_path / "foreign.m3cvc"
    path.write_bytes(bs.pack(foreign, bs.WRITE_VERSION))  # v2 keeps the first 2 bytes of the fingerprint
    line = assert_user_error(["decode", str(path), "-o", str(tmp_path / "o.mp4")], "made with weights 0123 ",
                             stream.header.weights_fingerprint)
    assert not os.path.exists(tmp_path / "o.mp4")
    assert "preset 'tiny'" in line


def test_decode_stream_of_unknown_preset(encoded, tmp_path):
    stream = bsf.read_bitstream(encoded[0])
    other = dataclasses.replace(stream, header=dataclasses.replace(stream.header, preset="future"))
    path = tmp_path / "future.m3cvc"
    path.write_bytes(bs.pack(other, bs.WRITE_VERSION))
    assert_user_error(["decode", str(path), "-o", str(tmp_path / "o.mp4")], "preset 'future'")


@pytest.mark.parametrize("option", [["--fps", "0"], ["--fps", "-3"], ["--fps", "fast"], ["--mode", "sideways"],
                                    ["--seed", "-1"], ["--set", "video_model.stepz=2"]])
def test_decode_bad_option(encoded, tmp_path, option):
    assert_user_error(["decode", encoded[0], "-o", str(tmp_path / "o.mp4"), *option])


def test_missing_output_option():
    assert_user_error(["encode", CLIP], "-o/--output")
    assert_user_error(["decode", "x.m3cvc"], "-o/--output")
