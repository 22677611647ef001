"""VMAF through ffmpeg's libvmaf filter: the perceptual metric that needs no downloaded weights.

The static ffmpeg in the `imageio-ffmpeg` wheel (or `M3CVC_FFMPEG`) is built with libvmaf, whose model
`vmaf_v0.6.1` is compiled in. Frames go to ffmpeg as raw RGB, are converted to YUV with the same swscale
settings as the anchors (BT.601 limited range, accurate rounding) and scored on luma, which is all VMAF
reads; 4:4:4 keeps odd frame sizes exact. The score is computed at the evaluated frame size (no rescaling):
at very small sizes it is still defined but no longer calibrated to a viewing condition.

Per-frame scores come from libvmaf's JSON log; a video's value is their mean, which is what ffmpeg prints as
"VMAF score" (libvmaf's mean pooling).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile

import numpy as np

from m3cvc_jax.errors import ConfigError, M3CVCError

MODEL = "vmaf_v0.6.1"
_SWS = "bicubic+accurate_rnd+full_chroma_int"


def available(ffmpeg: str | None = None) -> bool:
    """Whether the ffmpeg binary has the libvmaf filter."""
    from m3cvc_jax.eval.anchors import ffmpeg_exe

    try:
        return _has_libvmaf(ffmpeg or ffmpeg_exe())
    except M3CVCError:  # no ffmpeg at all
        return False


@functools.lru_cache(maxsize=4)
def _has_libvmaf(ffmpeg: str) -> bool:
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-filters"], capture_output=True, timeout=60,
                             check=False).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split()[1:2] == ["libvmaf"] for line in out.splitlines() if line.strip())


def vmaf(reference: np.ndarray, distorted: np.ndarray, *, threads: int | None = None,
         ffmpeg: str | None = None) -> np.ndarray:
    """Per-frame VMAF (0..100, higher is better) of uint8 `(T, H, W, 3)` frames against the reference."""
    from m3cvc_jax.eval.anchors import ffmpeg_exe

    ref, dist = np.ascontiguousarray(reference, np.uint8), np.ascontiguousarray(distorted, np.uint8)
    if ref.shape != dist.shape or ref.ndim != 4 or ref.shape[-1] != 3 or ref.shape[0] == 0:
        raise ValueError(f"VMAF needs two equal (T, H, W, 3) frame arrays, got {ref.shape} and {dist.shape}")
    t, h, w, _ = ref.shape
    threads = threads or os.cpu_count() or 1
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25"]
    to_yuv = f"scale=flags={_SWS}:out_color_matrix=bt601:out_range=tv,format=yuv444p"
    # libvmaf takes the distorted video first and the reference second.
    graph = (f"[0:v]{to_yuv}[dis];[1:v]{to_yuv}[ref];"
             f"[dis][ref]libvmaf=model=version={MODEL}:log_fmt=json:log_path=vmaf.json:n_threads={threads}")
    with tempfile.TemporaryDirectory(prefix="m3cvc-vmaf-") as tmp:
        dist.tofile(os.path.join(tmp, "dis.rgb"))
        ref.tofile(os.path.join(tmp, "ref.rgb"))
        cmd = [ffmpeg or ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
               *raw, "-i", "dis.rgb", *raw, "-i", "ref.rgb", "-lavfi", graph, "-f", "null", "-"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, check=False)
        if proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            raise M3CVCError(f"ffmpeg libvmaf failed: {msg[-1] if msg else 'exit status ' + str(proc.returncode)}")
        with open(os.path.join(tmp, "vmaf.json")) as f:
            log = json.load(f)
    scores = np.asarray([fr["metrics"]["vmaf"] for fr in log["frames"]], np.float64)
    if scores.shape != (t,):
        raise M3CVCError(f"ffmpeg libvmaf scored {scores.shape[0]} frames of {t}")
    return scores


class WithVmaf:
    """Adds a `vmaf` entry to another per-frame metric callable's results (`sharding.BatchMetrics`)."""

    def __init__(self, inner, *, threads: int | None = None):
        if not available():
            raise ConfigError("metric vmaf needs an ffmpeg built with libvmaf (the imageio-ffmpeg wheel's has it; "
                              "M3CVC_FFMPEG points elsewhere?)")
        self.inner = inner
        self.threads = threads

    def __call__(self, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(self.inner(a, b)) if self.inner is not None else {}
        out["vmaf"] = vmaf(a, b, threads=self.threads)
        return out
