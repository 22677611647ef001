"""TFDS builders (video_folder, msrvtt) written as array_record and read back without TensorFlow."""

import json
import sys

import av
import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError
from train.data import keyframe_source, loader

W, H = 32, 16


def write_clip(path, n=24, fps=24, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (48, 64, 3)).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    write_clip(root / "a.mp4", seed=0)  # 1 s at 24 fps -> 8 frames at 8 fps
    write_clip(root / "sub" / "b.mp4", n=12, seed=1)  # 0.5 s -> 4 frames
    (root / "notes.txt").write_text("not a video")
    return root


def test_video_folder(videos, tmp_path):
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"a.mp4": {"2": "a red car", "*": "a street"}, "sub/b.mp4": "a cyclist"}))
    b = loader.prepare("video_folder", manual_dir=str(videos), data_dir=str(tmp_path / "tfds"), width=W, height=H,
                       fps=8, keyframes="interval", interval=2, captions=str(caps))
    src = b.as_data_source(split="train")
    rows = sorted((src[i]["video"], int(src[i]["frame"]), src[i]["text"]) for i in range(len(src)))
    assert rows == [(b"a.mp4", 0, b"a street"), (b"a.mp4", 2, b"a red car"), (b"a.mp4", 4, b"a street"),
                    (b"a.mp4", 6, b"a street"), (b"sub/b.mp4", 0, b"a cyclist"), (b"sub/b.mp4", 2, b"a cyclist")]
    img = src[0]["image"]
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img.std() > 10
    assert "tensorflow" not in sys.modules

    batches = loader.Batches(src, batch_size=4, seed=3, fn=loader.image_to_model)
    first = batches[0]
    assert first["image"].shape == (4, H, W, 3) and first["image"].dtype == np.float32
    assert -1.0 <= first["image"].min() and first["image"].max() <= 1.0
    np.testing.assert_array_equal(batches[0]["image"], first["image"])  # random access: resumable
    # Steps 0..2 (12 items) cover two epochs of 6: each epoch is a permutation, reshuffled.
    seen = [(v, f) for s in range(3) for v, f in zip(batches[s]["video"], batches[s]["frame"])]
    assert sorted(seen[:6]) == sorted(seen[6:]) and len(set(seen[:6])) == 6 and seen[:6] != seen[6:]
    assert len(set(loader.Batches(src, batch_size=6, seed=4)[0]["frame"].tolist())) > 1


def test_msrvtt(videos, tmp_path):
    root = tmp_path / "msrvtt"
    (root / "TrainValVideo").mkdir(parents=True)
    write_clip(root / "TrainValVideo" / "video0.mp4", seed=2)
    write_clip(root / "TrainValVideo" / "video1.mp4", n=8, seed=3)
    write_clip(root / "TrainValVideo" / "video9.mp4", n=8, seed=4)  # not annotated: ignored
    ann = {"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "validate"}],
           "sentences": [{"video_id": "video0", "caption": "a man is cooking"},
                         {"video_id": "video0", "caption": "someone cooks"},
                         {"video_id": "video1", "caption": "a dog runs"}]}
    (root / "train_val_videodatainfo.json").write_text(json.dumps(ann))
    b = loader.prepare("msrvtt", manual_dir=str(root), data_dir=str(tmp_path / "tfds"), width=W, height=H,
                       fps=8, keyframes="interval", interval=4)
    train, val = b.as_data_source(split="train"), b.as_data_source(split="validate")
    assert sorted(int(train[i]["frame"]) for i in range(len(train))) == [0, 4]
    assert {train[i]["text"] for i in range(len(train))} == {b"a man is cooking"}
    assert len(val) == 1 and val[0]["text"] == b"a dog runs" and val[0]["video"].endswith(b"video1.mp4")


def test_errors(tmp_path):
    with pytest.raises(ConfigError):
        loader.prepare("video_folder", manual_dir=str(tmp_path / "missing"), data_dir=str(tmp_path))
    with pytest.raises(ConfigError):
        loader.builder("youtube", data_dir=str(tmp_path))
    with pytest.raises(ConfigError):
        keyframe_source.select(np.zeros((3, 4, 4, 3), np.uint8), method="semantic", interval=1, threshold=0.1,
                               clip_weights="")
    with pytest.raises(ConfigError):
        keyframe_source.captions_lookup(str(tmp_path / "none.json"), str(tmp_path))


def test_semantic_selection_uses_the_keyframe_rule(monkeypatch):
    # Two scenes: frames 0-4 along one direction, 5-9 along another -> keyframes at 0 and 5.
    emb = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5, np.float32)
    monkeypatch.setattr(keyframe_source, "clip_embeddings", lambda frames, path: emb)
    frames = np.zeros((10, 4, 4, 3), np.uint8)
    got = keyframe_source.select(frames, method="semantic", interval=1, threshold=0.5, clip_weights="x")
    assert got == [0, 5]
    got = keyframe_source.select(frames, method="semantic", interval=1, threshold=0.5, clip_weights="x",
                                 max_clip_length=3)
    assert got == [0, 2, 4, 5, 7, 9]
