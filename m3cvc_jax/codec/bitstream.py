"""Bitstream container v1 (and the dispatch to v2, `container_v2`): pure bytes <-> frozen dataclasses
(files: `io/bitstream_file.py`).

The exact byte layout is specified in docs/bitstream.md; keep the two in step. The reader trusts nothing:
every length is checked against the bytes actually present before use, every count against a fixed bound,
so corrupt input raises BitstreamError (never another exception), allocates no more than the input's size
(plus at most MAX_TEXT_BYTES of decoded text) and finishes in time linear in that.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from fractions import Fraction

from m3cvc_jax.codec import colour_means, it2v_weights, text_coding
from m3cvc_jax.codec.entropy import ENTROPY_MODEL_NAMES, ENTROPY_MODELS
from m3cvc_jax.errors import BitstreamError, ConfigError

MAGIC = b"M3CV"
LEAN_MAGIC_NIBBLE = 0xB  # versions >= 2 start with the byte 0xB0 | version (container_v2)
VERSION = 1  # the layout this module writes and reads itself; container_v2 holds version 2
WRITE_VERSION = 2  # what `write_bitstream` writes (`m3cvc encode`)
# The header's mode code: position in this tuple. One entry per `pipelines/modes.MODES` entry (a test checks
# it); append new modes at the end (codes are the format: never reorder). CMVC's modes have their codes.
MODES = ("interpolation", "prediction", "it2v", "tt2v")
# Modes whose streams carry no keyframe images: every index map is empty (texts are the whole content).
TEXT_ONLY_MODES = ("tt2v",)

TAG_TEXTS = 1
TAG_INDICES = 2
TAG_IT2V_WEIGHTS = 3  # required in (and only in) an it2v stream: the quantised w_i, w_l (codec/it2v_weights.py)
V1_REQUIRED_TAGS = frozenset({TAG_IT2V_WEIGHTS})  # the required extras v1 readers know
SKIPPABLE = 0x80  # tag flag: a reader that does not know the section may skip it

# Bounds a valid v1 stream stays within; larger values in a header mean corruption.
MAX_DIM = 1 << 15
MAX_FRAMES = 1 << 20
MAX_FPS_TERM = 1 << 20
MAX_GRID = 1 << 12
MAX_CODEBOOK = 1 << 16
MAX_STRING = 255
MAX_FINGERPRINT_BYTES = 32
MAX_SECTIONS = 1 << 10
MAX_TEXTS = 1 << 16
MAX_TEXT_BYTES = 1 << 20  # all decoded text of one stream
MAX_VARINT_BYTES = 10
MAX_FILE_BYTES = 1 << 26  # streams are kilobytes; this only stops a mistaken huge input early


@dataclasses.dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides texts and indices."""

    width: int
    height: int
    fps: Fraction
    num_frames: int
    keyframes: tuple[int, ...]
    mode: str
    preset: str
    weights_fingerprint: str  # hex digits, as `m3cvc_jax.weights.fingerprint` returns
    seed: int
    keyframe_method: str
    text_codec: str
    index_grid: tuple[int, int]
    codebook_size: int
    entropy_model: str


@dataclasses.dataclass(frozen=True)
class ExtraSection:
    """An optional section (tag 3..127); `skippable` ones are ignored by readers that do not know them."""

    tag: int
    payload: bytes
    skippable: bool = True


@dataclasses.dataclass(frozen=True)
class Bitstream:
    header: Header
    keyframe_texts: tuple[str, ...]  # one description D_F per keyframe
    clip_texts: tuple[str, ...]  # motion descriptions D_C
    # The entropy-coded index maps (codec/entropy.py): one payload per keyframe (`encode_indices`), or one
    # payload holding every keyframe's map (`encode_index_maps`, v2 only; what `m3cvc encode` writes).
    index_data: tuple[bytes, ...]
    extras: tuple[ExtraSection, ...] = ()
    version: int = dataclasses.field(default=VERSION, compare=False)  # the container it was read from


