"""Locating an SD component in a diffusers folder, pipeline folder or single-file checkpoint."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from convert_weights.core import read_json
from convert_weights.lazy import LazyStateDict, open_state_dict
from m3cvc_jax.errors import ConfigError, WeightsError


def read_component(src: str, subfolder: str, ldm_prefix: str) -> tuple[LazyStateDict, str | None]:
    """(lazy state dict, path of the diffusers config.json or None) for one component.

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
        return open_state_dict(src), cfg
    sd = open_state_dict(src)
    if any(k.startswith(ldm_prefix) for k in sd):
        sd = sd.strip_prefix(ldm_prefix)
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


def resolve_config(src: str, option: str | None, found: str | None, sd: dict[str, np.ndarray], *, ldm: bool,
                   infer, cls):
    """The component's config: `--config`, else the config.json found with the weights, else (LDM names
    only: diffusers names do not pin the layout) inferred from the shapes by `infer`."""
    cfg = config_dict(option, found)
    if cfg is None:
        if not ldm:
            raise WeightsError(f"{src}: no config.json beside these weights; pass --config")
        return infer(sd)
    return cls.preset(cfg) if isinstance(cfg, str) else cls.from_diffusers(cfg)


def check_inferred_groups(cfg) -> None:
    """Inference assumes SD's 32 norm groups, which only widths divisible by 32 allow."""
    if any(c % 32 for c in cfg.block_out_channels):
        raise WeightsError(f"widths {cfg.block_out_channels} are not multiples of SD's 32 norm groups: "
                           "the groups cannot be inferred from the weights; pass --config")
