"""Video in and out: anything ffmpeg reads -> uint8 (T, H, W, 3) frames with their fps; MP4 and PNG out.

Preprocessing (the paper's: 512x320 at 8 fps) happens while decoding, so a long or large input never sits
in memory at full size:
1. frames before `start_time` are skipped;
2. temporal resampling picks, for each output time `t_k = start_time + k / fps` (k = 0, 1, ...), the source
   frame whose presentation time is nearest to `t_k` (ties go to the earlier frame). Output frames run
   while `t_k < end`, where `end` is the last frame's time plus one nominal frame duration (a 10 s clip
   at 25 fps gives exactly 80 frames at 8 fps). Nothing is blended, so every output frame is a real frame;
   with variable frame rate input the real timestamps are used, not frame counts;
3. each kept frame is centre-cropped to the target aspect ratio and resized (PIL bicubic, antialiased).
`PreprocessConfig(width=None, fps=None)` keeps the source size and frame rate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from fractions import Fraction
from typing import Iterator

import numpy as np
from PIL import Image

from m3cvc_jax.errors import InputWarning, VideoError
from m3cvc_jax.io.atomic import atomic_files, atomic_path, new_directory
from m3cvc_jax.io.destination import check_folder_output

PNG_META = "video.json"
MAX_PNG_FPS = 1 << 20  # a frame rate a bitstream header can hold


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How to turn an input video into the codec's frames. `None` keeps the source's value."""

    width: int | None = 512
    height: int | None = 320
    fps: float | Fraction | None = 8
    start_time: float = 0.0  # seconds from the first frame
    max_frames: int | None = None  # keep at most this many output frames
    min_frames: int = 1  # fewer output frames than this is an error ("clip too short")

    def __post_init__(self):
        if (self.width is None) != (self.height is None):
            raise VideoError("give both width and height, or neither")
        if self.width is not None and (self.width < 2 or self.height < 2):
            raise VideoError(f"target size {self.width}x{self.height} too small")
        if self.fps is not None and as_fraction(self.fps) <= 0:
            raise VideoError(f"fps must be positive, got {self.fps}")
        if self.start_time < 0:
            raise VideoError(f"start time must be >= 0, got {self.start_time}")
        if self.max_frames is not None and self.max_frames < 1:
            raise VideoError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.min_frames < 1 or (self.max_frames is not None and self.min_frames > self.max_frames):
            raise VideoError(f"min_frames {self.min_frames} must be in 1..max_frames")


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
    """uint8 frames (T, H, W, 3) and their frame rate."""

    frames: np.ndarray
    fps: Fraction

    def __post_init__(self):
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise VideoError(f"frames must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
        object.__setattr__(self, "fps", as_fraction(self.fps))

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.frames.shape[2], self.frames.shape[1]


def as_fraction(x) -> Fraction:
    """8 -> 8, 29.97 -> 2997/100, '30000/1001' -> 30000/1001 (floats via their decimal repr, not binary)."""
    if isinstance(x, float):
        return Fraction(repr(x))
    return Fraction(x)


# ------------------------------------------------------------------------------------------ geometry


def crop_box(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the centred crop of a src image with the aspect ratio of dst."""
    if src_w * dst_h > src_h * dst_w:  # source is wider: crop the sides
        w = max(1, min(src_w, round(src_h * dst_w / dst_h)))
        return (src_w - w) // 2, 0, w, src_h
    h = max(1, min(src_h, round(src_w * dst_h / dst_w)))
    return 0, (src_h - h) // 2, src_w, h


def crop_resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre crop to the target aspect, then resize (PIL bicubic, which antialiases when shrinking)."""
    h, w = frame.shape[:2]
    left, top, cw, ch = crop_box(w, h, width, height)
    frame = frame[top : top + ch, left : left + cw]
    if (cw, ch) == (width, height):
        return np.ascontiguousarray(frame)
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


# ------------------------------------------------------------------------------------------ resampling


class _Resampler:
    """Nearest-in-time selection over a stream of (time, payload); see the module docstring."""

    def __init__(self, fps: Fraction | None, start: Fraction, max_frames: int | None):
        self.fps, self.start, self.max_frames = fps, start, max_frames
        self.k = 0
        self.prev = None  # (time, payload)

    def full(self) -> bool:
        return self.max_frames is not None and self.k >= self.max_frames

    def target(self) -> Fraction:
        return self.start + self.k / self.fps

    def push(self, t: Fraction, payload) -> list:
        """Feed the next source frame; returns the payloads now known to be selected."""
        out = []
        if self.fps is None:
            if t >= self.start and not self.full():
                out.append(payload)
                self.k += 1
            return out
        while not self.full() and self.target() <= t:
            tk = self.target()
            if self.prev is not None and tk - self.prev[0] <= t - tk:
                out.append(self.prev[1])
            else:
                out.append(payload)
            self.k += 1
        self.prev = (t, payload)
        return out

    def finish(self, end: Fraction) -> list:
        """After the last frame: targets before `end` take the last frame."""
        out = []
        if self.fps is None or self.prev is None:
            return out
        while not self.full() and self.target() < end:
            out.append(self.prev[1])
            self.k += 1
        return out


# ------------------------------------------------------------------------------------------ reading


def _open(path: str):
    import av  # FFmpeg libraries: loaded only to read or write containers

    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"{path}: is a directory without {PNG_META} (not a PNG frame folder written here)")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: permission denied")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: not a video ffmpeg can read ({type(e).__name__})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def _decoded(path: str) -> Iterator[tuple[Fraction, object, Fraction]]:
    """(presentation time in s from the first frame, av.VideoFrame, nominal fps) in display order."""
    import av  # FFmpeg libraries: loaded only to read or write containers

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = Fraction(rate) if rate else None
        first = None
        i = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and frame.time_base is not None:
                    t = Fraction(frame.pts) * Fraction(frame.time_base)
                elif fps:
                    t = Fraction(i) / fps
                else:
                    raise VideoError(f"{path}: frames carry no timestamps and the stream no frame rate")
                if first is None:
                    first = t
                    if fps is None:
                        fps = Fraction(25)  # only used for the last frame's duration
                yield t - first, frame, fps
                i += 1
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed after {i} frames ({type(e).__name__}: {e})") from None
        promised = _promised_frames(container, stream)
        if promised and i < promised:
            # A cut-off file decodes without an error up to where its data ends: the user must hear of it.
            warnings.warn(InputWarning(f"{path}: read {i} frames, the container promised {promised} "
                                       f"(truncated or damaged file?); continuing with {i}"), stacklevel=2)
    finally:
        container.close()


def _promised_frames(container, stream) -> int | None:
    """The frame count the container announces (its index, else duration x rate), None if it does not."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        seconds = Fraction(stream.duration) * Fraction(stream.time_base)
    elif container.duration and rate:
        seconds = Fraction(container.duration, 1_000_000)  # AV_TIME_BASE
    else:
        return None
    # Durations are rounded to the time base: a frame short of the estimate is not a missing frame.
    return max(0, int(seconds * Fraction(rate)) - 1)


def _png_meta(path: str) -> tuple[Fraction, list[str]]:
    """(fps, frame names) of a PNG folder's video.json; names must stay inside the folder."""
    meta_path = os.path.join(path, PNG_META)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        fps, names = meta["fps"], meta["frames"]
        if isinstance(fps, bool) or not isinstance(fps, (int, float, str)) or not isinstance(names, list):
            raise TypeError("fps must be a number or 'num/den', frames a list")
        if isinstance(fps, float) and not math.isfinite(fps):
            raise ValueError(f"fps {fps} is not finite")
        fps = as_fraction(fps)
        if not Fraction(1, MAX_PNG_FPS) <= fps <= MAX_PNG_FPS:
            raise ValueError(f"fps must be in [1/{MAX_PNG_FPS}, {MAX_PNG_FPS}]")
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, OverflowError) as e:
        raise VideoError(f"{path}: invalid {PNG_META} ({type(e).__name__}: {e})") from None
    for name in names:
        escapes = not isinstance(name, str) or not name or os.path.isabs(name)
        if escapes or ".." in name.replace("\\", "/").split("/"):
            raise VideoError(f"{path}: invalid {PNG_META}: frame name {name!r} is not a file inside the folder")
    return fps, names


