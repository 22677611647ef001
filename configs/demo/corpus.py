"""Where the demo recipe's training data comes from: the corpus scripts/build_corpus.py builds (outside
git; its manifest lists every file's package, licence and checksum). Trainers see its `train` split only.

    python scripts/build_corpus.py /work/corpus
    python -m train.vae_pretrain --config configs/demo/vae_pretrain.py --workdir W --config.data.manual_dir=/work/corpus
"""

from __future__ import annotations

import os

from configs.vq_pretrain import _data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The corpus folder: $M3CVC_CORPUS, else runs/corpus (git-ignored); scripts/train_demo.sh sets the variable.
CORPUS = os.environ.get("M3CVC_CORPUS") or os.path.join(REPO, "runs", "corpus")


def image_data():
    """The image stages' data: 16 views of every training photograph and every frame of the real training
    clips at 12.5 fps (about 2,000 images at 128x80)."""
    return _data(name="corpus", manual_dir=CORPUS, keyframes="interval", interval=1, fps=12.5)


def video_folder() -> str:
    """The video stage's clips: the real training clips and the camera paths across training photographs."""
    return os.path.join(CORPUS, "train", "videos")
