"""Evaluation datasets: any folder of videos, and the paper's test sets from a manual download directory.

Nothing is downloaded. Put the sequences under one root (``--data-root``, default ``$M3CVC_DATA``):

    ROOT/UVG/        Beauty_1920x1080_120fps_420_8bit_YUV.yuv, Bosphorus_..., HoneyBee_..., Jockey_...,
                     ReadySteadyGo_..., ShakeNDry_..., YachtRide_...   (the 7z files of ultravideo.fi, unpacked)
    ROOT/MCL-JCV/    videoSRC01_1920x1080_30.yuv ... videoSRC30_1920x1080_24.yuv   (as distributed)
    ROOT/HEVC_B/     BasketballDrive_1920x1080_50.yuv, BQTerrace_1920x1080_60.yuv, Cactus_1920x1080_50.yuv,
                     Kimono1_1920x1080_24.yuv, ParkScene_1920x1080_24.yuv
    ROOT/HEVC_C/     BasketballDrill_832x480_50.yuv, BQMall_832x480_60.yuv, PartyScene_832x480_50.yuv,
                     RaceHorses_832x480_30.yuv

Raw files are 4:2:0 planar; their size and frame rate come from the name (`_<W>x<H>_<fps>`, optional
`fps`), 10-bit when the name contains `10bit` (little-endian 16-bit samples). Any file ffmpeg reads
(`.mp4`, `.y4m`, `.mkv`, `.mpg`, `.avi`, ...) may stand in for a raw file. A "folder" dataset is every video
in a folder: every file PyAV opens with a video stream, whatever its extension (decided by probing the
file; still images and other files are skipped and listed), plus the raw `.yuv` files.

Preprocessing is the paper's (`io.video.PreprocessConfig`: 512x320 by centre crop + resize, 8 fps by
nearest-in-time frame selection). Raw files are read frame by frame from disk, only the selected frames.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from fractions import Fraction

import numpy as np

from m3cvc_jax.errors import ConfigError, VideoError
from m3cvc_jax.io.video import PreprocessConfig, Video, as_fraction, crop_resize, load_video

LAYOUTS = {"uvg": "UVG", "mcl-jcv": "MCL-JCV", "hevc-b": "HEVC_B", "hevc-c": "HEVC_C"}
_RAW_NAME = re.compile(r"_(\d+)x(\d+)_(\d+(?:\.\d+)?)(?:fps)?(?:_|\.|$)", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Sequence:
    name: str
    path: str
    width: int | None = None  # raw files only
    height: int | None = None
    fps: Fraction | None = None
    bit_depth: int = 8

    @property
    def is_raw(self) -> bool:
        return self.path.lower().endswith(".yuv")


def raw_format(path: str) -> tuple[int, int, Fraction, int]:
    """(width, height, fps, bit depth) from a raw file's name."""
    m = _RAW_NAME.search(os.path.basename(path))
    if not m:
        raise VideoError(f"{path}: raw YUV names must carry _<W>x<H>_<fps> (e.g. Cactus_1920x1080_50.yuv)")
    depth = 10 if "10bit" in os.path.basename(path).lower() else 8
    return int(m.group(1)), int(m.group(2)), as_fraction(m.group(3)), depth


def list_sequences(dataset: str, root: str | None = None,
                   skipped: list[str] | None = None) -> tuple[str, list[Sequence]]:
    """(dataset label, sequences) for a layout name (`uvg`, `mcl-jcv`, `hevc-b`, `hevc-c`), a folder or a file;
    files of a folder that are not videos are appended to `skipped` as `name (reason)`."""
    key = dataset.lower()
    if key in LAYOUTS:
        root = root or os.environ.get("M3CVC_DATA")
        if not root:
            raise ConfigError(f"dataset {dataset}: give --data-root DIR (or set M3CVC_DATA); see m3cvc_jax/eval/datasets.py")
        folder = os.path.join(root, LAYOUTS[key])
        if not os.path.isdir(folder):
            raise ConfigError(f"dataset {dataset}: no folder {folder} (expected layout in m3cvc_jax/eval/datasets.py)")
        return key, _scan(folder, skipped)
    if os.path.isdir(dataset):
        return os.path.basename(os.path.normpath(dataset)) or "folder", _scan(dataset, skipped)
    if os.path.isfile(dataset):
        return "file", [_sequence(dataset)]
    raise ConfigError(f"dataset {dataset!r}: not one of {', '.join(LAYOUTS)}, a folder or a video file")


def probe(path: str) -> str:
    """Why a file is not a video PyAV can decode ("" when it is one): decided by opening it, not by its name."""
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return "not a video ffmpeg can read"
    try:
        if not container.streams.video:
            return "no video stream"
        fmt = container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):
            return "a still image"
        return ""
    finally:
        container.close()


