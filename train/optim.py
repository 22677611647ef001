"""The trainers' optimiser: AdamW behind global-norm clipping, linear warmup then constant or cosine."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

from m3cvc_jax.errors import ConfigError


def learning_rate(cfg: Any, num_steps: int) -> optax.Schedule:
    warmup = int(cfg.warmup_steps)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.learning_rate)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.learning_rate, max(num_steps - warmup, 1))
    else:
        raise ConfigError(f"unknown learning-rate schedule {cfg.schedule!r}; 'constant' or 'cosine'")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, warmup), after], [warmup])


def schedule_steps(cfg: Any, num_steps: int) -> int:
    """What the schedule needs to know of the run length (a constant schedule: nothing)."""
    return num_steps if cfg.schedule == "cosine" else 0


def adamw(cfg: Any, num_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(learning_rate(cfg, num_steps), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
    )


def masked(cfg: Any, num_steps: int, trainable: Any) -> optax.GradientTransformation:
    """AdamW on leaves where `trainable` is True; the rest get zero updates and no optimiser state."""
    label_tree = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
    return optax.multi_transform({"train": adamw(cfg, num_steps), "freeze": optax.set_to_zero()}, label_tree)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """A hashable copy of a config's `optimizer` block (so jitted steps can take it as a static arg)."""

    learning_rate: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "constant"
    b1: float = 0.9
    b2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 1.0

    @classmethod
    def from_config(cls, cfg: Any) -> "OptimizerConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg.keys()) - names)
        if unknown:
            raise ConfigError(f"unknown optimizer option(s): {', '.join(unknown)}")
        return cls(**{k: cfg[k] for k in cfg.keys()})
