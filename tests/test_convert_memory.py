"""`convert_weights sd-unet` streams: its peak memory stays near one copy of the model.

A ~200 MB UNet (SD 1.5's layout at a quarter of its widths) is converted in a subprocess that reports its
own peak RSS (VmHWM) before and after the conversion. Holding the source beside the result, or handing orbax numpy
arrays to snapshot and compress, shows as 2-3x the checkpoint's size; the bound is 1.5x.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so a child of the (large) pytest
# process would report the parent's peak; the high-water mark of the new address space starts afresh.
MEASURE = """
import sys
import convert_weights.sd_unet  # noqa: F401  (imports count in the baseline, not in the conversion)
from convert_weights.__main__ import main

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

before = hwm()
rc = main(sys.argv[1:])
print("PEAK_KIB", rc, before, hwm())
"""


def _write_unet(folder, base: int) -> int:
    from safetensors.numpy import save_file

    cfg = dict(block_out_channels=(base, 2 * base, 4 * base, 4 * base), layers_per_block=2, cross_attention_dim=768,
               attention_head_dim=8, norm_num_groups=16, sample_size=8)
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**cfg)
    rng = np.random.default_rng(0)
    sd = {k: rng.standard_normal(tuple(v.shape), dtype=np.float32) for k, v in ref.state_dict().items()}
    os.makedirs(folder)
    save_file(sd, os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(ref.config), f, default=list)
    return sum(v.nbytes for v in sd.values())


def test_sd_unet_conversion_peak_memory_near_one_copy(tmp_path):
    size = _write_unet(str(tmp_path / "unet"), base=80)
    assert 150e6 < size < 300e6
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", MEASURE, "sd-unet", str(tmp_path / "unet"), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("PEAK_KIB")), None)
    assert line is not None, run.stdout[-2000:] + run.stderr[-2000:]
    _, rc, before, after = line.split()
    assert rc == "0"
    assert "sd-unet: " in run.stdout and "tensors" in run.stdout  # progress was printed
    grew = (int(after) - int(before)) * 1024
    assert grew < 1.5 * size, f"conversion peak grew by {grew / 1e6:.0f} MB for a {size / 1e6:.0f} MB model"
