"""Writing a weights checkpoint never destroys what the writer did not create (docs/guarantees.md): a new
or empty folder is written, one of our checkpoints is replaced only when asked (`--force`,
`overwrite=True`, a trainer's own export), anything else and the converter's source are refused up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from convert_weights.__main__ import main as convert_main
from m3cvc_jax.errors import OutputError
from m3cvc_jax.io import atomic
from m3cvc_jax.weights import load_checkpoint, read_config, save_checkpoint
from tests.pipeline_fixtures import ROOT
from train import loop


def _save(path, value=1.0, **kw):
    return save_checkpoint(str(path), family="tiny", config={"w": 1}, params={"a.kernel": np.full((2, 3), value,
                                                                                                  np.float32)}, **kw)


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def test_new_and_empty_folders_are_written(tmp_path):
    fp = _save(tmp_path / "a" / "ck")
    assert read_config(str(tmp_path / "a" / "ck"))["fingerprint"] == fp
    (tmp_path / "empty").mkdir()
    _save(tmp_path / "empty")
    assert load_checkpoint(str(tmp_path / "empty"))[1]["a.kernel"][0, 0] == 1.0
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "a") == []


def test_our_checkpoint_is_replaced_only_with_overwrite(tmp_path):
    ck = tmp_path / "ck"
    first = _save(ck)
    with pytest.raises(OutputError, match="already holds a checkpoint"):
        _save(ck, 2.0)
    assert read_config(str(ck))["fingerprint"] == first
    second = _save(ck, 2.0, overwrite=True)
    assert second != first and read_config(str(ck))["fingerprint"] == second
    assert load_checkpoint(str(ck))[1]["a.kernel"][0, 0] == 2.0
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("ours", [False, True], ids=["foreign_folder", "checkpoint_plus_a_file"])
def test_foreign_files_are_refused_even_with_overwrite(tmp_path, ours):
    """A folder of someone else's files, or our checkpoint with a file added beside it, is never replaced."""
    d = tmp_path / "d"
    if ours:
        _save(d)
    else:
        d.mkdir()
    (d / "keep.txt").write_text("x")
    before = _tree(d)
    with pytest.raises(OutputError, match="does not hold a checkpoint written here"):
        _save(d, overwrite=True)
    assert _tree(d) == before and _leftovers(tmp_path) == []


def test_a_failed_final_rename_puts_the_old_checkpoint_back(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    first = _save(ck)
    real = os.rename
    calls = []

    def rename(a, b):
        if b == str(ck) and os.path.basename(a).startswith(".ck.tmp-"):
            calls.append(a)
            if len(calls) == 2:  # the new checkpoint into place, after the old one went aside
                raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OutputError, match=f"{ck}: cannot write the checkpoint: No space left"):
        _save(ck, 2.0, overwrite=True)
    assert len(calls) == 2 and read_config(str(ck))["fingerprint"] == first and _leftovers(tmp_path) == []


def _source(tmp_path):
    src = tmp_path / "src" / "w.safetensors"
    src.parent.mkdir()
    save_file({"weight": np.ones((1, 4), np.float32), "bias": np.zeros(1, np.float32)}, str(src))
    return src


def _convert(capsys, *argv):
    code = convert_main(["aesthetic", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.err.splitlines()


def test_converter_destination_rules(tmp_path, capsys):
    src = _source(tmp_path)
    dst = tmp_path / "out"
    assert _convert(capsys, src, dst) == (0, [])
    fp = read_config(str(dst))["fingerprint"]
    code, err = _convert(capsys, src, dst)
    assert code == 2 and err == [f"convert_weights: error: {dst}: already holds a checkpoint; give --force to "
                                 f"replace it"]
    assert _convert(capsys, src, dst, "--force") == (0, []) and read_config(str(dst))["fingerprint"] == fp

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    code, err = _convert(capsys, src, tmp_path / "mine", "--force")
    assert code == 2 and len(err) == 1 and "does not hold a checkpoint" in err[0]
    assert os.listdir(tmp_path / "mine") == ["keep.txt"]

    for dst in (src, src.parent, tmp_path):  # the source itself, folders holding it
        code, err = _convert(capsys, src, dst, "--force")
        assert code == 2 and err == [f"convert_weights: error: {dst}: holds the source {src}; choose another "
                                     f"output folder"]
    assert src.is_file() and _leftovers(tmp_path) == []


def test_converter_checks_the_destination_before_converting(tmp_path, capsys, monkeypatch):
    import convert_weights.aesthetic as aesthetic

    monkeypatch.setattr(aesthetic, "read_state_dict", lambda *a, **k: pytest.fail("converted first"))
    (tmp_path / "file").write_text("x")
    code, err = _convert(capsys, _source(tmp_path), tmp_path / "file" / "out")
    assert code == 2 and err == [f"convert_weights: error: {tmp_path / 'file' / 'out'}: cannot write there: "
                                 f"{tmp_path / 'file'} is not a folder"]


def test_console_converter_refuses_a_foreign_folder(tmp_path):
    """The real process: exit status 2, one line on stderr, the user's file kept."""
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "convert_weights", "aesthetic", str(_source(tmp_path)),
                        str(tmp_path / "dst"), "--force"], env={**os.environ, "PYTHONPATH": ROOT},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("convert_weights: error: ") and (tmp_path / "dst" / "notes.txt").read_text() == "mine"


def test_trainer_export_is_replaced_but_foreign_files_fail_before_training(tmp_path):
    workdir = str(tmp_path / "run")
    first = loop.save_export(workdir, family="tiny", config={}, params={"a": np.zeros(2, np.float32)})
    second = loop.save_export(workdir, family="tiny", config={}, params={"a": np.ones(2, np.float32)})
    assert read_config(loop.export_dir(workdir))["fingerprint"] == second != first
    with open(os.path.join(loop.export_dir(workdir), "README"), "w") as f:
        f.write("notes")
    with pytest.raises(OutputError, match="does not hold a checkpoint written here"):
        loop.run(config=None, workdir=workdir, state=None, step_fn=None, batches=None, mesh=None, name="x")
    assert json.loads(open(os.path.join(loop.export_dir(workdir), "config.json")).read())["fingerprint"] == second
