"""Bitstream container v2: the lean layout (docs/bitstream.md, "Version 2"); bytes <-> `bitstream.Bitstream`.

Everything a stream of the usual shape needs fits in codes: one byte of magic and version, three of flags
and small codes (mode, preset, keyframe method, text codec, entropy model, pixels per index, frame rate),
the index grid (the frame size is grid x pixels per index), frame count, keyframe interval, two bytes of
the weights fingerprint and one CRC32 over the file; the index maps come last, as one range-coded payload
(`entropy.encode_index_maps`) whose length is implied (streams with one payload per keyframe, e.g. read
from v1, list all but the last one's length). Unusual values (a frame size off the grid, a codebook other
than 256 words, a frame rate without a code, listed keyframes, a seed, spelt-out names) cost bytes only
when used. There is exactly one encoding of a stream (the reader refuses the others). The reader has v1's
guarantees: every length is checked against the bytes present, every count bounded, and any invalid
input raises BitstreamError.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import text_coding
from m3cvc_jax.codec.entropy import ENTROPY_MODEL_NAMES, ENTROPY_MODELS
from m3cvc_jax.errors import BitstreamError

MAGIC_NIBBLE = bs.LEAN_MAGIC_NIBBLE  # byte 0 = 0xB0 | version; v1 files start with "M3CV" (0x4D)
VERSION = 2
PRESETS = ("", "tiny", "demo", "paper")  # code 0: the name follows as str8
METHODS = ("", "m3cvc", "semantic", "cmvc", "fixed")  # 3-bit code, 0: spelt out
FRAME_RATES = (None, Fraction(8), Fraction(12), Fraction(24), Fraction(25), Fraction(30), Fraction(30000, 1001),
               Fraction(60))  # 3-bit code (MPEG-2's frame_rate_code idea); 0: numerator, denominator follow
PIXELS_PER_INDEX = (4, 8, 16, 32)  # 2-bit code: frame size = index grid x this (unless flagged explicit)
DEFAULT_CODEBOOK = 256
FINGERPRINT_BYTES = 2  # a prefix of the weights fingerprint: tells other weights apart (the CRC does corruption)
# Required (non-skippable) extra sections this reader understands, tag -> what it holds. A section a decoder
# cannot do without gets a tag here (docs/bitstream.md, "Extending the format"); readers that predate it
# refuse such streams with "needs a newer reader". Skippable extras need no entry.
REQUIRED_EXTRA_TAGS: dict[int, str] = {bs.TAG_IT2V_WEIGHTS: "IT2V weights w_i, w_l (codec/it2v_weights.py)"}

# flags byte
_MODE, _TEXTS, _EXTRAS, _LISTED, _SEED, _EXPLICIT = 7, 8, 16, 32, 64, 128
_PER_MAP = 128  # coding byte: one payload per keyframe instead of one for all


def regular_interval(keyframes: tuple[int, ...], num_frames: int) -> int:
    """i if the keyframes are exactly 0, i, 2i, ... below num_frames, else 0."""
    if len(keyframes) < 2:
        return num_frames if keyframes == (0,) else 0
    i = keyframes[1]
    return i if i >= 1 and keyframes == tuple(range(0, num_frames, i)) else 0


def _code(name: str, names: tuple[str, ...]) -> int:
    return names.index(name) if name in names[1:] else 0


def _size_code(h: bs.Header) -> int | None:
    """The pixels-per-index code if width and height are exactly the grid times it, else None."""
    rows, cols = h.index_grid
    for code, p in enumerate(PIXELS_PER_INDEX):
        if (h.width, h.height) == (cols * p, rows * p):
            return code
    return None


def pack(stream: bs.Bitstream) -> bytes:
    """The v2 bytes of `stream` (validated as v1's `pack` does); the fingerprint keeps its first 2 bytes."""
    bs.check_stream_content(stream, frozenset(REQUIRED_EXTRA_TAGS))
    h = stream.header
    fingerprint = bytes.fromhex(h.weights_fingerprint)
    if len(fingerprint) < FINGERPRINT_BYTES:
        raise BitstreamError(f"cannot pack v2: the weights fingerprint needs >= {2 * FINGERPRINT_BYTES} hex digits")
    texts = stream.keyframe_texts + stream.clip_texts
    has_texts = any(texts) or len(stream.clip_texts) != _clips(h)
    interval = regular_interval(tuple(h.keyframes), h.num_frames)
    size_code = _size_code(h)
    explicit = size_code is None or h.codebook_size != DEFAULT_CODEBOOK
    fps = bs._fps(h.fps)
    rate_code = FRAME_RATES.index(fps) if fps in FRAME_RATES[1:] else 0
    flags = (bs.MODES.index(h.mode) | (_TEXTS if has_texts else 0) | (_EXTRAS if stream.extras else 0)
             | (0 if interval else _LISTED) | (_SEED if h.seed else 0) | (_EXPLICIT if explicit else 0))
    pc, mc = _code(h.preset, PRESETS), _code(h.keyframe_method, METHODS)
    names = pc | mc << 2 | text_coding.TEXT_CODECS[h.text_codec] << 5
    per_map = len(stream.index_data) > 1
    coding = (ENTROPY_MODELS[h.entropy_model] | (0 if explicit else size_code) << 2 | rate_code << 4
              | (_PER_MAP if per_map else 0))
    out = bytearray([MAGIC_NIBBLE << 4 | VERSION, flags, names, coding])
    out += (bs._str8(h.preset) if not pc else b"") + (bs._str8(h.keyframe_method) if not mc else b"")
    if explicit:
        out += bs._varint(h.width) + bs._varint(h.height) + bs._varint(h.codebook_size)
    if not rate_code:
        out += bs._varint(fps.numerator) + bs._varint(fps.denominator)
    out += bs._varint(h.index_grid[0]) + bs._varint(h.index_grid[1]) + bs._varint(h.num_frames)
    if interval:
        out += bs._varint(interval)
    else:
        out += bs._varint(len(h.keyframes))
        out += b"".join(bs._varint(k if i == 0 else k - h.keyframes[i - 1]) for i, k in enumerate(h.keyframes))
    out += fingerprint[:FINGERPRINT_BYTES]
    if h.seed:
        out += bs._varint(h.seed)
    if has_texts:
        payload = bs.encode_texts(stream.keyframe_texts, stream.clip_texts, h.text_codec)
        out += bs._varint(len(payload)) + payload
    if stream.extras:
        out += bs._varint(len(stream.extras))
        for e in stream.extras:
            out += bytes([e.tag | (bs.SKIPPABLE if e.skippable else 0)]) + bs._varint(len(e.payload)) + e.payload
    for i, blob in enumerate(stream.index_data):
        if len(blob) % 4:
            raise BitstreamError("cannot pack v2: an index map is not a whole number of 32-bit words")
        out += (bs._varint(len(blob) // 4) if i < len(stream.index_data) - 1 else b"") + bytes(blob)
    return bytes(out + zlib.crc32(out).to_bytes(4, "little"))


def _clips(h: bs.Header) -> int:
    """Clips of a stream (as pipelines count them): one per keyframe not on the last frame."""
    return sum(1 for k in h.keyframes if k < h.num_frames - 1)


def unpack_with_bits(data: bytes) -> tuple[bs.Bitstream, bs.Bits]:
    if len(data) < 4 + 4 or data[0] != MAGIC_NIBBLE << 4 | VERSION:
        raise BitstreamError("not an m3cvc v2 bitstream")
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise BitstreamError("corrupt bitstream: CRC32 mismatch")
    r = bs._Reader(data[:-4], "header")
    r.take(1)
    flags, names, coding = r.u8(), r.u8(), r.u8()
    mode_id, pc, mc, codec_id = flags & _MODE, names & 3, names >> 2 & 7, names >> 5
    model_id, size_code, rate_code = coding & 3, coding >> 2 & 3, coding >> 4 & 7
    if mode_id >= len(bs.MODES):
        r.fail(f"unknown mode code {mode_id}")
    if mc >= len(METHODS):
        r.fail("unknown keyframe method code")
    if codec_id not in text_coding.TEXT_CODEC_NAMES or model_id not in ENTROPY_MODEL_NAMES:
        r.fail("unknown text codec or entropy model id")
    preset = PRESETS[pc] if pc else r.str8("preset")
    method = METHODS[mc] if mc else r.str8("keyframe method")
    if (not pc and preset in PRESETS[1:]) or (not mc and method in METHODS[1:]):
        r.fail("a coded name spelt out")  # one stream, one byte string
    if flags & _EXPLICIT:
        width, height = r.varint(bs.MAX_DIM, "width"), r.varint(bs.MAX_DIM, "height")
        codebook = r.varint(bs.MAX_CODEBOOK, "codebook size")
    if rate_code:
        fps = FRAME_RATES[rate_code]
    else:
        fps_num, fps_den = r.varint(bs.MAX_FPS_TERM, "fps numerator"), r.varint(bs.MAX_FPS_TERM, "fps denominator")
        if fps_den == 0 or math.gcd(fps_num, fps_den) != 1:
            r.fail(f"fps {fps_num}/{fps_den} not a fraction in lowest terms")
        fps = Fraction(fps_num, fps_den)
        if fps in FRAME_RATES[1:]:
            r.fail("a coded frame rate spelt out")
    grid = (r.varint(bs.MAX_GRID, "index grid height"), r.varint(bs.MAX_GRID, "index grid width"))
    if flags & _EXPLICIT:
        if size_code:
            r.fail("pixels-per-index code with an explicit frame size")
    else:
        width, height = grid[1] * PIXELS_PER_INDEX[size_code], grid[0] * PIXELS_PER_INDEX[size_code]
        codebook = DEFAULT_CODEBOOK
    num_frames = r.varint(bs.MAX_FRAMES, "num_frames")
    if not flags & _LISTED:
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
    seed = 0
    if flags & _SEED:
        seed = r.varint((1 << 64) - 1, "seed")
        if seed == 0:
            r.fail("seed flag with seed 0")
    header = bs.Header(width=width, height=height, fps=fps, num_frames=num_frames, keyframes=keyframes,
                       mode=bs.MODES[mode_id], preset=preset, weights_fingerprint=fingerprint, seed=seed,
                       keyframe_method=method, text_codec=text_coding.TEXT_CODEC_NAMES[codec_id], index_grid=grid,
                       codebook_size=codebook, entropy_model=ENTROPY_MODEL_NAMES[model_id])
    try:
        bs._check_header(header)
    except BitstreamError as e:
        r.fail(str(e))
    if flags & _EXPLICIT and _size_code(header) is not None and codebook == DEFAULT_CODEBOOK:
        r.fail("explicit frame size and codebook that have codes")
    header_end = r.pos
    r.what = "texts"
    if flags & _TEXTS:
        kf_texts, clip_texts = bs.decode_texts(r.take(r.varint(r.remaining(), "texts length")), header.text_codec,
                                               len(keyframes))
        if not any(kf_texts + clip_texts) and len(clip_texts) == _clips(header):
            r.fail("empty texts stored")  # the writer sends them as the flag alone
    else:
        kf_texts, clip_texts = ("",) * len(keyframes), ("",) * _clips(header)
    text_end = r.pos
    r.what = "extras"
    extras = []
    weights_bits = colour_bits = 0  # the IT2V weights and mean-colour extras, each reported as its own part
    if flags & _EXTRAS:
        count = r.varint(bs.MAX_SECTIONS, "extra count")
        if count < 1 or count > r.remaining():
            r.fail(f"extra count {count} out of range")
        for _ in range(count):
            start = r.pos
            tag = r.u8()
            payload = r.take(r.varint(r.remaining(), "extra length"))
            kind, skippable = tag & 0x7F, bool(tag & bs.SKIPPABLE)
            if kind < 3:
                r.fail(f"extra tag {kind} < 3")
            if not skippable and kind not in REQUIRED_EXTRA_TAGS:
                raise BitstreamError(f"bitstream needs a newer reader (required section type {kind})")
            extras.append(bs.ExtraSection(kind, payload, skippable))
            if kind == bs.TAG_IT2V_WEIGHTS and not skippable:
                weights_bits += 8 * (r.pos - start)
            if kind in bs.COLOUR_TAGS:
                colour_bits += 8 * (r.pos - start)
    extra_end = r.pos
    r.what = "index maps"
    blobs = []
    if coding & _PER_MAP:
        if len(keyframes) < 2:
            r.fail("one keyframe's map flagged as per-keyframe payloads")
        for _ in keyframes[:-1]:
            blobs.append(r.take(4 * r.varint(r.remaining() // 4, "index map length")))
    if r.remaining() % 4:
        r.fail("the last index map is not a whole number of 32-bit words")
    blobs.append(r.take(r.remaining()))
    if header.mode in bs.TEXT_ONLY_MODES and any(blobs):
        r.fail(f"index map data in a {header.mode} stream")
    bs.check_it2v_weights(header, extras)
    bs.check_mean_colours(header, extras)
    stream = bs.Bitstream(header, kf_texts, clip_texts, tuple(blobs), tuple(extras), VERSION)
    bits = bs.Bits(header=8 * (header_end + 4), indices=8 * (r.pos - extra_end), text=8 * (text_end - header_end),
                   extra=8 * (extra_end - text_end) - weights_bits - colour_bits, total=8 * len(data),
                   weights=weights_bits, colour=colour_bits)
    return stream, bits
