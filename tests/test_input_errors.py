"""Inputs that used to end in "internal error" (exit 1) or pass silently: each is now a one-line user
error (exit 2) or, for a truncated video, a one-line warning."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from m3cvc_jax.errors import InputWarning, VideoError, WeightsError
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io import video as vio
from m3cvc_jax.pipelines import codec as m3cvc
from tests.bitstream_sample import sample_stream
from tests.pipeline_fixtures import CLIP, run_cli, run_console

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "golden_tiny.m3cvc")


def one_error(code, err, *needles):
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("m3cvc: error: "), (code, err)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def no_models(monkeypatch):
    """Fail the test if any model is built: the error must come before the long part."""

    def never(*a, **k):
        raise AssertionError("models were built before the input was refused")

    monkeypatch.setattr(m3cvc.ModelStore, "get", never)  # every model a codec builds comes through its store


def test_console_set_fps_inf(tmp_path):
    code, _, err = run_console(["encode", CLIP, "-o", str(tmp_path / "o.m3cvc"), "--preset", "tiny",
                                "--set", "video.fps=inf"])
    one_error(code, err, "video.fps=inf", "finite")


@pytest.mark.parametrize("fps", ["1e308", "1e-300", "2000000"])
def test_decode_fps_checked_up_front(tmp_path, no_models, fps):
    code, _, err = run_cli(["decode", GOLDEN, "-o", str(tmp_path / "o.mp4"), "--fps", fps])
    one_error(code, err, "--fps")


def _png_folder(tmp_path, meta, size=(8, 6)):
    d = tmp_path / "frames"
    d.mkdir(exist_ok=True)
    Image.new("RGB", size).save(d / "a.png")
    (d / "video.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return d


@pytest.mark.parametrize("meta, needle", [
    ('{"fps": 1e999, "frames": ["a.png"]}', "not finite"),
    ('{"fps": "1e999", "frames": ["a.png"]}', "fps must be in"),
    ('{"fps": 0, "frames": ["a.png"]}', "fps must be in"),
    ('{"fps": [8], "frames": ["a.png"]}', "TypeError"),
    ('{"fps": 8, "frames": "a.png"}', "TypeError"),
    ('[8]', "TypeError"),
    ('{"fps": 8, "frames": ["../a.png"]}', "not a file inside the folder"),
    ('{"fps": 8, "frames": ["/etc/passwd"]}', "not a file inside the folder"),
    ('{"fps": 8, "frames": ["sub/../../x.png"]}', "not a file inside the folder"),
    ('{"fps": 8, "frames": [{"a": 1}]}', "not a file inside the folder"),
])
def test_png_folder_metadata(tmp_path, meta, needle):
    d = _png_folder(tmp_path, meta)
    with pytest.raises(VideoError, match=needle):
        vio.read_video(d)


def test_png_folder_fps_1e999_via_the_cli(tmp_path):
    d = _png_folder(tmp_path, '{"fps": 1e999, "frames": ["a.png"]}')
    one_error(*run_cli(["encode", str(d), "-o", str(tmp_path / "o.m3cvc"), "--preset", "tiny"])[::2], "video.json")


@pytest.mark.parametrize("size", [(12, 12), (40, 40)])  # over the limit (a warning), over twice it (an error)
def test_png_over_the_decompression_bomb_limit(tmp_path, monkeypatch, size):
    d = _png_folder(tmp_path, {"fps": 8, "frames": ["big.png"]})
    Image.new("RGB", size).save(d / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(VideoError, match="big.png is too large"):
        vio.read_video(d)
    code, _, err = run_cli(["encode", str(d), "-o", str(tmp_path / "o.m3cvc"), "--preset", "tiny"])
    one_error(code, err, "too large")


def _weights_with_clip_config(tmp_path, text):
    root = tmp_path / "weights"
    (root / "clip").mkdir(parents=True)
    (root / "clip" / "config.json").write_text(text)
    return root


@pytest.mark.parametrize("text, needle", [
    ("[1, 2]", "expected a JSON object, got a list"),
    ('{"format": 1, "family": "clip", "config": [1]}', "'config' must be a JSON object"),
    ('{"format": 1, "family": 7, "config": {}}', "'family' must be a JSON string"),
    ('{"format": 1, "family": "clip", "config": {}, "tables": {"h": [1, -2]}}', "non-negative integers"),
    ('{"format": 1, "family": "clip"}', "no 'config'"),
    ("7", "got a int"),
])
def test_weights_config_of_wrong_type(tmp_path, text, needle):
    root = _weights_with_clip_config(tmp_path, text)
    code, _, err = run_cli(["encode", CLIP, "-o", str(tmp_path / "o.m3cvc"), "--preset", "paper",
                            "--weights", str(root)])
    one_error(code, err, needle)


def test_weights_model_settings_of_wrong_fields(tmp_path):
    from m3cvc_jax.pipelines.models import Models
    from m3cvc_jax.pipelines.settings import load_config

    root = _weights_with_clip_config(tmp_path, '{"format": 1, "family": "clip", "config": {"no_such_field": 1}}')
    models = Models(load_config("paper", [f"weights={root}"]))
    with pytest.raises(WeightsError, match=r"clip/config.json: invalid model settings"):
        models.clip_config


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_weights_with_a_preset_that_has_its_own(tmp_path, preset):
    code, _, err = run_cli(["encode", CLIP, "-o", str(tmp_path / "o.m3cvc"), "--preset", preset,
                            "--weights", str(tmp_path)])
    one_error(code, err, f"preset '{preset}'", "applies to preset paper")
    code, _, err = run_cli(["decode", GOLDEN, "-o", str(tmp_path / "o.mp4"), "--weights", str(tmp_path)])
    one_error(code, err, "preset 'tiny'", "applies to preset paper")


def test_inspect_escapes_control_characters(tmp_path, capsys):
    evil = "\x1b[2J\x1b]0;pwned\x07red\nkeyframe 9 (frame 0): forged\u202eevil\x00"
    s = dataclasses.replace(sample_stream(), clip_texts=(evil, "fine"))
    path = tmp_path / "evil.m3cvc"
    bsf.write_bitstream(path, s)
    code, out, err = run_cli(["inspect", str(path)])
    assert code == 0 and err == ""
    assert not any(c in out for c in "\x1b\x07\x00\u202e")
    assert "clip 0: \\x1b[2J\\x1b]0;pwned\\x07red\\nkeyframe 9 (frame 0): forged\\u202eevil\\x00" in out
    assert "Café" in out and "🚲" in out  # printable Unicode stays as it is
    assert sum(line.startswith("clip ") for line in out.splitlines()) == 2
    assert sum(line.startswith("keyframe ") for line in out.splitlines()) == 3


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    data = open(CLIP, "rb").read()
    path = tmp_path_factory.mktemp("trunc") / "cut.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    return str(path)


def test_truncated_video_is_reported(truncated):
    with pytest.warns(InputWarning, match=r"cut.mp4: read 36 frames, the container promised 100"):
        v = vio.read_video(truncated)
    assert v.num_frames == 36
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vio.read_video(CLIP).num_frames == 100  # a whole file: no warning
        vio.load_video(truncated, vio.PreprocessConfig(max_frames=5))  # stopped early on purpose: none


def test_truncated_video_warning_through_the_cli(truncated, tmp_path, monkeypatch):
    seen = {}

    def stop(video, *a, **k):
        seen["frames"] = video.num_frames
        raise VideoError("stop here")

    monkeypatch.setattr(m3cvc.Codec, "encode", lambda self, video, *a, **k: stop(video))
    code, _, err = run_cli(["encode", truncated, "-o", str(tmp_path / "o.m3cvc"), "--preset", "tiny"])
    lines = err.splitlines()
    assert code == 2 and seen["frames"] == 12, err  # 1.44 s at 8 fps
    assert lines[0] == (f"m3cvc: warning: {truncated}: read 36 frames, the container promised 100 (truncated or "
                        f"damaged file?); continuing with 36") and lines[1] == "m3cvc: error: stop here"
