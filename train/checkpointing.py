"""Train-state checkpoints with orbax's CheckpointManager; a run resumes from the latest one.

The state pytree is stored flat (`jax.tree_util.keystr` of each leaf's path -> array) because NNX states
have integer keys (list indices) that orbax would turn into strings; restoring unflattens onto the
structure of a template state, so any pytree (params, optax state, EMA statistics) round-trips.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def _flatten(tree: Any) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


class Checkpointer:
    def __init__(self, workdir: str, *, max_to_keep: int = 3):
        directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, *, force: bool = False) -> None:
        self.manager.save(int(step), args=ocp.args.StandardSave(_flatten(state)), force=force)

    def restore(self, template: Any, step: int | None = None) -> Any:
        """The state at `step` (default: latest), laid out (dtype, sharding) like `template`."""
        step = self.latest_step() if step is None else step
        flat_template = _flatten(template)

        def abstract(x):
            sharding = getattr(x, "sharding", None)
            return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

        restored = self.manager.restore(
            step, args=ocp.args.StandardRestore({k: abstract(v) for k, v in flat_template.items()})
        )
        treedef = jax.tree_util.tree_structure(template)
        return jax.tree_util.tree_unflatten(treedef, [restored[k] for k in flat_template])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
