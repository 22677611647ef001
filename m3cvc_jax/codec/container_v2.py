"""Bitstream container v2: the lean layout (docs/bitstream.md, "Version 2"); bytes <-> `bitstream.Bitstream`.

One CRC32 over the whole file replaces v1's per-section CRCs and lengths; absent texts and extras cost a flag
bit; preset, keyframe method, mode, text codec and entropy model are small codes; regularly spaced keyframes
are one interval. The reader has v1's guarantees: every length is checked against the bytes present, every
count bounded, and any invalid input raises BitstreamError.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import text_coding
from m3cvc_jax.codec.entropy import ENTROPY_MODEL_NAMES, ENTROPY_MODELS
from m3cvc_jax.errors import BitstreamError

MAGIC = b"M3"
VERSION = 2
PRESETS = ("", "tiny", "demo", "paper")  # code 0: the name follows as str8
METHODS = ("", "m3cvc", "semantic", "cmvc", "fixed")
FINGERPRINT_BYTES = 8
# Required (non-skippable) extra sections this reader understands, tag -> what it holds. A section a decoder
# cannot do without gets a tag here (docs/bitstream.md, "Extending the format"); readers that predate it
# refuse such streams with "needs a newer reader". Skippable extras need no entry.
REQUIRED_EXTRA_TAGS: dict[int, str] = {}

_MODE, _TEXTS, _REGULAR, _EXTRAS = 7, 8, 16, 32  # flags: mode code in bits 0-2


def regular_interval(keyframes: tuple[int, ...], num_frames: int) -> int:
    """i if the keyframes are exactly 0, i, 2i, ... below num_frames, else 0."""
    if len(keyframes) < 2:
        return num_frames if keyframes == (0,) else 0
    i = keyframes[1]
    return i if i >= 1 and keyframes == tuple(range(0, num_frames, i)) else 0


def _code(name: str, names: tuple[str, ...]) -> int:
    return names.index(name) if name in names[1:] else 0


def pack(stream: bs.Bitstream) -> bytes:
    """The v2 bytes of `stream` (validated as v1's `pack` does; the fingerprint must be 16 hex digits)."""
    bs.check_stream_content(stream, frozenset(REQUIRED_EXTRA_TAGS))
    h = stream.header
    if len(h.weights_fingerprint) != 2 * FINGERPRINT_BYTES:
        raise BitstreamError(f"cannot pack v2: the weights fingerprint must be {2 * FINGERPRINT_BYTES} hex digits")
    texts = stream.keyframe_texts + stream.clip_texts
    has_texts = any(texts) or bool(stream.clip_texts and len(stream.clip_texts) != _clips(h))
    interval = regular_interval(tuple(h.keyframes), h.num_frames)
    flags = (bs.MODES.index(h.mode) | (_TEXTS if has_texts else 0) | (_REGULAR if interval else 0)
             | (_EXTRAS if stream.extras else 0))
    pc, mc = _code(h.preset, PRESETS), _code(h.keyframe_method, METHODS)
    out = bytearray(MAGIC + bytes([VERSION, flags, pc << 4 | mc,
                                   text_coding.TEXT_CODECS[h.text_codec] | ENTROPY_MODELS[h.entropy_model] << 3]))
    out += (bs._str8(h.preset) if not pc else b"") + (bs._str8(h.keyframe_method) if not mc else b"")
    fps = bs._fps(h.fps)
    for v in (h.width, h.height, fps.numerator, fps.denominator, h.num_frames):
        out += bs._varint(v)
    if interval:
        out += bs._varint(interval)
    else:
        out += bs._varint(len(h.keyframes))
        out += b"".join(bs._varint(k if i == 0 else k - h.keyframes[i - 1]) for i, k in enumerate(h.keyframes))
    out += bytes.fromhex(h.weights_fingerprint) + bs._varint(h.seed)
    out += bs._varint(h.index_grid[0]) + bs._varint(h.index_grid[1]) + bs._varint(h.codebook_size)
    for blob in stream.index_data:
        if len(blob) % 4:
            raise BitstreamError("cannot pack v2: an index map is not a whole number of 32-bit words")
        out += bs._varint(len(blob) // 4) + bytes(blob)
    if has_texts:
        payload = bs.encode_texts(stream.keyframe_texts, stream.clip_texts, h.text_codec)
        out += bs._varint(len(payload)) + payload
    if stream.extras:
        out += bs._varint(len(stream.extras))
        for e in stream.extras:
            out += bytes([e.tag | (bs.SKIPPABLE if e.skippable else 0)]) + bs._varint(len(e.payload)) + e.payload
    return bytes(out + zlib.crc32(out).to_bytes(4, "little"))


def _clips(h: bs.Header) -> int:
    """Clips of a stream (as pipelines count them): one per keyframe not on the last frame."""
    return sum(1 for k in h.keyframes if k < h.num_frames - 1)


def unpack_with_bits(data: bytes) -> tuple[bs.Bitstream, bs.Bits]:
    if len(data) < len(MAGIC) + 1 + 4 or data[:2] != MAGIC or data[2] != VERSION:
        raise BitstreamError("not an m3cvc v2 bitstream")
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise BitstreamError("corrupt bitstream: CRC32 mismatch")
    r = bs._Reader(data[:-4], "header")
    r.take(3)
    flags, names, coding = r.u8(), r.u8(), r.u8()
    if flags >> 6 or coding >> 6:
        r.fail("reserved bits set")
    mode_id, pc, mc = flags & _MODE, names >> 4, names & 15
    if mode_id >= len(bs.MODES):
        r.fail(f"unknown mode code {mode_id}")
    if pc >= len(PRESETS) or mc >= len(METHODS):
        r.fail("unknown preset or keyframe method code")
    preset = PRESETS[pc] if pc else r.str8("preset")
    method = METHODS[mc] if mc else r.str8("keyframe method")
    if (not pc and preset in PRESETS[1:]) or (not mc and method in METHODS[1:]):
        r.fail("a coded name spelt out")  # one stream, one byte string
    codec_id, model_id = coding & 7, coding >> 3
    if codec_id not in text_coding.TEXT_CODEC_NAMES or model_id not in ENTROPY_MODEL_NAMES:
        r.fail("unknown text codec or entropy model id")
    width, height = r.varint(bs.MAX_DIM, "width"), r.varint(bs.MAX_DIM, "height")
    fps_num, fps_den = r.varint(bs.MAX_FPS_TERM, "fps numerator"), r.varint(bs.MAX_FPS_TERM, "fps denominator")
    num_frames = r.varint(bs.MAX_FRAMES, "num_frames")
    if fps_den == 0 or math.gcd(fps_num, fps_den) != 1:
        r.fail(f"fps {fps_num}/{fps_den} not a fraction in lowest terms")
    if flags & _REGULAR:
        interval = r.varint(bs.MAX_FRAMES, "keyframe interval")
        if interval < 1:
            r.fail("keyframe interval 0")
        keyframes = tuple(range(0, num_frames, interval))
    else:
        n = r.varint(bs.MAX_FRAMES, "keyframe count")
        if n > r.remaining():
            r.fail(f"keyframe count {n} exceeds the stream size")
        keyframes, pos = [], 0
        for i in range(n):
            step = r.varint(bs.MAX_FRAMES, "keyframe position")
            pos = step if i == 0 else pos + step
            keyframes.append(pos)
        keyframes = tuple(keyframes)
        if regular_interval(keyframes, num_frames):
            r.fail("regular keyframes listed one by one")
    fingerprint = r.take(FINGERPRINT_BYTES).hex()
    seed = r.varint((1 << 64) - 1, "seed")
    grid = (r.varint(bs.MAX_GRID, "index grid height"), r.varint(bs.MAX_GRID, "index grid width"))
    codebook = r.varint(bs.MAX_CODEBOOK, "codebook size")
    header = bs.Header(width=width, height=height, fps=Fraction(fps_num, fps_den), num_frames=num_frames,
                       keyframes=keyframes, mode=bs.MODES[mode_id], preset=preset,
                       weights_fingerprint=fingerprint, seed=seed, keyframe_method=method,
                       text_codec=text_coding.TEXT_CODEC_NAMES[codec_id], index_grid=grid, codebook_size=codebook,
                       entropy_model=ENTROPY_MODEL_NAMES[model_id])
    try:
        bs._check_header(header)
    except BitstreamError as e:
        r.fail(str(e))
    header_end = r.pos
    blobs = []
    for _ in keyframes:
        blobs.append(r.take(4 * r.varint(r.remaining() // 4, "index map length")))
    if header.mode in bs.TEXT_ONLY_MODES and any(blobs):
        r.fail(f"index map data in a {header.mode} stream")
    index_end = r.pos
    if flags & _TEXTS:
        kf_texts, clip_texts = bs.decode_texts(r.take(r.varint(r.remaining(), "texts length")), header.text_codec,
                                               len(keyframes))
        if not any(kf_texts + clip_texts) and len(clip_texts) == _clips(header):
            r.fail("empty texts stored")  # the writer sends them as the flag alone
    else:
        kf_texts, clip_texts = ("",) * len(keyframes), ("",) * _clips(header)
    text_end = r.pos
    extras = []
    if flags & _EXTRAS:
        count = r.varint(bs.MAX_SECTIONS, "extra count")
        if count < 1 or count > r.remaining():
            r.fail(f"extra count {count} out of range")
        for _ in range(count):
            tag = r.u8()
            payload = r.take(r.varint(r.remaining(), "extra length"))
            kind, skippable = tag & 0x7F, bool(tag & bs.SKIPPABLE)
            if kind < 3:
                r.fail(f"extra tag {kind} < 3")
            if not skippable and kind not in REQUIRED_EXTRA_TAGS:
                raise BitstreamError(f"bitstream needs a newer reader (required section type {kind})")
            extras.append(bs.ExtraSection(kind, payload, skippable))
    r.what = "end"
    r.done()
    stream = bs.Bitstream(header, kf_texts, clip_texts, tuple(blobs), tuple(extras), VERSION)
    bits = bs.Bits(header=8 * (header_end + 4), indices=8 * (index_end - header_end),
                   text=8 * (text_end - index_end), extra=8 * (r.pos - text_end), total=8 * len(data))
    return stream, bits
