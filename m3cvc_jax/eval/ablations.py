"""Ablation runs: rows of `--set` overrides of the one M3-CVC config, each evaluated as codec `ours[row]`.

A config file (e.g. `configs/ablations/table1.py`) has `get_config()` returning `rows`, a list of
`{name, overrides: ["key=value", ...]}`. The rows become extra codecs of an ordinary `m3cvc eval` run, so
they share its dataset, preprocessing, metrics, anchors and report (BD-rate against any row with
`--anchor "ours[full]"`). Each row is codec "ours" (`eval/ours.py`).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.eval.codecs import make_codec


def load_rows(path: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(row name, overrides)] from an ablation config file."""
    if not os.path.isfile(path):
        raise ConfigError(f"ablation config {path}: no such file")
    spec = importlib.util.spec_from_file_location("_m3cvc_ablation", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        cfg = module.get_config()
    except Exception as e:  # a user's config file: report it on one line
        raise ConfigError(f"ablation config {path}: {type(e).__name__}: {e}") from None
    rows = []
    for row in cfg.rows:
        overrides = tuple(str(o) for o in row.overrides)
        for o in overrides:
            if "=" not in o:
                raise ConfigError(f"ablation {row.name}: override {o!r} is not KEY=VALUE")
        rows.append((str(row.name), overrides))
    names = [r[0] for r in rows]
    if len(set(names)) != len(names):
        raise ConfigError(f"ablation config {path}: repeated row names")
    return rows


def check_overrides(rows, config) -> None:
    """Every override key must name an existing field of `config` (an ml_collections ConfigDict)."""
    for name, overrides in rows:
        for o in overrides:
            key = o.split("=", 1)[0]
            node: Any = config
            for part in key.split("."):
                if part not in node:
                    raise ConfigError(f"ablation {name}: {key} is not a field of the codec config")
                node = node[part]


def ablation_codecs(path: str, *, overrides=(), rate_points=None, row_rate_points=None, **options) -> dict:
    """{"ours[row]": codec} for each row; base `overrides` first, the row's own after (they win).

    rate_points: for every row; row_rate_points: {"ours[row]": [...]} for particular rows (they win)."""
    rows = load_rows(path)
    row_rate_points = row_rate_points or {}
    return {f"ours[{name}]": make_codec("ours", overrides=tuple(overrides) + row,
                                        rate_points=row_rate_points.get(f"ours[{name}]", rate_points), **options)
            for name, row in rows}
