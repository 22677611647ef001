"""Classical anchors through ffmpeg: x264, x265, SVT-AV1, VVC (libvvenc) and, given a binary, VTM.

All run low-delay (no B-frames / no picture reordering, one intra picture at the start unless the GOP says
otherwise) and sweep a constant QP reaching each codec's lowest rates, as the paper's anchors do. Each
encode writes the raw elementary stream (`.264`, `.265`, `.obu`, `.266`: no container overhead), so
bpp = file bytes · 8 / (W·H·T) is the real cost. x264's and x265's informational SEI messages (their option
strings, 0.5-2 KB) are removed, as they would dominate ultra-low-rate streams. Decoding goes back through ffmpeg to RGB.

RGB <-> YUV: ffmpeg's swscale with BT.601 limited range both ways (accurate rounding), so the colour
conversion costs the same for every anchor. ffmpeg is the static build in the `imageio-ffmpeg` wheel
(libx264, libx265, libsvtav1, libvvenc); `M3CVC_FFMPEG` overrides it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from typing import Sequence

import numpy as np

from m3cvc_jax.errors import ConfigError, M3CVCError

_SWS = "bicubic+accurate_rnd+full_chroma_int"


class AnchorError(M3CVCError):
    """An external encoder or decoder failed or is missing."""


def ffmpeg_exe() -> str:
    exe = os.environ.get("M3CVC_FFMPEG")
    if exe:
        return exe
    try:
        import imageio_ffmpeg  # only to locate the bundled binary when M3CVC_FFMPEG is unset

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # the wheel raises RuntimeError when it has no binary for this platform
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise AnchorError(f"no ffmpeg: install imageio-ffmpeg or set M3CVC_FFMPEG ({e})") from None


def ffmpeg_encoders() -> set[str]:
    """Names of the video encoders the ffmpeg binary has."""
    out = _run([ffmpeg_exe(), "-hide_banner", "-encoders"], what="ffmpeg -encoders").decode(errors="replace")
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("V"):
            names.add(parts[1])
    return names


def _run(cmd: list[str], *, what: str, stdin: bytes | None = None) -> bytes:
    try:
        res = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as e:
        raise AnchorError(f"{what}: cannot run {cmd[0]}: {e.strerror}") from None
    if res.returncode != 0:
        tail = " | ".join(res.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise AnchorError(f"{what} failed (exit {res.returncode}): {tail}")
    return res.stdout


def _even_pad(frames: np.ndarray) -> np.ndarray:
    # 4:2:0 needs even sizes; replicate an edge row/column and crop it away after decoding.
    t, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frames


def _fps_text(fps) -> str:
    f = Fraction(fps).limit_denominator(1 << 16)
    return f"{f.numerator}/{f.denominator}"


def decode_to_rgb(path: str, size: tuple[int, int], *, muxer: str) -> np.ndarray:
    """An elementary stream -> uint8 (T, H, W, 3); `size` = (width, height) crops the even-size padding."""
    if not os.path.isfile(path):
        raise AnchorError(f"{path}: no such file")
    w, h = size
    pw, ph = w + w % 2, h + h % 2
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", muxer, "-i", path,
           "-sws_flags", _SWS, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = _run(cmd, what=f"decoding {os.path.basename(path)}")
    frame_bytes = pw * ph * 3
    if len(raw) == 0 or len(raw) % frame_bytes:
        raise AnchorError(f"{path}: decoder gave {len(raw)} bytes, not whole {pw}x{ph} frames")
    frames = np.frombuffer(raw, np.uint8).reshape(-1, ph, pw, 3)
    return np.ascontiguousarray(frames[:, :h, :w])


def _write_size(path: str, w: int, h: int) -> None:
    # The stream codes the even (padded) size; the true size rides in a sidecar that bpp does not count
    # (a real deployment would signal it as the SPS conformance window, a few bits).
    with open(path + ".size", "w") as f:
        f.write(f"{w} {h}\n")


def _read_size(path: str) -> tuple[int, int]:
    if not os.path.isfile(path):
        raise AnchorError(f"{path}: no such file")
    try:
        with open(path + ".size") as f:
            w, h = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        raise AnchorError(f"{path}.size: missing or invalid (written next to every anchor stream)") from None
    return w, h


@dataclasses.dataclass
class FFmpegCodec:
    """One ffmpeg encoder at a constant QP; see the module docstring."""

    name: str
    encoder: str
    suffix: str
    muxer: str
    rate_points: Sequence[int]
    pix_fmt: str = "yuv420p"
    preset: str | None = "veryslow"
    extra: Sequence[str] = ()

    def args(self, qp: int, num_frames: int) -> list[str]:
        raise NotImplementedError

    def encode(self, frames: np.ndarray, fps, rate_point, workdir: str) -> str:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ConfigError(f"{self.name}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        t, h, w, _ = frames.shape
        padded = _even_pad(frames)
        os.makedirs(workdir, exist_ok=True)
        out = os.path.join(workdir, f"{self.name}_{rate_point}{self.suffix}")
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{padded.shape[2]}x{padded.shape[1]}",
               "-r", _fps_text(fps), "-i", "-", "-sws_flags", _SWS, "-pix_fmt", self.pix_fmt,
               "-c:v", self.encoder, *self.args(int(rate_point), t), *self.extra, "-f", self.muxer, out]
        _run(cmd, what=f"{self.name} encode at {rate_point}", stdin=padded.tobytes())
        _write_size(out, w, h)
        return out

    def decode(self, path: str) -> np.ndarray:
        return decode_to_rgb(path, _read_size(path), muxer=self.muxer)


class X264(FFmpegCodec):
    def __init__(self, rate_points=(51, 48, 45, 42, 39, 36), preset="veryslow"):
        super().__init__("x264", "libx264", ".264", "h264", tuple(rate_points), preset=preset)

    def args(self, qp, num_frames):
        # x264 writes its whole option string as an SEI (~550 bytes): at 0.01 bpp that would be most of the
        # stream, so SEI units (non-normative) are dropped; the stream stays decodable.
        return ["-preset", self.preset, "-bf", "0", "-g", str(max(num_frames, 1)), "-qp", str(qp),
                "-bsf:v", "filter_units=remove_types=6"]


class X265(FFmpegCodec):
    def __init__(self, rate_points=(51, 48, 45, 42, 39, 36), preset="veryslow"):
        super().__init__("x265", "libx265", ".265", "hevc", tuple(rate_points), preset=preset)

    def args(self, qp, num_frames):
        # info=0 and no SEI: x265's settings SEI alone is ~2 KB (see X264.args).
        params = f"bframes=0:keyint={max(num_frames, 1)}:qp={qp}:info=0:log-level=error"
        return ["-preset", self.preset, "-x265-params", params, "-bsf:v", "filter_units=remove_types=39|40"]


class SVTAV1(FFmpegCodec):
    """SVT-AV1 in its low-delay prediction structure with constant QP (0..63)."""

    def __init__(self, rate_points=(63, 59, 55, 51, 47, 43), preset="4"):
        super().__init__("svtav1", "libsvtav1", ".obu", "obu", tuple(rate_points), preset=preset)

    def args(self, qp, num_frames):
        params = f"rc=0:pred-struct=1:keyint={max(num_frames, 1)}"
        return ["-preset", str(self.preset), "-qp", str(qp), "-svtav1-params", params]


class VVenC(FFmpegCodec):
    """Fraunhofer VVenC (VVC) through ffmpeg's libvvenc: 10-bit input only; low delay without reordering."""

    def __init__(self, rate_points=(63, 59, 55, 51, 47, 43), preset="slower"):
        super().__init__("vvenc", "libvvenc", ".266", "vvc", tuple(rate_points), pix_fmt="yuv420p10le", preset=preset)

    def args(self, qp, num_frames):
        # vvenc's own low-delay GOP: no picture reordering needs refresh type "none" and GOP size 8.
        params = "PicReordering=0:GOPSize=8:DecodingRefreshType=none"
        return ["-preset", self.preset, "-qp", str(qp), "-vvenc-params", params]


