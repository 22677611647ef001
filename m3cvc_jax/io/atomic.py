"""Atomic file and folder writes: a reader sees the old content or the complete new one, never a torn file.

Everything is written to a temporary name in the destination's own directory (so the final rename stays on
one file system), flushed to disk, then renamed over the destination with `os.replace`. Nothing here
deletes a file it did not create: a folder is only ever created whole (`new_directory`) or has named
files replaced in it (`atomic_files`); an existing folder is moved aside and removed only by
`move_directory_into_place`, and only when its caller recognises everything in it as its own writing.

Temporary files are made private (mkstemp 0600, mkdtemp 0700); before they take their final name they
get the mode a plain `open()` / `mkdir()` would give, i.e. the process umask applies. Errors name the
path the caller asked for, never the temporary one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from typing import Callable, Iterator, Sequence


def umask() -> int:
    """The process umask, read without changing it where the OS allows (other threads may create files)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def _renamed_error(e: OSError, path: str) -> OSError:
    """The same OSError, naming `path` (what the user gave) instead of a temporary name."""
    return OSError(e.errno, e.strerror or str(e), path)


def _parent(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise _renamed_error(e, path) from None
    return parent


def _finish_file(tmp: str, path: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, file_mode())
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise _renamed_error(e, path) from None


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=suffix, dir=parent)
    except OSError as e:
        raise _renamed_error(e, path) from None
    os.close(fd)
    try:
        yield tmp
        _finish_file(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
        except OSError as e:
            raise _renamed_error(e, os.fspath(path)) from None


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike, names: Sequence[str]) -> Iterator[dict[str, str]]:
    """Yield {name: temporary path} in the existing `directory`; on success every temporary file takes its
    name, in the order of `names` (put an index file last so it never lists a frame not yet in place).

    Only the named files are replaced; every other entry of `directory` is left alone. On failure the
    temporary files are removed and the named ones keep their old content. A name that is an existing
    folder (which rename(2) cannot replace) is refused before anything is written; a failure during the
    final renames themselves (an I/O error) leaves the names before it replaced and the others as they were.
    """
    directory = os.fspath(directory)
    for name in names:
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        target = os.path.join(directory, name)
        if os.path.isdir(target) and not os.path.islink(target):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file this command wrote", target)
    tmps: dict[str, str] = {}
    try:
        for name in names:
            try:
                fd, tmps[name] = tempfile.mkstemp(prefix=f".{name}.tmp-", suffix=os.path.splitext(name)[1],
                                                  dir=directory)
            except OSError as e:
                raise _renamed_error(e, os.path.join(directory, name)) from None
            os.close(fd)
        yield dict(tmps)
        for name in names:
            _finish_file(tmps[name], os.path.join(directory, name))
            del tmps[name]
    finally:
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def new_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary directory beside `path`; on success it is renamed to `path`, which must not exist
    (or be an empty folder: rename(2) fails on a non-empty one, so nobody's files can be lost). On failure
    the temporary directory and what was written into it are removed.
    """
    path = os.path.abspath(os.fspath(path))
    parent = _parent(path)
    base = os.path.basename(path)
    try:
        tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    except OSError as e:
        raise _renamed_error(e, path) from None
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        try:
            os.rename(tmp, path)
        except OSError as e:
            raise _renamed_error(e, path) from None
    except BaseException:
        _remove_own_tree(tmp)
        raise


def _remove_own_tree(tmp: str) -> None:
    """Remove a temporary directory this module created, with the plain files written into it."""
    with contextlib.suppress(OSError):
        for name in os.listdir(tmp):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)


def move_directory_into_place(tmp: str, path: str, replace_existing: Callable[[str], bool]) -> None:
    """Rename the finished folder `tmp` (created beside `path`) to `path`.

    A missing or empty `path` is replaced by rename(2) alone, which refuses a non-empty folder. A non-empty
    one is replaced only if `replace_existing(path)` says it holds nothing but what the caller's own kind of
    writer puts there: it is renamed aside (a hidden name in the same folder), asked again there (so files
    added meanwhile are not lost), `tmp` takes its place, then the old copy is removed. If `tmp` cannot take
    its place, the old folder is renamed back. Between the two renames `path` is briefly missing; a crash
    there leaves the old folder under `.NAME.old-*` beside it, complete.
    """
    path = os.path.abspath(path)
    os.chmod(tmp, dir_mode())
    try:
        os.rename(tmp, path)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not replace_existing(path):
            raise _renamed_error(e, path) from None
    aside = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=os.path.dirname(path))
    try:
        os.rename(path, aside)  # onto the empty folder just made, so the hidden name is ours alone
    except OSError as e:
        os.rmdir(aside)
        raise _renamed_error(e, path) from None
    if not replace_existing(aside):
        os.rename(aside, path)
        raise FileExistsError(errno.EEXIST, "changed while being replaced; left as it was", path)
    try:
        os.rename(tmp, path)
    except OSError as e:
        os.rename(aside, path)
        raise _renamed_error(e, path) from None
    shutil.rmtree(aside)
