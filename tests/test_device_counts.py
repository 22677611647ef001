"""What holds across device counts (docs/guarantees.md): streams are byte-identical with 1 and 8 devices;
decoded frames differ by at most one level in a small fraction of values.

One fresh process per device count (XLA_FLAGS=--xla_force_host_platform_device_count=N) runs `m3cvc
encode` of 9 frames and `m3cvc decode` of the stored tiny stream through `cli.main`, so both commands
share the process's models and compiled programs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from m3cvc_jax.io.video import read_video
from tests.pipeline_fixtures import CLIP, ROOT

GOLDEN = os.path.join(os.path.dirname(__file__), "fixtures", "golden_tiny.m3cvc")
MAX_LEVELS = 1  # largest per-value difference of decoded frames between device counts
MAX_FRACTION = 1e-3  # of values that may differ at all (measured on an AMD EPYC: 8.7e-5, 24 of 276480)

SCRIPT = """
import sys
from m3cvc_jax.cli import main
stream, frames = sys.argv[1:]
encode = ["encode", {clip!r}, "-o", stream, "--preset", "tiny", "--set", "video.max_frames=9",
          "--set", "keyframes.method=fixed", "--set", "keyframes.interval=4", "--set", "dialogue.describer=none"]
sys.exit(main(encode) or main(["decode", {golden!r}, "-o", frames]))
"""


def _run(tmp_path, devices):
    stream, frames = tmp_path / f"s{devices}.m3cvc", tmp_path / f"d{devices}"
    env = {**os.environ, "PYTHONPATH": ROOT, "M3CVC_JAX_CACHE": "off",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    code = SCRIPT.format(clip=CLIP, golden=GOLDEN)
    r = subprocess.run([sys.executable, "-c", code, str(stream), str(frames)], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return stream.read_bytes(), read_video(frames).frames.astype(np.int16)


def test_1_and_8_devices(tmp_path):
    (stream1, frames1), (stream8, frames8) = _run(tmp_path, 1), _run(tmp_path, 8)
    assert stream1 == stream8
    diff = np.abs(frames1 - frames8)
    assert frames1.shape == (9, 80, 128, 3)
    assert diff.max() <= MAX_LEVELS, diff.max()
    assert (diff > 0).mean() <= MAX_FRACTION, (diff > 0).mean()