def _read_png(path: str, name: str) -> np.ndarray:
    """One frame as uint8 RGB; Pillow's decompression-bomb guard (a warning up to twice its pixel limit,
    an error above) is a user error here, not a traceback or a silent giant allocation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(os.path.join(path, name)) as im:
                return np.asarray(im.convert("RGB"))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise VideoError(f"{path}: frame {name} is too large to read safely ({e})") from None
    except (OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot read frame {name} ({type(e).__name__})") from None


def _png_folder(path: str) -> Iterator[tuple[Fraction, np.ndarray, Fraction]]:
    fps, names = _png_meta(path)
    for i, name in enumerate(names):
        yield Fraction(i) / fps, _read_png(path, name), fps


def load_video(path: str | os.PathLike, config: PreprocessConfig = PreprocessConfig()) -> Video:
    """Read `path` (any ffmpeg input, or a PNG folder written by `write_png_folder`) and preprocess it."""
    path = os.fspath(path)
    is_png = os.path.isfile(os.path.join(path, PNG_META))
    source = _png_folder(path) if is_png else _decoded(path)
    start = as_fraction(config.start_time)
    target_fps = as_fraction(config.fps) if config.fps is not None else None
    sampler = _Resampler(target_fps, start, config.max_frames)
    frames: list[np.ndarray] = []
    shapes: set[tuple[int, int]] = set()
    src_fps = None
    last_t = None
    n_src = 0

    def convert(item) -> np.ndarray:
        arr = item if isinstance(item, np.ndarray) else item.to_ndarray(format="rgb24")
        shapes.add(arr.shape[:2])
        if config.width is not None:
            arr = crop_resize(arr, config.width, config.height)
        return arr

    for t, item, fps in source:
        n_src += 1
        src_fps, last_t = fps, t
        frames.extend(convert(x) for x in sampler.push(t, item))
        if sampler.full():
            break
    if n_src == 0:
        raise VideoError(f"{path}: contains no frames")
    if not sampler.full():
        frames.extend(convert(x) for x in sampler.finish(last_t + 1 / src_fps))
    if not frames:
        raise VideoError(f"{path}: clip too short: it ends at {float(last_t + 1 / src_fps):.3f} s, "
                         f"before the requested start {float(start):.3f} s")
    if len(shapes) > 1:
        raise VideoError(f"{path}: frame size changes within the video ({sorted(shapes)})")
    if len(frames) < config.min_frames:
        fps_txt = f"{float(target_fps):g} fps" if target_fps else "the source rate"
        raise VideoError(f"{path}: clip too short: {len(frames)} frames at {fps_txt} from "
                         f"{float(start):g} s, {config.min_frames} needed")
    out_fps = target_fps if target_fps is not None else src_fps
    return Video(np.stack(frames), out_fps)


def read_video(path: str | os.PathLike) -> Video:
    """All frames at the source size and rate."""
    return load_video(path, PreprocessConfig(width=None, height=None, fps=None))


def preprocess(video: Video, config: PreprocessConfig) -> Video:
    """The same preprocessing on frames already in memory (frame i is at time i / fps)."""
    start = as_fraction(config.start_time)
    target_fps = as_fraction(config.fps) if config.fps is not None else None
    sampler = _Resampler(target_fps, start, config.max_frames)
    picked: list[int] = []
    for i in range(video.num_frames):
        picked += sampler.push(Fraction(i) / video.fps, i)
        if sampler.full():
            break
    if not sampler.full():
        picked += sampler.finish(Fraction(video.num_frames) / video.fps)
    if len(picked) < config.min_frames:
        raise VideoError(f"clip too short: {len(picked)} frames after preprocessing, {config.min_frames} needed")
    frames = video.frames[picked]
    if config.width is not None:
        frames = np.stack([crop_resize(f, config.width, config.height) for f in frames])
    return Video(frames, target_fps if target_fps is not None else video.fps)


# ------------------------------------------------------------------------------------------ writing


def _even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: replicate the last row/column rather than dropping image content."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frames


def write_mp4(path: str | os.PathLike, video: Video, crf: int = 12, preset: str = "medium") -> None:
    """H.264 yuv420p MP4 at the video's exact frame rate, written atomically.

    crf 12 is visually lossless for evaluation; odd sizes are padded by one replicated row/column. The index
    goes first (faststart), so a browser plays the file before it has read all of it.
    """
    _write_av(path, video, "mp4", "libx264", {"crf": str(crf), "preset": preset}, {"movflags": "+faststart"})


def write_y4m(path: str | os.PathLike, video: Video) -> None:
    """Uncompressed YUV 4:2:0 (Y4M), the input classical codecs and YUV metrics tools expect; only the
    RGB -> YUV conversion and chroma subsampling are lossy. Odd sizes are padded as for MP4."""
    _write_av(path, video, "yuv4mpegpipe", "rawvideo", {})


def _write_av(path, video: Video, container_format: str, codec: str, options: dict,
              container_options: dict | None = None) -> None:
    import av  # FFmpeg libraries: loaded only to read or write containers

    frames = _even(video.frames)
    if frames.shape[0] == 0:
        raise VideoError("cannot write a video with no frames")
    fps = video.fps.limit_denominator(1 << 16) if video.fps.denominator > 1 << 16 else video.fps
    with atomic_path(path) as tmp:
        try:
            with av.open(tmp, mode="w", format=container_format, options=container_options or {}) as container:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = frames.shape[2], frames.shape[1]
                stream.pix_fmt = "yuv420p"
                stream.options = options
                for arr in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        except av.error.FFmpegError as e:
            raise VideoError(f"{os.fspath(path)}: cannot write {container_format} ({type(e).__name__}: {e})") from None


FRAME_NAME = re.compile(r"frame_\d{5,}\.png")


def _frames_listed(path: str) -> list[str]:
    """Frame files an earlier `write_png_folder` listed in `path`'s video.json (none if unreadable)."""
    try:
        with open(os.path.join(path, PNG_META)) as f:
            names = json.load(f).get("frames", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and FRAME_NAME.fullmatch(n)] if isinstance(names, list) else []


