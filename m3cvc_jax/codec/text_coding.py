"""Lossless coding of the description texts: LZW (the paper's choice), zlib, brotli, zstd, zstd + dictionary.

Each codec is tuned for short texts: raw deflate (no zlib header/checksum), brotli quality 11 in text mode
with a small window, zstd level 19 with the frame magic, content size, checksum and dictionary id left out
(the bitstream header names the codec, and its sections carry their own CRC32). `zstd-dict` primes zstd
with a dictionary trained on realistic keyframe and clip descriptions (`zstd_dictionary.json`, built by
`python -m benchmarks.text_coding --train-dictionary`). The default is the codec that
`benchmarks/text_coding.py` measured smallest on held-out descriptions (see docs/bitstream.md).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import zlib

from m3cvc_jax.codec import lzw
from m3cvc_jax.errors import ConfigError

# Ids are part of bitstream v1: never renumber, only append.
TEXT_CODECS: dict[str, int] = {"lzw": 1, "zlib": 2, "brotli": 3, "zstd": 4, "zstd-dict": 5}
TEXT_CODEC_NAMES: dict[int, str] = {v: k for k, v in TEXT_CODECS.items()}
DEFAULT_TEXT_CODEC = "zstd-dict"

DICTIONARY_PATH = os.path.join(os.path.dirname(__file__), "zstd_dictionary.json")
_ZSTD_LEVEL = 19


class TextCodingError(ValueError):
    """Coded text is invalid for its codec, or decodes to more than the allowed size."""


def check_codec(codec: str) -> str:
    if codec not in TEXT_CODECS:
        raise ConfigError(f"unknown text codec {codec!r}; choose one of {', '.join(TEXT_CODECS)}")
    return codec


@functools.cache
def zstd_dictionary_bytes() -> bytes:
    """The shipped zstd dictionary, checked against its recorded SHA-256."""
    try:
        with open(DICTIONARY_PATH) as f:
            meta = json.load(f)
        raw = base64.b64decode(meta["dictionary_base64"])
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot read the text dictionary {DICTIONARY_PATH}: {e}") from None
    if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
        raise ConfigError(f"the text dictionary {DICTIONARY_PATH} is corrupt (SHA-256 mismatch)")
    return raw


def _zstd_params(with_dict: bool):
    import zstandard as zstd  # loaded only by the codecs that use it

    params = zstd.ZstdCompressionParameters.from_level(
        _ZSTD_LEVEL,
        format=zstd.FORMAT_ZSTD1_MAGICLESS,
        write_content_size=False,
        write_checksum=False,
        write_dict_id=False,
    )
    d = zstd.ZstdCompressionDict(zstd_dictionary_bytes()) if with_dict else None
    return zstd, params, d


def compress(data: bytes, codec: str) -> bytes:
    """Code `data` (UTF-8 bytes) with `codec`."""
    check_codec(codec)
    if codec == "lzw":
        return lzw.compress(data)
    if codec == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return c.compress(data) + c.flush()
    if codec == "brotli":
        import brotli  # loaded only by the codec that uses it

        return brotli.compress(data, mode=brotli.MODE_TEXT, quality=11, lgwin=16)
    zstd, params, d = _zstd_params(codec == "zstd-dict")
    return zstd.ZstdCompressor(compression_params=params, dict_data=d).compress(data)


def decompress(data: bytes, codec: str, max_size: int) -> bytes:
    """Invert `compress`; raises TextCodingError on invalid input or more than `max_size` output bytes."""
    check_codec(codec)
    if codec == "lzw":
        try:
            return lzw.decompress(data, max_size)
        except lzw.LZWError as e:
            raise TextCodingError(str(e)) from None
    if codec == "zlib":
        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(data, max_size + 1)
        except zlib.error as e:
            raise TextCodingError(f"invalid deflate data: {e}") from None
        if len(out) > max_size:
            raise TextCodingError(f"deflate output exceeds {max_size} bytes")
        if not d.eof or d.unused_data:
            raise TextCodingError("invalid deflate data: truncated or trailing bytes")
        return out
    if codec == "brotli":
        import brotli  # loaded only by the codec that uses it

        d = brotli.Decompressor()
        try:
            out = d.process(data, output_buffer_limit=max_size + 1)
        except brotli.error as e:
            raise TextCodingError(f"invalid brotli data: {e}") from None
        if len(out) > max_size:
            raise TextCodingError(f"brotli output exceeds {max_size} bytes")
        if not d.is_finished():
            raise TextCodingError("invalid brotli data: truncated or trailing bytes")
        return out
    zstd, params, dict_data = _zstd_params(codec == "zstd-dict")
    kwargs = {"format": zstd.FORMAT_ZSTD1_MAGICLESS, "max_window_size": 1 << 20}
    if dict_data is not None:
        kwargs["dict_data"] = dict_data
    try:
        # Our frames carry no content size, so the output buffer is exactly `max_size` and a bomb fails.
        # A forged content size would override that buffer size, so such frames are refused first.
        if zstd.get_frame_parameters(data, format=zstd.FORMAT_ZSTD1_MAGICLESS).content_size != zstd.CONTENTSIZE_UNKNOWN:
            raise TextCodingError("invalid zstd data: unexpected content size field")
        return zstd.ZstdDecompressor(**kwargs).decompress(data, max_output_size=max_size)
    except zstd.ZstdError as e:
        raise TextCodingError(f"invalid zstd data: {e}") from None


def compress_text(text: str, codec: str) -> bytes:
    return compress(text.encode("utf-8", "surrogatepass"), codec)


def decompress_text(data: bytes, codec: str, max_size: int) -> str:
    out = decompress(data, codec, max_size)
    try:
        return out.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise TextCodingError(f"decoded text is not UTF-8: {e.reason}") from None
