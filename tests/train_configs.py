"""The training tests' run settings: a stage's `tiny` config at a test's frame size, quiet, logging every
step and checkpointing every 10 (resume tests stop and restart between checkpoints)."""

from __future__ import annotations

from typing import Any, Callable


def tiny_run_config(get_config: Callable[[str], Any], width: int, height: int, /, **overrides):
    """`get_config("tiny")` (a stage's configs module) with the test settings at `width` x `height`, then
    `overrides` by key (a test may override the size too)."""
    c = get_config("tiny")
    c.width, c.height = width, height
    c.progress = False
    c.log_every = 1
    c.checkpoint_every = 10
    for k, v in overrides.items():
        c[k] = v
    return c
