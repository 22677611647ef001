"""The Codec object and the library's layering: models owned (and shared) by codecs, no module-level
state, the mode table, no `configs/` below the command line, a command line that starts without JAX."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from m3cvc_jax.pipelines import modes, settings
from m3cvc_jax.pipelines.codec import Codec

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_library_below_the_command_line_never_imports_configs():
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "m3cvc_jax")):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT)
            if not name.endswith(".py") or rel.startswith(os.path.join("m3cvc_jax", "commands")) or \
                    rel == os.path.join("m3cvc_jax", "cli.py"):
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                           else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{rel}: {m}" for m in modules if m == "configs" or m.startswith("configs.")]
    assert offenders == []


def test_codecs_share_models_only_through_their_store():
    first = Codec.load("tiny")
    derived = first.with_config(settings.load_config("tiny", ["keyframes.threshold=0.5"]))
    assert derived.models.clip is first.models.clip  # same weights: built once per store
    other = Codec.load("tiny")  # nothing process-wide: a new codec builds its own
    assert other.models.clip is not first.models.clip
    reseeded = first.with_config(settings.load_config("tiny", ["seed=1"]))
    assert reseeded.models.clip is not first.models.clip  # other weights (tiny draws them from the seed)


def test_the_mode_is_a_row_of_the_mode_table():
    assert settings.CHOICES["decode.mode"] == tuple(modes.MODES)
    codec = Codec.load("tiny", overrides=["decode.mode=prediction"])
    assert codec.mode is modes.MODES["prediction"] and not codec.mode.last_keyframe_given
    assert Codec.load("tiny").mode.last_keyframe_given  # interpolation: keyframe i+1 given too


def test_command_line_starts_without_jax():
    code = ("import sys; from m3cvc_jax import cli; cli.build_parser(); "
            "sys.exit(1 if 'jax' in sys.modules else 0)")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT).returncode == 0
