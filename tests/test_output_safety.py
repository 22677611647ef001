"""Outputs never destroy what the command did not create: a non-empty folder needs --force (and then only
our frame files and video.json change), an output that is the input is refused, modes follow the umask,
and an unwritable destination fails before the long part, naming the user's path."""

from __future__ import annotations

import json
import os
import shutil
import stat
from fractions import Fraction

import numpy as np
import pytest

from m3cvc_jax.errors import OutputError
from m3cvc_jax.io import atomic
from m3cvc_jax.io import video as vio
from tests.pipeline_fixtures import CLIP, run_console


def _video(n: int, value: int = 0) -> vio.Video:
    return vio.Video(np.full((n, 6, 8, 3), value, np.uint8), Fraction(8))


def console(argv, cwd=None):
    code, _, err = run_console(argv, cwd=cwd)
    return code, err.splitlines()


def _user_files(tmp_path):
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "keep.txt").write_text("x")
    (d / "sub" / "inner.txt").write_text("y")
    return d


def test_non_empty_folder_is_refused_without_force(tmp_path):
    d = _user_files(tmp_path)
    with pytest.raises(OutputError, match="not empty.*--force"):
        vio.write_png_folder(d, _video(2))
    assert sorted(os.listdir(d)) == ["keep.txt", "sub"]


def test_force_replaces_only_our_files(tmp_path):
    d = _user_files(tmp_path)
    vio.write_png_folder(d, _video(4, 10), force=True)
    (d / "frame_00009.png").write_bytes(b"the user's, never listed in video.json")
    vio.write_png_folder(d, _video(2, 200), force=True)  # frames 2, 3 were ours (listed): removed
    assert sorted(os.listdir(d)) == ["frame_00000.png", "frame_00001.png", "frame_00009.png", "keep.txt", "sub",
                                     "video.json"]
    assert (d / "keep.txt").read_text() == "x" and (d / "sub" / "inner.txt").read_text() == "y"
    back = vio.read_video(d)
    assert back.num_frames == 2 and (back.frames == 200).all()


def test_empty_existing_folder_and_new_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    vio.write_png_folder(tmp_path / "empty", _video(3))
    vio.write_png_folder(tmp_path / "new" / "deeper", _video(3))
    assert vio.read_video(tmp_path / "empty").num_frames == 3
    assert vio.read_video(tmp_path / "new" / "deeper").num_frames == 3
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporaries left


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    d = _user_files(tmp_path)
    vio.write_png_folder(d, _video(2, 10), force=True)
    before = {p: (d / p).read_bytes() for p in os.listdir(d) if (d / p).is_file()}

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(json, "dump", broken)
    with pytest.raises(RuntimeError):
        vio.write_png_folder(d, _video(5, 99), force=True)
    assert {p: (d / p).read_bytes() for p in os.listdir(d) if (d / p).is_file()} == before


def test_a_frame_name_that_is_a_folder_fails_before_anything_changes(tmp_path):
    """rename(2) cannot replace a folder: found before the first frame is replaced, not half-way through."""
    d = _user_files(tmp_path)
    vio.write_png_folder(d, _video(2, 10), force=True)
    (d / "frame_00002.png").mkdir()
    before = {p: (d / p).read_bytes() for p in os.listdir(d) if (d / p).is_file()}
    with pytest.raises(IsADirectoryError) as e:
        vio.write_png_folder(d, _video(3, 99), force=True)
    assert {p: (d / p).read_bytes() for p in os.listdir(d) if (d / p).is_file()} == before
    assert e.value.filename == str(d / "frame_00002.png") and "is a folder" in str(e.value)
    assert not [p for p in os.listdir(d) if p.startswith(".")]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_modes_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic.atomic_write_bytes(tmp_path / "f.bin", b"x")
        vio.write_png_folder(tmp_path / "frames", _video(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "f.bin").st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "frames").st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(os.stat(tmp_path / "frames" / "frame_00000.png").st_mode) == 0o666 & ~mask


def test_errors_name_the_users_path_not_a_temporary(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(OSError) as e:
        atomic.atomic_write_bytes(tmp_path / "file" / "out.m3cvc", b"x")
    assert e.value.filename == str(tmp_path / "file" / "out.m3cvc")


def test_pipeline_checks_the_output_before_encoding(tmp_path, monkeypatch):
    from m3cvc_jax.pipelines import codec as m3cvc

    def never(*a, **k):
        raise AssertionError("the input was read before the output was checked")

    monkeypatch.setattr(m3cvc, "read_input", never)
    monkeypatch.setattr(m3cvc.bsf, "read_bitstream", never)
    (tmp_path / "file").write_text("")
    codec = m3cvc.Codec.load("tiny")  # builds no model until one is used
    with pytest.raises(OutputError, match=f"{tmp_path / 'file' / 'o.m3cvc'}: cannot write there"):
        codec.encode_file(CLIP, str(tmp_path / "file" / "o.m3cvc"))
    with pytest.raises(OutputError, match="is a folder"):
        codec.encode_file(CLIP, str(tmp_path))
    d = _user_files(tmp_path)
    with pytest.raises(OutputError, match="not empty"):
        m3cvc.decode_file(CLIP, str(d))
    with pytest.raises(OutputError, match="cannot write there"):
        m3cvc.decode_file(CLIP, str(tmp_path / "file" / "o.mp4"))


def test_console_decode_into_a_non_empty_folder_keeps_the_files(tmp_path):
    stream = tmp_path / "s.m3cvc"
    stream.write_bytes(b"checked after the output")
    d = _user_files(tmp_path)
    code, err = console(["decode", str(stream), "-o", str(d)])
    assert code == 2 and len(err) == 1 and err[0].startswith("m3cvc: error: ") and "not empty" in err[0], err
    assert (d / "keep.txt").read_text() == "x" and (d / "sub" / "inner.txt").read_text() == "y"
    # The working folder holding the stream is refused even with --force.
    code, err = console(["decode", "s.m3cvc", "-o", ".", "--force"], cwd=tmp_path)
    assert code == 2 and len(err) == 1 and "holds the input" in err[0], err
    assert stream.read_bytes() == b"checked after the output"


def test_console_encode_onto_its_input_is_refused(tmp_path):
    src = tmp_path / "x.mp4"
    shutil.copy(CLIP, src)
    os.link(src, tmp_path / "hardlink.mp4")
    for out in (str(src), str(tmp_path / "hardlink.mp4"), "./x.mp4"):
        code, err = console(["encode", str(src), "-o", out, "--preset", "tiny"], cwd=tmp_path)
        assert code == 2 and len(err) == 1 and "is the input" in err[0], err
    assert src.read_bytes() == open(CLIP, "rb").read()