def _scan(folder: str, skipped: list[str] | None = None) -> list[Sequence]:
    seqs, notes = [], []
    for n in sorted(os.listdir(folder)):
        path = os.path.join(folder, n)
        if n.startswith(".") or not os.path.isfile(path):
            continue
        reason = "" if n.lower().endswith(".yuv") else probe(path)
        if reason:
            notes.append(f"{n} ({reason})")
        else:
            seqs.append(_sequence(path))
    if skipped is not None:
        skipped.extend(notes)
    if not seqs:
        raise ConfigError(f"{folder}: no videos ffmpeg can read" + (f"; skipped {', '.join(notes)}" if notes else ""))
    stems = [s.name for s in seqs]
    # clip.mp4 next to clip.avi: both are kept, named by their whole file names.
    return [dataclasses.replace(s, name=os.path.basename(s.path)) if stems.count(s.name) > 1 else s for s in seqs]


def _sequence(path: str) -> Sequence:
    name = os.path.splitext(os.path.basename(path))[0]
    if path.lower().endswith(".yuv"):
        w, h, fps, depth = raw_format(path)
        return Sequence(name.split("_")[0], path, w, h, fps, depth)
    return Sequence(name, path)


def load_sequence(seq: Sequence, config: PreprocessConfig = PreprocessConfig()) -> Video:
    """The sequence's frames after the paper's preprocessing."""
    if not seq.is_raw:
        return load_video(seq.path, config)
    return _load_raw(seq, config)


def select_indices(num_src: int, src_fps, config: PreprocessConfig) -> list[int]:
    """Nearest-in-time source indices for a constant-rate source, as `io.video` selects them."""
    src_fps = as_fraction(src_fps)
    if config.fps is None:
        first = math.ceil(Fraction(config.start_time) * src_fps)
        idx = list(range(first, num_src))
    else:
        fps = as_fraction(config.fps)
        start = as_fraction(config.start_time)
        end = Fraction(num_src) / src_fps
        idx = []
        k = 0
        while start + k / fps < end:
            # Nearest frame to t = i / src_fps; a tie goes to the earlier frame.
            i = math.ceil((start + k / fps) * src_fps - Fraction(1, 2))
            idx.append(min(max(i, 0), num_src - 1))
            k += 1
    if config.max_frames is not None:
        idx = idx[: config.max_frames]
    return idx


def _load_raw(seq: Sequence, config: PreprocessConfig) -> Video:
    w, h, depth = seq.width, seq.height, seq.bit_depth
    bps = 2 if depth > 8 else 1
    frame_bytes = w * h * 3 // 2 * bps
    size = os.path.getsize(seq.path)
    if size < frame_bytes:
        raise VideoError(f"{seq.path}: smaller than one {w}x{h} frame")
    idx = select_indices(size // frame_bytes, seq.fps, config)
    if len(idx) < config.min_frames:
        raise VideoError(f"{seq.path}: clip too short: {len(idx)} frames, {config.min_frames} needed")
    frames = []
    with open(seq.path, "rb") as f:
        for i in idx:
            f.seek(i * frame_bytes)
            buf = np.frombuffer(f.read(frame_bytes), np.uint16 if bps == 2 else np.uint8)
            rgb = yuv420_to_rgb(buf, w, h, depth)
            frames.append(crop_resize(rgb, config.width, config.height) if config.width is not None else rgb)
    return Video(np.stack(frames), as_fraction(config.fps) if config.fps is not None else seq.fps)


def yuv420_to_rgb(planar: np.ndarray, width: int, height: int, bit_depth: int = 8) -> np.ndarray:
    """One limited-range 4:2:0 planar frame -> uint8 RGB; BT.709 from 720 lines up, else BT.601."""
    n = width * height
    y = planar[:n].reshape(height, width).astype(np.float32)
    u = planar[n : n + n // 4].reshape(height // 2, width // 2).astype(np.float32)
    v = planar[n + n // 4 : n + n // 2].reshape(height // 2, width // 2).astype(np.float32)
    scale = float(1 << (bit_depth - 8))
    y = (y / scale - 16.0) * (255.0 / 219.0)
    u = np.repeat(np.repeat((u / scale - 128.0) * (255.0 / 224.0), 2, 0), 2, 1)
    v = np.repeat(np.repeat((v / scale - 128.0) * (255.0 / 224.0), 2, 0), 2, 1)
    kr, kb = (0.2126, 0.0722) if height >= 720 else (0.299, 0.114)
    kg = 1.0 - kr - kb
    r = y + 2 * (1 - kr) * v
    b = y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / kg
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)
