"""Pack the demo recipe's exports as the folder the `demo` preset loads, weights stored as float16.

    python scripts/pack_demo.py runs/demo m3cvc_jax/assets/demo

One checkpoint per component in the layout of `m3cvc_jax/pipelines/models.py` COMPONENTS. float16 halves
the committed size (about 17 MB instead of 34); the models still run in float32 (weights are cast on
load), and the fingerprints are those of the stored float16 arrays, so a stream names exactly these bytes.
The folder is replaced atomically. Then the learned index prior (`coding.entropy_model=learned`, the demo
default) is trained on the packed post-encoder's maps of the bundled clips (configs/index_prior.py, a fresh
run: a prior fits one codebook only) and its tables are added to `post-encoder/config.json`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs, train

from configs.index_prior import get_config as index_prior_config  # noqa: E402
from m3cvc_jax.weights import load_checkpoint, save_checkpoint  # noqa: E402
from train import index_prior  # noqa: E402

# component folder -> the recipe's export (relative to the runs directory)
EXPORTS = {"sd-vae": "vae/export", "post-encoder": "vq/export", "keyframe-unet": "unet/export",
           "clip": "clip", "seine": "video/export"}


def main(runs: str, dst: str) -> None:
    tmp = dst.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, export in EXPORTS.items():
        meta, params = load_checkpoint(os.path.join(runs, export))
        half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in params.items()}
        fp = save_checkpoint(os.path.join(tmp, name), family=meta["family"], config=meta["config"], params=half,
                             tables=meta.get("tables"))
        print(f"{name:14s} {sum(v.size for v in half.values()):>10,} parameters  fingerprint {fp}")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    add_index_prior(dst)


def add_index_prior(dst: str) -> None:
    config = index_prior_config("demo")
    config.weights_root = os.path.abspath(dst)
    config.progress = False
    with tempfile.TemporaryDirectory() as workdir:
        prior, _ = index_prior.train(config, workdir)
        pe_dir = os.path.join(dst, "post-encoder")
        fp = index_prior.export(prior, pe_dir, None, pe_dir)
    print(f"index prior    {prior.num_clusters} clusters, boosts {prior.boosts}; post-encoder fingerprint {fp}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