@dataclasses.dataclass(frozen=True)
class Bits:
    """Bits per part of a real stream; the parts add up to `total`, the file size in bits."""

    header: int
    text: int
    indices: int
    extra: int
    total: int
    weights: int = 0  # the IT2V weights section (mode it2v)
    colour: int = 0  # the mean-colour section (codec/colour_means.py), when the encoder sent it

    def bpp(self, header: Header) -> float:
        return self.total / (header.width * header.height * header.num_frames)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- writing


def _varint(value: int) -> bytes:
    if value < 0 or value >= 1 << 64:
        raise BitstreamError(f"cannot pack: value {value} outside [0, 2**64)")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _str8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > MAX_STRING:
        raise BitstreamError(f"cannot pack: string longer than {MAX_STRING} bytes: {text[:40]!r}...")
    return bytes([len(raw)]) + raw


def _fps(x) -> Fraction:
    """Floats by their decimal repr (29.97 -> 2997/100), not their binary value."""
    return Fraction(repr(x)) if isinstance(x, float) else Fraction(x)


def _check_header(h: Header) -> None:
    def bad(msg: str):
        raise BitstreamError(f"invalid header: {msg}")

    if not (1 <= h.width <= MAX_DIM and 1 <= h.height <= MAX_DIM):
        bad(f"size {h.width}x{h.height} outside 1..{MAX_DIM}")
    fps = _fps(h.fps)
    if fps <= 0 or fps.numerator > MAX_FPS_TERM or fps.denominator > MAX_FPS_TERM:
        bad(f"fps {fps} not a positive fraction with terms <= {MAX_FPS_TERM}")
    if not 1 <= h.num_frames <= MAX_FRAMES:
        bad(f"num_frames {h.num_frames} outside 1..{MAX_FRAMES}")
    k = h.keyframes
    if not k or any(not isinstance(x, numbers.Integral) for x in k):
        bad("at least one keyframe position (int) is required")
    if k[0] < 0 or k[-1] >= h.num_frames or any(b <= a for a, b in zip(k, k[1:])):
        bad(f"keyframes {list(k)} must increase strictly within [0, {h.num_frames})")
    if h.mode not in MODES:
        bad(f"mode {h.mode!r} not one of {MODES}")
    if h.mode == "it2v" and (k[0] != 0 or k[-1] != h.num_frames - 1):
        bad(f"an it2v stream has keyframes on its first and last frames, got {list(k)} of {h.num_frames}")
    try:
        fp = bytes.fromhex(h.weights_fingerprint)
    except ValueError:
        bad(f"weights fingerprint {h.weights_fingerprint!r} is not hex")
    if len(fp) > MAX_FINGERPRINT_BYTES or fp.hex() != h.weights_fingerprint.lower():
        bad(f"weights fingerprint {h.weights_fingerprint!r} must be up to {2 * MAX_FINGERPRINT_BYTES} hex digits")
    if not 0 <= h.seed < 1 << 64:
        bad(f"seed {h.seed} outside [0, 2**64)")
    if h.text_codec not in text_coding.TEXT_CODECS:
        bad(f"unknown text codec {h.text_codec!r}")
    if len(h.index_grid) != 2 or not all(1 <= g <= MAX_GRID for g in h.index_grid):
        bad(f"index grid {h.index_grid} outside 1..{MAX_GRID}")
    if not 2 <= h.codebook_size <= MAX_CODEBOOK:
        bad(f"codebook size {h.codebook_size} outside 2..{MAX_CODEBOOK}")
    if h.entropy_model not in ENTROPY_MODELS:
        bad(f"unknown entropy model {h.entropy_model!r}")


