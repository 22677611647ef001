"""Pack the demo recipe's exports as the folder the `demo` preset loads, weights stored as float16.

    python scripts/pack_demo.py runs/demo m3cvc_jax/assets/demo

One checkpoint per component in the layout of `m3cvc_jax/pipelines/models.py` COMPONENTS. float16 halves
the committed size (about 17 MB instead of 34); the models still run in float32 (weights are cast on
load), and the fingerprints are those of the stored float16 arrays, so a stream names exactly these bytes.
The folder is replaced atomically.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np

from m3cvc_jax.weights import load_checkpoint, save_checkpoint

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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
