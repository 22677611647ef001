"""Bitstream files: a container (`codec/bitstream.py`, version `WRITE_VERSION`) written atomically and read
back with checks.

A file larger than any valid stream is refused before it is read; read errors and corrupt contents are
`BitstreamError`s naming the file.
"""

from __future__ import annotations

import os

from m3cvc_jax.codec.bitstream import MAX_FILE_BYTES, WRITE_VERSION, Bits, Bitstream, pack, unpack_with_bits
from m3cvc_jax.errors import BitstreamError
from m3cvc_jax.io.atomic import atomic_write_bytes


def write_bitstream(path: str | os.PathLike, stream: Bitstream) -> Bits:
    """Pack and write atomically; returns the bits per part of the file written."""
    data = pack(stream, WRITE_VERSION)
    atomic_write_bytes(path, data)
    return unpack_with_bits(data)[1]


def read_bitstream_with_bits(path: str | os.PathLike) -> tuple[Bitstream, Bits]:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                raise BitstreamError(f"{os.fspath(path)}: larger than {MAX_FILE_BYTES} bytes, not an m3cvc bitstream")
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BitstreamError(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise BitstreamError(f"{os.fspath(path)}: is a directory, not a bitstream") from None
    except OSError as e:
        raise BitstreamError(f"{os.fspath(path)}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"{os.fspath(path)}: larger than {MAX_FILE_BYTES} bytes, not an m3cvc bitstream")
    try:
        return unpack_with_bits(data)
    except BitstreamError as e:
        raise BitstreamError(f"{os.fspath(path)}: {e}") from None


def read_bitstream(path: str | os.PathLike) -> Bitstream:
    """Read and parse a bitstream file."""
    return read_bitstream_with_bits(path)[0]
