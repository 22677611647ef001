"""Pack the demo recipe's exports as the folder the `demo` preset loads, weights stored as float16.

    python scripts/pack_demo.py runs/demo m3cvc_jax/assets/demo --force
    python scripts/pack_demo.py --prior-only m3cvc_jax/assets/demo   # retrain only the index prior

One checkpoint per component in the layout of `m3cvc_jax/pipelines/models.py` COMPONENTS. float16 halves
the committed size (about 17 MB instead of 34); the models still run in float32 (weights are cast on
load), and the fingerprints are those of the stored float16 arrays, so a stream names exactly these bytes.
Then the learned index prior (`coding.entropy_model=learned`, the demo default) is trained on the packed
post-encoder's maps of the demo corpus's training videos (configs/index_prior.py:corpus, $M3CVC_CORPUS; a
fresh, deterministic run: a prior fits one codebook only) and its tables are added to
`post-encoder/config.json`, so repacking new weights always ships a matching prior (`--prior-only` redoes
just this on a packed folder, replacing its prior). The folder is built under a temporary name and
renamed into place; an existing one is replaced only with --force and only if it holds nothing but
component checkpoints (as this script writes them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs, train

from configs.index_prior import get_config as index_prior_config  # noqa: E402
from m3cvc_jax.errors import M3CVCError  # noqa: E402
from m3cvc_jax.io.atomic import move_directory_into_place  # noqa: E402
from m3cvc_jax.weights import is_checkpoint_folder, load_checkpoint, save_checkpoint  # noqa: E402
from train import index_prior  # noqa: E402

# component folder -> the recipe's export (relative to the runs directory)
EXPORTS = {"sd-vae": "vae/export", "post-encoder": "vq/export", "keyframe-unet": "unet/export",
           "clip": "clip", "seine": "video/export"}


def is_packed_demo(path: str) -> bool:
    """`path` holds only checkpoints under component names, as this script writes them."""
    return all(name in EXPORTS and is_checkpoint_folder(os.path.join(path, name)) for name in os.listdir(path))


def main(runs: str, dst: str, force: bool = False) -> None:
    dst = os.path.abspath(dst)
    if os.path.isdir(dst) and os.listdir(dst) and not (force and is_packed_demo(dst)):
        raise M3CVCError(f"{dst}: folder is not empty; " + (
            "give --force to replace a packed demo folder" if is_packed_demo(dst)
            else "it holds files this script did not write"))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-", dir=os.path.dirname(dst))
    try:
        for name, export in EXPORTS.items():
            meta, params = load_checkpoint(os.path.join(runs, export))
            half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in params.items()}
            fp = save_checkpoint(os.path.join(tmp, name), family=meta["family"], config=meta["config"],
                                 params=half, tables=meta.get("tables"))
            print(f"{name:14s} {sum(v.size for v in half.values()):>10,} parameters  fingerprint {fp}")
        add_index_prior(tmp)
        move_directory_into_place(tmp, dst, is_packed_demo if force else lambda _: False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def add_index_prior(packed: str) -> None:
    """Train the index prior on the maps of the weights packed in `packed`; add its tables to them."""
    config = index_prior_config("corpus")
    config.weights_root = packed
    config.progress = False
    with tempfile.TemporaryDirectory() as workdir:
        prior, rows = index_prior.train(config, workdir)
    pe_dir = os.path.join(packed, "post-encoder")
    fp = save_checkpoint(pe_dir, overwrite=True, **index_prior.export_checkpoint(prior, pe_dir, None))
    print(f"index prior    {rows[-1]}; post-encoder fingerprint {fp}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", help="the recipe's runs directory (not with --prior-only)")
    parser.add_argument("dst")
    parser.add_argument("--force", action="store_true", help="replace DST if it is a packed demo folder")
    parser.add_argument("--prior-only", action="store_true", help="retrain only the index prior of a packed DST")
    args = parser.parse_args()
    if (args.runs is None) != args.prior_only:
        parser.error("give RUNS DST, or --prior-only DST")
    try:
        if args.prior_only:
            if not (os.path.isdir(args.dst) and is_packed_demo(args.dst)):
                raise M3CVCError(f"{args.dst}: not a packed demo folder")
            add_index_prior(args.dst)
        else:
            main(args.runs, args.dst, args.force)
    except M3CVCError as e:
        sys.exit(f"pack_demo: error: {e}")
