"""VMAF (Netflix's libvmaf, its built-in `vmaf_v0.6.1` model) through the ffmpeg the anchors use.

Both videos go to ffmpeg as Y4M (BT.601 YUV 4:2:0, the same conversion for every codec); the score is the
mean over frames. VMAF was fitted on 1080p viewing: at the demo's 128x80 it ranks codecs but its absolute
values are not comparable with published ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from fractions import Fraction

import numpy as np

from m3cvc_jax.errors import M3CVCError
from m3cvc_jax.eval.anchors import ffmpeg_exe
from m3cvc_jax.io.video import Video, write_y4m


def vmaf(reference: np.ndarray, distorted: np.ndarray, fps: Fraction | float = 8) -> float:
    """Mean VMAF of uint8 `(T, H, W, 3)` `distorted` against `reference`."""
    if reference.shape != distorted.shape:
        raise M3CVCError(f"vmaf: shapes differ, {reference.shape} vs {distorted.shape}")
    rate = Fraction(fps).limit_denominator(1 << 16)
    with tempfile.TemporaryDirectory() as tmp:
        ref, dist, log = (os.path.join(tmp, n) for n in ("ref.y4m", "dist.y4m", "vmaf.json"))
        write_y4m(ref, Video(np.asarray(reference, np.uint8), rate))
        write_y4m(dist, Video(np.asarray(distorted, np.uint8), rate))
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", dist, "-i", ref,
               "-lavfi", f"[0:v][1:v]libvmaf=log_fmt=json:log_path={log}:n_threads=1", "-f", "null", "-"]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0 or not os.path.exists(log):
            raise M3CVCError(f"vmaf: ffmpeg libvmaf failed: {r.stderr.decode(errors='replace').strip()[-300:]}")
        with open(log) as f:
            return float(json.load(f)["pooled_metrics"]["vmaf"]["mean"])