def write_png_folder(path: str | os.PathLike, video: Video, force: bool = False) -> None:
    """Lossless RGB frames `frame_00000.png`, ... plus `video.json` (fps, frame list).

    A new folder appears whole (written under a temporary name, then renamed). An existing folder must be
    empty unless `force`; then only the frame files and video.json are replaced (each written to a temporary
    file first, video.json last), and frame files the previous video.json listed beyond the new count are
    removed. Nothing else in the folder is touched.
    """
    path = os.fspath(path)
    check_folder_output(path, force=force)
    names = [f"frame_{i:05d}.png" for i in range(video.num_frames)]
    meta = {"fps": f"{video.fps.numerator}/{video.fps.denominator}", "frames": names}

    def fill(targets: dict[str, str]) -> None:
        for name, arr in zip(names, video.frames):
            Image.fromarray(arr).save(targets[name], format="PNG", compress_level=6)
        with open(targets[PNG_META], "w") as f:
            json.dump(meta, f, indent=1)

    if not os.path.isdir(path):
        with new_directory(path) as tmp:
            fill({name: os.path.join(tmp, name) for name in [*names, PNG_META]})
        return
    stale = sorted(set(_frames_listed(path)) - set(names))
    with atomic_files(path, [*names, PNG_META]) as targets:
        fill(targets)
    for name in stale:
        target = os.path.join(path, name)
        if os.path.isfile(target) and not os.path.islink(target):
            os.unlink(target)


def writes_folder(path: str | os.PathLike) -> bool:
    """Whether `write_video(path, ...)` writes a PNG folder (any name not ending in .mp4 or .y4m)."""
    return os.path.splitext(os.fspath(path))[1].lower() not in (".mp4", ".y4m")


def write_video(path: str | os.PathLike, video: Video, force: bool = False) -> None:
    """MP4 if `path` ends in .mp4, Y4M if it ends in .y4m, else a lossless PNG folder (`force`: see
    `write_png_folder`)."""
    if writes_folder(path):
        write_png_folder(path, video, force=force)
    elif os.fspath(path).lower().endswith(".mp4"):
        write_mp4(path, video)
    else:
        write_y4m(path, video)
