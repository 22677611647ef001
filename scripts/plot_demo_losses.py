"""Loss curves of the demo recipe's stages as PNGs: `docs/demo_loss_<stage>.png`.

    python scripts/plot_demo_losses.py runs/demo docs
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from train.metrics_log import MetricsLog  # noqa: E402

STAGES = {"vae": ("loss", "psnr"), "vq": ("loss", "perplexity"), "unet": ("loss",), "video": ("loss",)}


def main(runs: str, out: str) -> list[str]:
    written = []
    for stage, keys in STAGES.items():
        rows = MetricsLog(os.path.join(runs, stage)).read()
        if not rows:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes[0], keys):
            ax.plot(steps, [float(r[key]) for r in rows])
            if key == "loss":
                ax.set_yscale("log")  # the losses fall over orders of magnitude
            ax.set_xlabel("step")
            ax.set_title(f"{stage}: {key}")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out, f"demo_loss_{stage}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    print("\n".join(main(sys.argv[1], sys.argv[2])))
