"""The keyframe decision's settings (`codec/keyframes.py`), free of JAX so the command line and the
codec presets (`pipelines/presets.py`, which take their defaults from here) load without it."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from m3cvc_jax.errors import ConfigError

METHODS = ("m3cvc", "cmvc", "fixed", "semantic")


@dataclasses.dataclass(frozen=True)
class KeyframeConfig:
    """The `keyframes` block of the codec presets (`pipelines/presets.py`, `--set keyframes.FIELD=VALUE`);
    its defaults are the presets' (written only here)."""

    method: str = "m3cvc"
    lambda1: float = 1.0  # weight of the CLIP semantic change 1 − cos
    lambda2: float = 1.0  # weight of the motion magnitude (see module docstring)
    threshold: float = 0.25  # D_th
    max_clip_length: int = 16  # SEINE's window
    interval: int = 8  # fixed interval; CMVC's nominal interval length
    clip_model: str = "vit-l-14"  # CLIP preset of the image features (the model set builds it)
    flow_model: str = "raft_small"  # raft_small | raft_large | tiny | classical (host-side runner only)
    flow_updates: int = 12  # RAFT GRU iterations (pipelines/keyframe_stage.py)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"keyframes.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.max_clip_length < 2:
            raise ConfigError(f"keyframes.max_clip_length must be >= 2, got {self.max_clip_length}")
        if self.interval < 1:
            raise ConfigError(f"keyframes.interval must be >= 1, got {self.interval}")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> "KeyframeConfig":
        """From a config block (dict or ConfigDict); unknown fields are an error."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown keyframes option(s): {', '.join(unknown)}")
        return cls(**d)

    @property
    def uses_motion(self) -> bool:
        return self.method == "m3cvc" and self.lambda2 != 0
