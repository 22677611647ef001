"""Structure-aware mutation of v1 and v2 streams, shared by the fuzz tests and benchmarks/fuzz_bitstream.py.

Random bit flips mostly die at a CRC check; to exercise the parsers behind the CRCs, these helpers split a
valid stream into header body and section payloads and re-assemble mutated parts with correct lengths
and CRCs.
"""

from __future__ import annotations

import zlib

from m3cvc_jax.codec import bitstream as bs


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def split(data: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A valid stream -> (header body, [(tag, payload), ...])."""
    hlen, pos = _varint_at(data, 5)
    body = data[pos : pos + hlen]
    pos += hlen + 4
    sections = []
    while pos < len(data):
        tag = data[pos]
        n, pos = _varint_at(data, pos + 1)
        sections.append((tag, data[pos : pos + n]))
        pos += n + 4
    return body, sections


def assemble(body: bytes, sections: list[tuple[int, bytes]], version: int = bs.VERSION) -> bytes:
    head = bs.MAGIC + bytes([version]) + bs._varint(len(body)) + body
    out = head + zlib.crc32(head).to_bytes(4, "little")
    for tag, payload in sections:
        out += bs._section(tag, payload)
    return out


def mutate(blob: bytes, edits) -> bytes:
    """Apply (position, value, "set" | "insert" | "delete") edits; positions wrap around the blob."""
    out = bytearray(blob)
    for pos, value, mode in edits:
        if not out and mode != "insert":
            continue
        i = pos % (len(out) + 1 if mode == "insert" else len(out))
        if mode == "set":
            out[i] = value
        elif mode == "insert":
            out.insert(i, value)
        else:
            del out[i]
    return bytes(out)


def resign_v2(body: bytes) -> bytes:
    """A v2 stream from everything before its CRC32: the CRC recomputed, so mutations reach the parser."""
    return body + zlib.crc32(body).to_bytes(4, "little")


V2_START = b"\xb2"  # container v2: the byte 0xB0 | version


def is_v2(data: bytes) -> bool:
    return data[:1] == V2_START


def check_unpack(data: bytes) -> str:
    """The property: unpack either raises BitstreamError (one line) or returns a stream whose re-encoding
    comes back byte for byte (`repack_differs`). Returns "rejected", "accepted" or "accepted-different"
    (accepted, and only the compressed texts re-encode to other bytes)."""
    try:
        stream = bs.unpack(data)
    except bs.BitstreamError as e:
        assert str(e) and "\n" not in str(e)
        return "rejected"
    return "accepted-different" if repack_differs(data, stream) else "accepted"


def repack_differs(data: bytes, stream: bs.Bitstream) -> bool:
    """Check an accepted input against `pack` of what was read; True if the bytes differ at all.

    The header and the index and extra sections have exactly one encoding, so they must come back byte for
    byte. A text section is compressed, and a compressed payload is one of many that decode to the same
    texts (a forged one that still decompresses is a valid stream with other texts): there the bytes may
    differ, but the re-encoded stream must read back equal.
    """
    packed = bs.pack(stream, 2 if is_v2(data) else 1)
    if packed == data:
        return False
    assert bs.unpack(packed) == stream
    if is_v2(data):  # only a compressed texts field may re-encode differently
        bits = bs.unpack_with_bits(data)[1]
        before_texts = bits.header // 8 - 4  # the CRC, counted with the header, is at the end of the file
        after_texts = len(data) - (bits.extra + bits.weights + bits.colour + bits.indices) // 8 - 4
        assert data[1] & 8, "v2 re-encodes differently without texts"
        assert data[:before_texts] == packed[:before_texts], "v2 header re-encodes differently"
        assert data[after_texts:-4] == packed[len(packed) - (len(data) - after_texts):-4], "v2 extras/maps differ"
        return True
    body, sections = split(data)
    body2, sections2 = split(packed)
    assert body == body2, "header re-encodes differently"
    assert [t for t, _ in sections] == [t for t, _ in sections2]
    for (tag, payload), (_, payload2) in zip(sections, sections2):
        assert payload == payload2 or tag == bs.TAG_TEXTS, f"section {tag} re-encodes differently"
    return True
