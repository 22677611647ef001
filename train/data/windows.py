"""Short frame windows of a folder of videos, encoded once by a frozen VAE, addressed by training step.

Item `j` of the stream is window `perm_e[j mod N]` of epoch `e = j // N` (a permutation drawn from
(seed, e)), mirrored left-right when that epoch's flip bit for it is set; batch `s` is items
`[s*B, (s+1)*B)`. So a resumed run sees exactly the batches of the uninterrupted run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from m3cvc_jax.errors import ConfigError
from train.data import frames as frames_lib


class LatentWindows:
    """`windows[step]` -> {"mean", "logvar"}: `(B, T, h, w, C)` posterior moments of `T`-frame windows.

    encode: uint8 frames `(N, H, W, 3)` -> (mean, logvar) numpy arrays `(N, h, w, C)`; run once per video
    and per mirror image (the VAE is frozen, so this equals encoding every step).
    """

    def __init__(self, folder: str, *, width: int, height: int, fps: float, window: int, stride: int,
                 batch_size: int, seed: int, encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 max_frames: int = 0, flip: bool = True):
        self.videos, self.index = [], []
        for path in frames_lib.list_videos(folder):
            frames = frames_lib.read_frames(path, width=width, height=height, fps=fps, max_frames=max_frames)
            if len(frames) < window:
                continue
            views = [encode(frames)] + ([encode(np.ascontiguousarray(frames[:, :, ::-1]))] if flip else [])
            v = len(self.videos)
            self.videos.append(views)
            self.index += [(v, s) for s in range(0, len(frames) - window + 1, max(stride, 1))]
        if not self.index:
            raise ConfigError(f"no video in {folder} has {window} frames at {fps:g} fps")
        self.window, self.batch_size, self.seed, self.flip = window, batch_size, seed, flip
        self.num_examples = len(self.index)

    def _item(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_examples
        rng = np.random.default_rng([self.seed, j // n])
        perm, flips = rng.permutation(n), rng.integers(0, 2, n)
        k = perm[j % n]
        v, s = self.index[k]
        mean, logvar = self.videos[v][int(flips[k]) if self.flip else 0]
        return mean[s:s + self.window], logvar[s:s + self.window]

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        items = [self._item(j) for j in range(step * self.batch_size, (step + 1) * self.batch_size)]
        return {"mean": np.stack([m for m, _ in items]), "logvar": np.stack([lv for _, lv in items])}
