"""One tiny-preset encode (and decode) of the bundled clip, shared by the end-to-end test modules.

Import the fixtures into a test module (`from tests.pipeline_fixtures import encoded, decoded_png`): the
session scope then makes every module reuse the same run. The CLI runs in-process through
`m3cvc_jax.cli.main`, so compiled programs are shared too.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

CLIP = os.path.join(os.path.dirname(__file__), "..", "assets", "clips", "bikes_4s.mp4")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "m3cvc")


def run_console(argv: list[str], cwd=None, env=None) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the installed `m3cvc` console script in a subprocess, importing
    this checkout: the real exit status and everything written to stderr, threads' output included."""
    env = {**os.environ, "PYTHONPATH": ROOT, "M3CVC_JAX_CACHE": "off", **(env or {})}
    r = subprocess.run([CONSOLE_SCRIPT, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    return r.returncode, r.stdout, r.stderr


CARPHONE = os.path.join(os.path.dirname(__file__), "..", "assets", "clips", "carphone.mp4")


def run_ffmpeg(*args: str) -> None:
    """The bundled ffmpeg (as the anchors use it), quiet, overwriting its outputs."""
    from m3cvc_jax.eval.anchors import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `m3cvc ARGV` run in this process."""
    from m3cvc_jax.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    # A private XLA cache: the commands enable a persistent one, and tests must not write to ~/.cache.
    path = tmp_path_factory.mktemp("e2e")
    os.environ.setdefault("M3CVC_JAX_CACHE", str(path / "xla"))
    return path


@pytest.fixture(scope="session")
def encoded(workdir):
    """(bitstream path, encode stdout) of `m3cvc encode bikes_4s.mp4 --preset tiny`."""
    path = str(workdir / "bikes.m3cvc")
    code, out, err = run_cli(["encode", CLIP, "-o", path, "--preset", "tiny"])
    assert code == 0, err
    return path, out


@pytest.fixture(scope="session")
def decoded_png(workdir, encoded):
    """(PNG folder, decode stdout) of `m3cvc decode` of the shared stream."""
    path = str(workdir / "bikes_png")
    code, out, err = run_cli(["decode", encoded[0], "-o", path])
    assert code == 0, err
    return path, out
