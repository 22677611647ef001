"""VQ pretraining data-parallel over 8 fake CPU devices matches the single-device run."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.test_train_vq import tiny_config
from train import vq_pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def test_eight_devices_match_one(tmp_path):
    data = tmp_path / "data"
    _, rows = vq_pretrain.train(tiny_config(data, num_steps=STEPS), str(tmp_path / "one"))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "train.vq_pretrain", "--config", "configs/vq_pretrain.py:tiny",
           "--workdir", str(tmp_path / "eight"), f"--config.num_steps={STEPS}", "--config.width=64",
           "--config.height=32", "--config.log_every=1", "--config.checkpoint_every=10",
           "--config.progress=False", f"--config.data.data_dir={data}"]
    probe = "import jax; assert jax.device_count() == 8, jax.devices()"
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, cwd=REPO)
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "eight" / "metrics.jsonl") as f:
        sharded = [json.loads(line) for line in f]
    assert [r["step"] for r in sharded] == [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for a, b in zip(rows, sharded):
        for key in ("loss", "rec_loss", "commit_loss", "perplexity", "grad_norm"):
            np.testing.assert_allclose(b[key], a[key], rtol=2e-3, atol=1e-5, err_msg=f"step {a['step']} {key}")
