import json
import subprocess
import sys

import pytest

from m3cvc_jax import __version__, cli
from m3cvc_jax.io.bitstream_file import write_bitstream
from tests.bitstream_sample import sample_stream


@pytest.fixture
def stream_file(tmp_path):
    path = tmp_path / "clip.m3cvc"
    write_bitstream(path, sample_stream("zstd-dict"))
    return path


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err):
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("m3cvc: error: "), err
    return lines[0]


def test_inspect_json(capsys, stream_file):
    rc, out, err = _run(capsys, "inspect", str(stream_file), "--json")
    assert rc == 0 and err == ""
    info = json.loads(out)
    s = sample_stream()
    for key in ("version", "width", "height", "fps", "num_frames", "keyframes", "texts", "bits", "bpp"):
        assert key in info
    # write_bitstream writes container v2
    assert (info["version"], info["width"], info["height"], info["fps"], info["num_frames"]) == (2, 512, 320, 8.0, 40)
    assert info["keyframes"] == [0, 13, 39]
    assert info["texts"] == {"keyframe": list(s.keyframe_texts), "clip": list(s.clip_texts)}
    total = 8 * stream_file.stat().st_size
    b = info["bits"]
    assert b["total"] == total and b["header"] + b["text"] + b["indices"] + b["extra"] == total
    assert min(b["header"], b["text"], b["indices"]) > 0
    assert info["bpp"] == pytest.approx(total / (512 * 320 * 40))
    assert info["text_codec"] == "zstd-dict" and info["weights_fingerprint"] == "0123"  # v2: its first 2 bytes


def test_inspect_human(capsys, stream_file):
    rc, out, _ = _run(capsys, "inspect", str(stream_file))
    assert rc == 0
    assert "512x320" in out and "[0, 13, 39]" in out and "bpp" in out and "Café" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["inspect", "/nonexistent/x.m3cvc"], "no such file"),
        (["inspect"], "required"),
        (["inspect", "FILE", "--bogus"], "unrecognized arguments"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv, needle):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert needle in _one_error_line(err)


def test_corrupt_and_foreign_files(capsys, tmp_path, stream_file):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello\nworld\n")
    corrupt = tmp_path / "corrupt.m3cvc"
    data = bytearray(stream_file.read_bytes())
    data[-3] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    for path, needle in ((foreign, "bad magic"), (corrupt, "CRC32"), (tmp_path, "directory")):
        rc, _, err = _run(capsys, "inspect", str(path))
        assert rc == 2 and needle in _one_error_line(err)


def test_debug_prints_the_traceback(capsys):
    rc, _, err = _run(capsys, "inspect", "/nonexistent/x.m3cvc", "--debug")
    assert rc == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("m3cvc: error:")


def test_every_command_is_listed():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert tuple(sub.choices) == tuple(cli.COMMANDS) == ("encode", "decode", "inspect", "eval")


def test_python_dash_m_and_version(stream_file):
    r = subprocess.run([sys.executable, "-m", "m3cvc_jax", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"m3cvc {__version__}"
    r = subprocess.run([sys.executable, "-m", "m3cvc_jax", "inspect", str(stream_file), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["num_frames"] == 40
    r = subprocess.run([sys.executable, "-m", "m3cvc_jax", "inspect", "--nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("m3cvc: error:")


def test_texts_with_lone_surrogates_do_not_crash(tmp_path):
    import dataclasses

    s = sample_stream()
    s = dataclasses.replace(s, clip_texts=("bad \ud800 text",))
    path = tmp_path / "s.m3cvc"
    write_bitstream(path, s)
    env = {"PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"}
    for extra in ([], ["--json"]):
        r = subprocess.run([sys.executable, "-m", "m3cvc_jax", "inspect", str(path), *extra],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
