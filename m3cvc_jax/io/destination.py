"""Checks on an output path, made before a long encode or decode so a bad destination fails in a second:
it must be writable, must not be the input, and a folder must be empty unless the user said `--force`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile

from m3cvc_jax.errors import OutputError


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _ancestors(path: str) -> list[str]:
    """`path`'s folders from its own up to the root (symbolic links resolved)."""
    out, cur = [], os.path.dirname(os.path.realpath(path))
    while True:
        out.append(cur)
        up = os.path.dirname(cur)
        if up == cur:
            return out
        cur = up


def check_can_create_in(path: str) -> None:
    """The nearest existing folder above `path` accepts new files (probed, so read-only mounts count)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"{path}: cannot write there: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".m3cvc-write-test-", dir=parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write there: {e.strerror or e}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def holds(folder: str, path: str) -> bool:
    """`folder` is `path` itself or one of the folders above it (links resolved)."""
    return os.path.isdir(folder) and any(_same(d, folder) for d in [path, *_ancestors(path)])


def check_not_input(output: str, input_path: str | None) -> None:
    """Refuse an output that is the input, a file inside an input folder, or a folder holding the input."""
    if input_path is None or not os.path.lexists(input_path):
        return
    if _same(output, input_path) or os.path.abspath(output) == os.path.abspath(input_path):
        raise OutputError(f"{output}: is the input; choose another output")
    if os.path.isdir(input_path) and os.path.lexists(output) and any(
            _same(d, input_path) for d in _ancestors(output)):
        raise OutputError(f"{output}: is inside the input folder {input_path}; choose another output")
    if os.path.isdir(output) and any(_same(d, output) for d in _ancestors(input_path)):
        raise OutputError(f"{output}: holds the input {input_path}; choose another output folder")


def check_file_output(output: str, input_path: str | None = None) -> None:
    """A file about to be (re)written atomically at `output`."""
    output = os.fspath(output)
    check_not_input(output, input_path)
    if os.path.isdir(output):
        raise OutputError(f"{output}: is a folder; give a file name")
    check_can_create_in(output)


def folder_is_empty(path: str) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def check_folder_output(output: str, input_path: str | None = None, force: bool = False) -> None:
    """A folder about to receive frame files: new, empty, or (with `force`) one whose frame files and
    index may be replaced while everything else in it stays."""
    output = os.fspath(output)
    check_not_input(output, input_path)
    if os.path.lexists(output) and not os.path.isdir(output):
        raise OutputError(f"{output}: exists and is not a folder")
    if not os.path.isdir(output):
        check_can_create_in(output)
        return
    try:
        empty = folder_is_empty(output)
    except OSError as e:
        raise OutputError(f"{output}: cannot read the folder: {e.strerror or e}") from None
    if not empty and not force:
        raise OutputError(f"{output}: folder is not empty; give an empty or new folder, or --force to replace "
                          f"only the frame files and video.json written there")
    if not os.access(output, os.W_OK | os.X_OK):
        raise OutputError(f"{output}: cannot write there: {os.strerror(errno.EACCES)}")
    check_can_create_in(os.path.join(output, "x"))

