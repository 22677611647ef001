"""Atomic file and folder writes: a reader sees the old content or the complete new one, never a torn file.

Everything is written to a temporary name in the destination's own directory (so the final rename stays on
one file system), flushed to disk, then renamed over the destination with `os.replace`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


def _parent(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file path beside `path`; on success it replaces `path`, on failure it is removed.

    The temporary name keeps the destination's extension, because some writers (ffmpeg muxers, PIL) choose
    the format from it.
    """
    path = os.fspath(path)
    parent = _parent(path)
    base = os.path.basename(path)
    suffix = os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=suffix, dir=parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary directory beside `path`; on success it takes the place of `path`.

    A directory cannot be swapped in one system call when the destination exists, so an existing
    destination is first renamed aside and deleted after the new one is in place: a crash in between leaves
    the complete old folder under a `.old-` name, never a half-written one under `path`.
    """
    path = os.path.abspath(os.fspath(path))
    parent = _parent(path)
    base = os.path.basename(path)
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.lexists(path):
            if not os.path.isdir(path) or os.path.islink(path):
                raise FileExistsError(f"{path} exists and is not a directory")
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
