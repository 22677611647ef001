"""Locating an SD component in a diffusers folder, pipeline folder or single-file checkpoint."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from convert_weights.core import read_json, read_state_dict
from m3cvc_jax.errors import ConfigError, WeightsError


def read_component(src: str, subfolder: str, ldm_prefix: str) -> tuple[dict[str, np.ndarray], str | None]:
    """(state dict, path of the diffusers config.json or None) for one component.

    src: a component folder, a whole pipeline folder (uses `subfolder/`), a weights file inside a
    component folder (its config.json is used), or a single-file SD checkpoint (keys under `ldm_prefix`
    are taken and stripped; a standalone LDM VAE/UNet file without the prefix works too).
    """
    if os.path.isdir(src):
        if not os.path.isfile(os.path.join(src, "config.json")) and os.path.isdir(os.path.join(src, subfolder)):
            src = os.path.join(src, subfolder)
        cfg = os.path.join(src, "config.json")
        if not os.path.isfile(cfg):
            raise WeightsError(f"{src}: a diffusers folder needs its config.json (or pass --config)")
        return read_state_dict(src), cfg
    sd = read_state_dict(src)
    if any(k.startswith(ldm_prefix) for k in sd):
        sd = {k[len(ldm_prefix):]: v for k, v in sd.items() if k.startswith(ldm_prefix)}
    beside = os.path.join(os.path.dirname(os.path.abspath(src)), "config.json")
    return sd, beside if os.path.isfile(beside) else None


def config_dict(option: str | None, found: str | None) -> dict[str, Any] | str | None:
    """The config to use: `--config` (a preset name or a config.json path) wins over a found config.json.
    Returns a dict (diffusers config), a preset name, or None (infer from the weights)."""
    if option is None:
        return read_json(found) if found else None
    if option.endswith(".json") or os.path.sep in option:
        try:
            return read_json(option)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{option}: not valid JSON ({e})") from None
    return option