@dataclasses.dataclass
class VTM:
    """The VVC reference encoder (EncoderApp) with a low-delay-P cfg; decoded with ffmpeg's VVC decoder.

    encoder: path of EncoderApp; cfg: e.g. VTM's `cfg/encoder_lowdelay_P_vtm.cfg`. 8-bit 4:2:0 in and out.
    """

    encoder: str
    cfg: str
    rate_points: Sequence[int] = (63, 58, 53, 48, 43)
    name: str = "vtm"

    def __post_init__(self):
        for label, p in (("VTM encoder", self.encoder), ("VTM cfg", self.cfg)):
            if not os.path.isfile(p):
                raise ConfigError(f"{label} {p}: no such file")

    def encode(self, frames, fps, rate_point, workdir):
        frames = np.asarray(frames)
        t, true_h, true_w, _ = frames.shape
        frames = _even_pad(frames)
        h, w = frames.shape[1:3]
        os.makedirs(workdir, exist_ok=True)
        out = os.path.join(workdir, f"vtm_{rate_point}.266")
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            yuv = os.path.join(tmp, "in.yuv")
            _run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                  "-s", f"{w}x{h}", "-i", "-", "-sws_flags", _SWS, "-pix_fmt", "yuv420p", "-f", "rawvideo", yuv],
                 what="RGB to YUV for VTM", stdin=frames.tobytes())
            fr = max(1, round(float(Fraction(fps))))
            _run([self.encoder, "-c", self.cfg, "-i", yuv, "-b", out, "-o", os.devnull, "-wdt", str(w), "-hgt", str(h),
                  "-fr", str(fr), "-f", str(t), "-q", str(int(rate_point)), "--InputBitDepth=8", "--OutputBitDepth=8",
                  "--InputChromaFormat=420"], what=f"VTM encode at QP {rate_point}")
        _write_size(out, true_w, true_h)
        return out

    def decode(self, path):
        return decode_to_rgb(path, _read_size(path), muxer="vvc")


ANCHORS = {"x264": "libx264", "x265": "libx265", "svtav1": "libsvtav1", "vvenc": "libvvenc"}


def _vtm_factory(vtm: str | None = None, vtm_cfg: str | None = None, rate_points: Sequence[int] | None = None, **_):
    if not vtm or not vtm_cfg:
        raise ConfigError("codec vtm needs --vtm PATH/TO/EncoderApp and --vtm-cfg PATH/TO/encoder_lowdelay_P_vtm.cfg")
    return VTM(vtm, vtm_cfg, **({"rate_points": tuple(rate_points)} if rate_points else {}))


def _anchor_factory(cls):
    def make(rate_points: Sequence[int] | None = None, **_):
        kw = {}
        if rate_points:
            kw["rate_points"] = tuple(rate_points)
        return cls(**kw)

    return make


# Factories by codec name (the eval codec table, `eval/codecs.py`, lists these next to `ours`).
FACTORIES = {"x264": _anchor_factory(X264), "x265": _anchor_factory(X265), "svtav1": _anchor_factory(SVTAV1),
             "vvenc": _anchor_factory(VVenC), "vtm": _vtm_factory}