def _section(tag: int, payload: bytes) -> bytes:
    head = bytes([tag]) + _varint(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + payload + crc.to_bytes(4, "little")


def encode_texts(keyframe_texts, clip_texts, codec: str) -> bytes:
    """The texts-section payload: counts, then length-prefixed UTF-8 texts, coded as one blob by `codec`.

    Coding all descriptions of a stream together lets later ones reuse the vocabulary of earlier ones.
    """
    plain = bytearray(_varint(len(keyframe_texts)) + _varint(len(clip_texts)))
    for t in tuple(keyframe_texts) + tuple(clip_texts):
        raw = t.encode("utf-8", "surrogatepass")
        plain += _varint(len(raw)) + raw
    if len(plain) > MAX_TEXT_BYTES:
        raise BitstreamError(f"cannot pack: texts exceed {MAX_TEXT_BYTES} bytes")
    return text_coding.compress(bytes(plain), codec)


def check_stream_content(stream: Bitstream, required_tags=frozenset()) -> None:
    """Raise BitstreamError if `stream` cannot be written (what `pack` of either version refuses);
    `required_tags`: the non-skippable extras the container's readers know (none for v1)."""
    h = stream.header
    _check_header(h)
    if len(stream.keyframe_texts) != len(h.keyframes) or len(stream.index_data) not in (1, len(h.keyframes)):
        raise BitstreamError(
            f"cannot pack: {len(h.keyframes)} keyframes but {len(stream.keyframe_texts)} keyframe texts "
            f"and {len(stream.index_data)} index maps"
        )
    if len(stream.clip_texts) > MAX_TEXTS:
        raise BitstreamError(f"cannot pack: more than {MAX_TEXTS} clip texts")
    if h.mode in TEXT_ONLY_MODES and any(stream.index_data):
        raise BitstreamError(f"cannot pack: a {h.mode} stream carries no index maps")
    for e in stream.extras:
        if not 3 <= e.tag <= 127:
            raise BitstreamError(f"cannot pack: extra section tag {e.tag} outside 3..127")
        if not e.skippable and e.tag not in required_tags:
            raise BitstreamError(f"cannot pack: required extra section {e.tag} unknown to its readers")
    if 2 + len(stream.extras) > MAX_SECTIONS:
        raise BitstreamError(f"cannot pack: more than {MAX_SECTIONS} sections")
    check_it2v_weights(h, stream.extras, "cannot pack: ")
    check_mean_colours(h, stream.extras, "cannot pack: ")


COLOUR_TAGS = (colour_means.TAG_MEAN_COLOUR, colour_means.TAG_COLOUR_ANCHORS)  # counted as bits part `colour`


def mean_colour_section(extras) -> ExtraSection | None:
    """The mean-colour section of a stream's extras, or None (streams written without the correction)."""
    found = [e for e in extras if e.tag == colour_means.TAG_MEAN_COLOUR]
    return found[0] if found else None


def colour_anchor_section(extras) -> ExtraSection | None:
    """The colour-anchor section (means between keyframes), or None."""
    found = [e for e in extras if e.tag == colour_means.TAG_COLOUR_ANCHORS]
    return found[0] if found else None


def check_mean_colours(header: Header, extras, prefix: str = "corrupt bitstream: ") -> None:
    """At most one mean-colour section, skippable, with one valid (R, G, B) code per keyframe; at most one
    colour-anchor section, skippable, only beside it, valid for the header's frames and keyframes."""
    found = [e for e in extras if e.tag == colour_means.TAG_MEAN_COLOUR]
    anchors = [e for e in extras if e.tag == colour_means.TAG_COLOUR_ANCHORS]
    if not found and not anchors:
        return
    if len(found) != 1 or not found[0].skippable:
        raise BitstreamError(f"{prefix}mean colours: {len(found)} sections (one, skippable, allowed"
                             f"{', and needed by colour anchors' if anchors else ''})")
    if len(anchors) > 1 or (anchors and not anchors[0].skippable):
        raise BitstreamError(f"{prefix}colour anchors: {len(anchors)} sections (one, skippable, allowed)")
    try:
        _, bits = colour_means.unpack(found[0].payload, len(header.keyframes))
        if anchors:
            colour_means.unpack_anchors(anchors[0].payload, bits, header.keyframes, header.num_frames)
    except BitstreamError as e:
        raise BitstreamError(prefix + str(e).removeprefix("corrupt bitstream: ")) from None


def check_it2v_weights(header: Header, extras, prefix: str = "corrupt bitstream: ") -> None:
    """An it2v stream has exactly one valid IT2V weights section (codec/it2v_weights.py), other modes none."""
    weights = [e for e in extras if e.tag == TAG_IT2V_WEIGHTS and not e.skippable]
    if header.mode != "it2v":
        if weights:
            raise BitstreamError(f"{prefix}IT2V weights section in a {header.mode} stream")
        return
    if len(weights) != 1:
        raise BitstreamError(f"{prefix}an it2v stream needs one IT2V weights section, got {len(weights)}")
    it2v_weights.unpack(weights[0].payload, it2v_weights.inbetween_count(header.keyframes, header.num_frames))


def pack(stream: Bitstream, version: int = VERSION) -> bytes:
    """The bytes of `stream` in container `version` (1, or 2: the lean layout of `container_v2`)."""
    if version == 2:
        from m3cvc_jax.codec import container_v2

        return container_v2.pack(stream)
    if version != 1:
        raise BitstreamError(f"cannot pack: unknown bitstream version {version}")
    check_stream_content(stream, V1_REQUIRED_TAGS)
    h = stream.header
    if len(stream.index_data) != len(h.keyframes):
        raise BitstreamError("cannot pack v1: it stores one index payload per keyframe, not one for all (v2)")
    fps = _fps(h.fps)
    body = bytearray()
    for v in (h.width, h.height, fps.numerator, fps.denominator, h.num_frames, len(h.keyframes)):
        body += _varint(v)
    prev = 0
    for i, k in enumerate(h.keyframes):
        body += _varint(k if i == 0 else k - prev)
        prev = k
    body += bytes([MODES.index(h.mode)])
    body += _str8(h.preset)
    fp = bytes.fromhex(h.weights_fingerprint)
    body += bytes([len(fp)]) + fp
    body += _varint(h.seed)
    body += _str8(h.keyframe_method)
    body += bytes([text_coding.TEXT_CODECS[h.text_codec]])
    body += _varint(h.index_grid[0]) + _varint(h.index_grid[1]) + _varint(h.codebook_size)
    body += bytes([ENTROPY_MODELS[h.entropy_model]])
    body += _varint(2 + len(stream.extras))
    head = MAGIC + bytes([VERSION]) + _varint(len(body)) + bytes(body)
    out = bytearray(head + zlib.crc32(head).to_bytes(4, "little"))

    out += _section(TAG_TEXTS, encode_texts(stream.keyframe_texts, stream.clip_texts, h.text_codec))
    idx = bytearray(_varint(len(stream.index_data)))
    for blob in stream.index_data:
        idx += _varint(len(blob)) + bytes(blob)
    out += _section(TAG_INDICES, bytes(idx))
    for e in stream.extras:
        out += _section(e.tag | (SKIPPABLE if e.skippable else 0), bytes(e.payload))
    return bytes(out)


# ---------------------------------------------------------------------------------------------- reading


class _Reader:
    """Bounds-checked cursor over bytes; every failure is a BitstreamError naming `what`."""

    def __init__(self, data: bytes, what: str):
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, msg: str):
        raise BitstreamError(f"corrupt bitstream: {self.what}: {msg}")

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining():
            self.fail(f"truncated (needs {n} bytes at offset {self.pos}, {self.remaining()} left)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self, limit: int, name: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    self.fail(f"{name}: non-minimal varint")
                if value > limit:
                    self.fail(f"{name} = {value} exceeds {limit}")
                return value
        self.fail(f"{name}: varint longer than {MAX_VARINT_BYTES} bytes")

    def str8(self, name: str) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{name} is not UTF-8")

    def done(self) -> None:
        if self.remaining():
            self.fail(f"{self.remaining()} unexpected trailing bytes")


def _read_header(r: _Reader) -> tuple[Header, int]:
    width = r.varint(MAX_DIM, "width")
    height = r.varint(MAX_DIM, "height")
    fps_num = r.varint(MAX_FPS_TERM, "fps numerator")
    fps_den = r.varint(MAX_FPS_TERM, "fps denominator")
    num_frames = r.varint(MAX_FRAMES, "num_frames")
    nkey = r.varint(MAX_FRAMES, "keyframe count")
    if nkey > r.remaining():  # each position takes at least one byte
        r.fail(f"keyframe count {nkey} exceeds the header size")
    keyframes = []
    pos = 0
    for i in range(nkey):
        step = r.varint(MAX_FRAMES, "keyframe position")
        pos = step if i == 0 else pos + step
        keyframes.append(pos)
    mode_id = r.u8()
    if mode_id >= len(MODES):
        r.fail(f"unknown reconstruction mode {mode_id}")
    preset = r.str8("preset")
    nfp = r.u8()
    if nfp > MAX_FINGERPRINT_BYTES:
        r.fail(f"fingerprint length {nfp} exceeds {MAX_FINGERPRINT_BYTES}")
    fingerprint = r.take(nfp).hex()
    seed = r.varint((1 << 64) - 1, "seed")
    keyframe_method = r.str8("keyframe method")
    codec_id = r.u8()
    if codec_id not in text_coding.TEXT_CODEC_NAMES:
        r.fail(f"unknown text codec id {codec_id}")
    grid = (r.varint(MAX_GRID, "index grid height"), r.varint(MAX_GRID, "index grid width"))
    codebook = r.varint(MAX_CODEBOOK, "codebook size")
    model_id = r.u8()
    if model_id not in ENTROPY_MODEL_NAMES:
        r.fail(f"unknown entropy model id {model_id}")
    nsections = r.varint(MAX_SECTIONS, "section count")
    r.done()
    if fps_den == 0:
        r.fail("fps denominator is zero")
    if math.gcd(fps_num, fps_den) != 1:  # writers store lowest terms: one stream, one byte string
        r.fail(f"fps {fps_num}/{fps_den} not in lowest terms")
    header = Header(
        width=width,
        height=height,
        fps=Fraction(fps_num, fps_den),
        num_frames=num_frames,
        keyframes=tuple(keyframes),
        mode=MODES[mode_id],
        preset=preset,
        weights_fingerprint=fingerprint,
        seed=seed,
        keyframe_method=keyframe_method,
        text_codec=text_coding.TEXT_CODEC_NAMES[codec_id],
        index_grid=grid,
        codebook_size=codebook,
        entropy_model=ENTROPY_MODEL_NAMES[model_id],
    )
    try:
        _check_header(header)
    except BitstreamError as e:
        r.fail(str(e))
    if nsections < 2:
        r.fail(f"section count {nsections} < 2")
    return header, nsections


def decode_texts(payload: bytes, codec: str, num_keyframes: int | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Invert `encode_texts`: (keyframe texts, clip texts); BitstreamError on anything invalid."""
    try:
        plain = text_coding.decompress(payload, codec, MAX_TEXT_BYTES)
    except (text_coding.TextCodingError, ConfigError) as e:
        raise BitstreamError(f"corrupt bitstream: texts: {e}") from None
    r = _Reader(plain, "texts")
    nk = r.varint(MAX_TEXTS, "keyframe text count")
    nc = r.varint(MAX_TEXTS, "clip text count")
    if num_keyframes is not None and nk != num_keyframes:
        r.fail(f"{nk} keyframe texts for {num_keyframes} keyframes")
    texts = []
    for _ in range(nk + nc):
        raw = r.take(r.varint(MAX_TEXT_BYTES, "text length"))
        try:
            texts.append(raw.decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            r.fail("a text is not UTF-8")
    r.done()
    return tuple(texts[:nk]), tuple(texts[nk:])


def _read_indices(payload: bytes, header: Header) -> tuple[bytes, ...]:
    r = _Reader(payload, "indices")
    n = r.varint(MAX_FRAMES, "index map count")
    if n != len(header.keyframes):
        r.fail(f"{n} index maps for {len(header.keyframes)} keyframes")
    blobs = tuple(r.take(r.varint(len(payload), "index map length")) for _ in range(n))
    r.done()
    if header.mode in TEXT_ONLY_MODES and any(blobs):
        r.fail(f"index map data in a {header.mode} stream")
    return blobs


def unpack_with_bits(data: bytes) -> tuple[Bitstream, Bits]:
    """Parse v1 bytes into a Bitstream and the bits each part occupies."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("bitstream must be bytes")
    data = bytes(data)
    if data[:1] and data[0] >> 4 == LEAN_MAGIC_NIBBLE:  # v2 and later: one byte 0xB0 | version
        from m3cvc_jax.codec import container_v2

        if data[0] & 15 != container_v2.VERSION:
            raise BitstreamError(f"unsupported bitstream version {data[0] & 15} (this reader handles 1 and 2)")
        return container_v2.unpack_with_bits(data)
    r = _Reader(data, "header")
    if r.remaining() < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not an m3cvc bitstream (bad magic)")
    r.take(len(MAGIC))
    version = r.u8()
    if version != VERSION:
        raise BitstreamError(f"unsupported bitstream version {version} (this reader handles {VERSION})")
    body = r.take(r.varint(len(data), "header length"))
    head_end = r.pos
    crc = int.from_bytes(r.take(4), "little")
    if zlib.crc32(data[:head_end]) != crc:
        raise BitstreamError("corrupt bitstream: header CRC32 mismatch")
    header, nsections = _read_header(_Reader(body, "header"))
    header_bits = 8 * r.pos

    sizes = {"text": 0, "indices": 0, "extra": 0, "weights": 0, "colour": 0}
    texts = indices = None
    extras = []
    for i in range(nsections):
        start = r.pos
        r.what = f"section {i}"
        tag = r.u8()
        payload = r.take(r.varint(len(data), "section length"))
        crc = int.from_bytes(r.take(4), "little")
        if zlib.crc32(data[start : r.pos - 4]) != crc:
            r.fail("CRC32 mismatch")
        kind, skippable = tag & 0x7F, bool(tag & SKIPPABLE)
        expected = TAG_TEXTS if i == 0 else TAG_INDICES if i == 1 else None
        if expected is not None and (kind != expected or skippable):
            r.fail(f"tag {tag} where the {'texts' if i == 0 else 'indices'} section belongs")
        if kind == TAG_TEXTS and i == 0:
            texts = decode_texts(payload, header.text_codec, len(header.keyframes))
            sizes["text"] += 8 * (r.pos - start)
        elif kind == TAG_INDICES and i == 1:
            indices = _read_indices(payload, header)
            sizes["indices"] += 8 * (r.pos - start)
        elif kind < 3 or (kind == TAG_IT2V_WEIGHTS and sizes["weights"]):
            r.fail(f"duplicate section tag {kind}")
        elif kind == TAG_IT2V_WEIGHTS and not skippable:
            if header.mode != "it2v":
                r.fail(f"IT2V weights section in a {header.mode} stream")
            it2v_weights.unpack(payload, it2v_weights.inbetween_count(header.keyframes, header.num_frames))
            extras.append(ExtraSection(kind, payload, False))
            sizes["weights"] += 8 * (r.pos - start)
        elif skippable:
            extras.append(ExtraSection(kind, payload, skippable))
            sizes["colour" if kind in COLOUR_TAGS else "extra"] += 8 * (r.pos - start)
        else:
            raise BitstreamError(f"bitstream needs a newer reader (required section type {kind})")
    r.what = "end"
    r.done()
    check_it2v_weights(header, extras)
    check_mean_colours(header, extras)
    stream = Bitstream(header, texts[0], texts[1], indices, tuple(extras))
    bits = Bits(header=header_bits, total=8 * len(data), **sizes)
    return stream, bits


def unpack(data: bytes) -> Bitstream:
    """Parse v1 bytes; anything invalid raises BitstreamError."""
    return unpack_with_bits(data)[0]


def check_fingerprint(header: Header, fingerprint: str, preset: str | None = None) -> None:
    """Refuse a stream made with other weights than the decoder holds, naming both fingerprints."""
    # v2 streams carry a prefix of the fingerprint (2 bytes); v1 streams all of it.
    if not header.weights_fingerprint or not fingerprint.lower().startswith(header.weights_fingerprint.lower()):
        have = f"{fingerprint}" + (f" (preset {preset!r})" if preset else "")
        raise BitstreamError(
            f"bitstream was made with weights {header.weights_fingerprint or '<none>'} "
            f"(preset {header.preset!r}) but the decoder holds {have}"
        )
