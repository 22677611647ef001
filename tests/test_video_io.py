import json
import os
from fractions import Fraction

import numpy as np
import pytest

from m3cvc_jax.errors import VideoError
from m3cvc_jax.io import video as vio

CLIPS = os.path.join(os.path.dirname(__file__), "..", "assets", "clips")
BIKES = os.path.join(CLIPS, "bikes_4s.mp4")
CARPHONE = os.path.join(CLIPS, "carphone.mp4")


@pytest.fixture(scope="module")
def carphone():
    return vio.read_video(CARPHONE)


def _counter_video(n, fps, h=8, w=12):
    """Frame i is filled with the value i, so the selection can be read back from the pixels."""
    frames = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, h, w, 3)).copy()
    return vio.Video(frames, Fraction(fps))


def test_read_bundled_clips(carphone):
    assert carphone.frames.shape == (120, 144, 176, 3) and carphone.frames.dtype == np.uint8
    assert carphone.fps == Fraction(30000, 1001)
    bikes = vio.read_video(BIKES)
    assert bikes.frames.shape == (100, 272, 640, 3) and bikes.fps == 25
    assert 40 < bikes.frames.mean() < 220  # real picture content, not a blank decode


def test_paper_preprocessing_defaults():
    v = vio.load_video(BIKES)
    # 4 s at 25 fps -> 8 fps: t_k = k/8 < 4 s -> 32 frames of 512x320.
    assert v.frames.shape == (32, 320, 512, 3) and v.fps == 8


def test_streaming_load_matches_in_memory_preprocessing(carphone):
    cfg = vio.PreprocessConfig(width=64, height=40, fps=8, start_time=0.5, max_frames=20)
    streamed = vio.load_video(CARPHONE, cfg)
    in_memory = vio.preprocess(carphone, cfg)
    assert streamed.frames.shape == (20, 40, 64, 3)
    np.testing.assert_array_equal(streamed.frames, in_memory.frames)


def test_nearest_in_time_selection():
    v = _counter_video(250, 25)  # 10 s
    out = vio.preprocess(v, vio.PreprocessConfig(width=None, height=None, fps=8))
    picked = out.frames[:, 0, 0, 0].tolist()
    assert len(picked) == 80
    # t_k = k/8 s; source frame i at i/25 s; nearest: round(25k/8) with ties (k=4j+2: x.5) to the earlier.
    expected = [int(np.floor(25 * k / 8 + 0.5 - 1e-9)) for k in range(80)]
    assert picked == expected
    up = vio.preprocess(_counter_video(4, 2), vio.PreprocessConfig(width=None, height=None, fps=4))
    assert up.frames[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_start_time_and_max_frames():
    v = _counter_video(100, 10)
    out = vio.preprocess(v, vio.PreprocessConfig(width=None, height=None, fps=5, start_time=2.0, max_frames=3))
    assert out.frames[:, 0, 0, 0].tolist() == [20, 22, 24]


def test_centre_crop_to_target_aspect():
    assert vio.crop_box(640, 272, 512, 320) == (102, 0, 435, 272)
    assert vio.crop_box(176, 144, 512, 320) == (0, 17, 176, 110)
    assert vio.crop_box(512, 320, 512, 320) == (0, 0, 512, 320)
    frame = np.zeros((100, 300, 3), np.uint8)
    frame[:, 100:200] = 255  # the centre third is white, the sides black
    out = vio.crop_resize(frame, 10, 10)
    assert out.shape == (10, 10, 3) and out.min() == 255


def test_mp4_round_trip_keeps_fps_and_quality(tmp_path, carphone):
    v = vio.Video(carphone.frames[:12], carphone.fps)
    path = tmp_path / "out.mp4"
    vio.write_mp4(path, v)
    back = vio.read_video(path)
    assert back.frames.shape == v.frames.shape and back.fps == v.fps
    mse = np.mean((back.frames.astype(float) - v.frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 38  # high quality (PSNR dB)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_y4m_round_trip_is_uncompressed_yuv420(tmp_path, carphone):
    v = vio.Video(carphone.frames[:6], carphone.fps)
    path = tmp_path / "out.y4m"
    vio.write_video(path, v)
    with open(path, "rb") as f:
        assert f.read(10) == b"YUV4MPEG2 "
    t, h, w, _ = v.frames.shape
    assert os.path.getsize(path) > t * h * w * 3 // 2  # raw 4:2:0 planes, nothing compressed
    back = vio.read_video(path)
    assert back.frames.shape == v.frames.shape and back.fps == v.fps
    mse = np.mean((back.frames.astype(float) - v.frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 38  # only colour conversion and chroma subsampling lose anything


def test_odd_sizes_are_padded_for_yuv420(tmp_path, carphone):
    v = vio.Video(np.ascontiguousarray(carphone.frames[:3, :143, :175]), Fraction(8))
    vio.write_mp4(tmp_path / "odd.mp4", v)
    back = vio.read_video(tmp_path / "odd.mp4")
    assert back.frames.shape == (3, 144, 176, 3) and back.fps == 8


def test_png_folder_is_lossless_and_atomic(tmp_path, carphone):
    v = vio.Video(carphone.frames[:5], carphone.fps)
    out = tmp_path / "frames"
    vio.write_video(out, v)
    back = vio.read_video(out)
    np.testing.assert_array_equal(back.frames, v.frames)
    assert back.fps == v.fps
    vio.write_png_folder(out, vio.Video(v.frames[:2], Fraction(8)), force=True)  # replacing our frames
    assert len(vio.read_video(out).frames) == 2 and len(os.listdir(out)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    nometa = tmp_path / "folder"
    nometa.mkdir()
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / vio.PNG_META).write_text(json.dumps({"fps": "8/1", "frames": []}))
    data = open(CARPHONE, "rb").read()
    no_frames = tmp_path / "no_frames.mp4"  # header and index intact, media data cut off
    no_frames.write_bytes(data[: data.find(b"mdat") + 4])
    cases = [
        (tmp_path / "missing.mp4", vio.PreprocessConfig(), "no such file"),
        (no_frames, vio.PreprocessConfig(), "contains no frames"),
        (text, vio.PreprocessConfig(), "not a video"),
        (empty, vio.PreprocessConfig(), "not a video"),
        (nometa, vio.PreprocessConfig(), "is a directory"),
        (zero, vio.PreprocessConfig(), "no frames"),
        (CARPHONE, vio.PreprocessConfig(start_time=10), "clip too short"),
        (CARPHONE, vio.PreprocessConfig(min_frames=34), "clip too short: 33 frames"),
    ]
    for path, cfg, msg in cases:
        with pytest.raises(VideoError, match=msg) as e:
            vio.load_video(path, cfg)
        assert "\n" not in str(e.value)


def test_config_validation():
    with pytest.raises(VideoError):
        vio.PreprocessConfig(width=512, height=None)
    with pytest.raises(VideoError):
        vio.PreprocessConfig(fps=0)
    with pytest.raises(VideoError):
        vio.PreprocessConfig(max_frames=2, min_frames=3)
    assert vio.as_fraction(29.97) == Fraction(2997, 100)
    assert vio.as_fraction("30000/1001") == Fraction(30000, 1001)
