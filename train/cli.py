"""`python -m train.NAME --config configs/FILE.py[:variant] --workdir DIR [--config.KEY=VALUE]`.

Flags are defined when a trainer runs as a program, not at import, so trainers import each other freely.
"""

from __future__ import annotations

from typing import Callable

from absl import app, flags
from ml_collections import config_flags


def main(train: Callable[[object, str], object]) -> None:
    config = config_flags.DEFINE_config_file("config", None, "trainer config file[:variant]", lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics.jsonl and exports")
    export_only = flags.DEFINE_bool(
        "export_only", False, "write WORKDIR/export from the latest checkpoint and stop: no step is trained and "
        "nothing else in WORKDIR changes, so it can run beside the training run it exports from")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        c = config.value
        if export_only.value:
            with c.unlocked():
                c.export_only = True
        train(c, workdir.value)

    app.run(run)
