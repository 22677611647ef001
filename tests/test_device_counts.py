"""What holds across device counts (docs/guarantees.md): streams are byte-identical with 1 and 8 devices;
decoded frames differ by at most one level in a small fraction of values.

One fresh process per device count (XLA_FLAGS=--xla_force_host_platform_device_count=N, fixed when JAX
starts) runs `m3cvc encode` of 5 frames (keyframes 0 and 4: one clip, so every decoder stage runs once)
and `m3cvc decode` of that stream through `cli.main`, so both commands share the process's models and
compiled programs. Compiling dominates (about 20 s of CPU per process; frame count and size barely
change it), so the two processes run at the same time rather than one after the other.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from m3cvc_jax.io.video import read_video
from tests.pipeline_fixtures import CLIP, ROOT

FRAMES = 5
MAX_LEVELS = 1  # largest per-value difference of decoded frames between device counts
MAX_FRACTION = 1e-3  # of values that may differ at all (measured on an AMD EPYC: 6.5e-6, 1 of 153600)

SCRIPT = """
import sys
from m3cvc_jax.cli import main
stream, frames = sys.argv[1:]
encode = ["encode", {clip!r}, "-o", stream, "--preset", "tiny", "--set", "video.max_frames={frames}",
          "--set", "keyframes.method=fixed", "--set", "keyframes.interval=4", "--set", "dialogue.describer=none"]
sys.exit(main(encode) or main(["decode", stream, "-o", frames]))
"""


def _start(tmp_path, devices):
    stream, frames = tmp_path / f"s{devices}.m3cvc", tmp_path / f"d{devices}"
    env = {**os.environ, "PYTHONPATH": ROOT, "M3CVC_JAX_CACHE": "off",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    code = SCRIPT.format(clip=CLIP, frames=FRAMES)
    proc = subprocess.Popen([sys.executable, "-c", code, str(stream), str(frames)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, stream, frames


def _finish(proc, stream, frames):
    try:
        _, err = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    return stream.read_bytes(), read_video(frames).frames.astype(np.int16)


def test_1_and_8_devices(tmp_path):
    runs = [_start(tmp_path, devices) for devices in (1, 8)]
    (stream1, frames1), (stream8, frames8) = [_finish(*run) for run in runs]
    assert stream1 == stream8
    diff = np.abs(frames1 - frames8)
    assert frames1.shape == (FRAMES, 80, 128, 3)
    assert diff.max() <= MAX_LEVELS, diff.max()
    assert (diff > 0).mean() <= MAX_FRACTION, (diff > 0).mean()
