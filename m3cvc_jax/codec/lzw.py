"""LZW text coding (the M3-CVC paper codes its descriptions with LZW), on UTF-8 bytes.

Code-width scheme (both sides derive it from the code's position alone, so no width changes are signalled):
- the dictionary starts with the 256 single bytes; after each emitted code except the last the encoder
  adds one entry (the previous match plus the next byte) until the dictionary holds `2**MAX_WIDTH` entries,
  after which it is frozen;
- the i-th code (i = 0, 1, ...) can be at most `min(255 + i, 2**MAX_WIDTH - 1)`, so it is written with
  exactly `bit_length` of that many bits: 8 bits for the first code, 9 from the second, growing by one bit
  each time the bound reaches the next power of two (the decoder may meet the "KwKwK" code equal to its
  next free entry, which this bound already covers);
- codes are packed most-significant bit first; the last byte is zero-padded. Padding is shorter than any
  code (< 8 bits, codes are >= 8 bits), so no end code is needed: a decoder reads codes while at least one
  full code remains, and rejects non-zero padding or 8+ leftover bits.
Text is coded as UTF-8 with `surrogatepass`, so every Python `str` round-trips.
"""

from __future__ import annotations

MAX_WIDTH = 16
_MAX_ENTRIES = 1 << MAX_WIDTH


class LZWError(ValueError):
    """The bytes are not a valid LZW stream (or would decode to more than the allowed size)."""


def _width(i: int) -> int:
    return min(255 + i, _MAX_ENTRIES - 1).bit_length()


def compress(data: bytes) -> bytes:
    """LZW-code `data` into a bit-packed byte string."""
    if not data:
        return b""
    table: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    codes: list[int] = []
    match = data[:1]
    for b in data[1:]:
        candidate = match + bytes([b])
        if candidate in table:
            match = candidate
            continue
        codes.append(table[match])
        if len(table) < _MAX_ENTRIES:
            table[candidate] = len(table)
        match = bytes([b])
    codes.append(table[match])

    acc = 0
    nbits = 0
    out = bytearray()
    for i, code in enumerate(codes):
        w = _width(i)
        acc = (acc << w) | code
        nbits += w
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append((acc << (8 - nbits)) & 0xFF)
    return bytes(out)


def decompress(data: bytes, max_size: int | None = None) -> bytes:
    """Invert `compress`; raises LZWError on an invalid stream or output beyond `max_size` bytes."""
    if not data:
        return b""
    table: list[bytes] = [bytes([b]) for b in range(256)]
    out = bytearray()
    acc = 0  # bits read but not consumed yet, the oldest most significant
    nbits = 0
    byte_pos = 0
    i = 0
    prev: bytes | None = None
    while True:
        w = _width(i)
        while nbits < w and byte_pos < len(data):
            acc = (acc << 8) | data[byte_pos]
            byte_pos += 1
            nbits += 8
        if nbits < w:
            break
        nbits -= w
        code = acc >> nbits
        acc &= (1 << nbits) - 1
        if code < len(table):
            entry = table[code]
        elif code == len(table) and prev is not None and len(table) < _MAX_ENTRIES:
            entry = prev + prev[:1]
        else:
            raise LZWError(f"invalid LZW code {code} at position {i}")
        out += entry
        if max_size is not None and len(out) > max_size:
            raise LZWError(f"LZW output exceeds {max_size} bytes")
        if prev is not None and len(table) < _MAX_ENTRIES:
            table.append(prev + entry[:1])
        prev = entry
        i += 1
    if nbits >= 8 or acc:
        raise LZWError("invalid LZW padding")
    return bytes(out)


def compress_text(text: str) -> bytes:
    return compress(text.encode("utf-8", "surrogatepass"))


def decompress_text(data: bytes, max_size: int | None = None) -> str:
    try:
        return decompress(data, max_size).decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise LZWError(f"LZW output is not UTF-8: {e.reason}") from None
