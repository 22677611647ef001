import dataclasses
import os
import zlib
from fractions import Fraction

import numpy as np
import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.entropy import decode_indices
from m3cvc_jax.codec.text_coding import TEXT_CODECS
from m3cvc_jax.errors import BitstreamError
from m3cvc_jax.io import bitstream_file as bsf
from tests.bitstream_sample import GRID, MODEL, sample_bytes, sample_maps, sample_stream


@pytest.mark.parametrize("codec", sorted(TEXT_CODECS))
def test_round_trip_every_text_codec(codec):
    s = sample_stream(codec)
    data = bs.pack(s)
    assert bs.unpack(data) == s
    assert data[:4] == b"M3CV" and data[4] == 1
    assert bs.pack(bs.unpack(data)) == data  # canonical: re-packing reproduces the bytes


def test_index_maps_survive_the_container():
    s = bs.unpack(bs.pack(sample_stream()))
    for blob, ref in zip(s.index_data, sample_maps()):
        np.testing.assert_array_equal(decode_indices(blob, GRID, MODEL), ref)


def test_bits_add_up_to_the_file_size(tmp_path):
    s = sample_stream(extras=(bs.ExtraSection(9, b"x" * 100),))
    path = tmp_path / "a.m3cvc"
    bits = bsf.write_bitstream(path, s)
    size = os.path.getsize(path)
    assert bits.total == 8 * size
    assert bits.header + bits.text + bits.indices + bits.extra == bits.total
    assert bits.extra == 8 * (1 + 1 + 1 + 100)  # written as v2: extra count, tag, length varint, payload
    assert bits.bpp(s.header) == 8 * size / (512 * 320 * 40)
    s2, bits2 = bsf.read_bitstream_with_bits(path)
    assert s2.header.weights_fingerprint == s.header.weights_fingerprint[:4]  # v2 keeps 2 bytes of it
    assert dataclasses.replace(s2, header=s.header) == s and bits2 == bits


def test_unknown_skippable_section_is_kept_and_required_one_refused():
    data = bs.pack(sample_stream())
    # Append a section of an unknown required type by hand (bumping the header's section count).
    s = bs.unpack(data)
    with pytest.raises(BitstreamError, match="unknown to its readers"):
        bs.pack(dataclasses.replace(s, extras=(bs.ExtraSection(50, b"zz", skippable=False),)))
    with_extra = bs.pack(dataclasses.replace(s, extras=(bs.ExtraSection(50, b"zz"),)))
    assert bs.unpack(with_extra).extras == (bs.ExtraSection(50, b"zz", True),)
    # Clear the skippable flag of that last section and fix its CRC: a v1 reader must refuse it.
    tail = bytearray(with_extra[-(1 + 1 + 2 + 4) :])
    tail[0] = 50
    tail[-4:] = zlib.crc32(bytes(tail[:-4])).to_bytes(4, "little")
    forged = with_extra[: -len(tail)] + bytes(tail)
    with pytest.raises(BitstreamError, match="newer reader"):
        bs.unpack(forged)


def test_header_crc_and_section_crc_detect_a_flip():
    data = bytearray(sample_bytes())
    for pos, msg in ((8, "header CRC32"), (len(data) - 10, "CRC32")):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(BitstreamError, match=msg):
            bs.unpack(bytes(bad))


@pytest.mark.parametrize(
    "data, msg",
    [(b"", "bad magic"), (b"RIFF1234", "bad magic"), (b"M3CV\x02", "version 2"), (b"M3CV\x01", "truncated")],
)
def test_foreign_and_future_streams(data, msg):
    with pytest.raises(BitstreamError, match=msg):
        bs.unpack(data)


def test_truncation_at_a_section_boundary_is_detected():
    data = sample_bytes()
    s, bits = bs.unpack_with_bits(data)
    without_extra = data[: -(bits.extra // 8)]
    with pytest.raises(BitstreamError, match="truncated"):
        bs.unpack(without_extra)


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"keyframes": (0, 0)}, "increase strictly"),
        ({"keyframes": (0, 40)}, "increase strictly"),
        ({"width": 0}, "size"),
        ({"mode": "sideways"}, "mode"),
        ({"weights_fingerprint": "xyz"}, "not hex"),
        ({"fps": Fraction(0)}, "fps"),
        ({"text_codec": "gzip"}, "text codec"),
        ({"entropy_model": "gpt"}, "entropy model"),
    ],
)
def test_pack_refuses_invalid_headers(change, msg):
    s = sample_stream()
    with pytest.raises(BitstreamError, match=msg):
        bs.pack(dataclasses.replace(s, header=dataclasses.replace(s.header, **change)))


def test_pack_refuses_mismatched_counts():
    s = sample_stream()
    with pytest.raises(BitstreamError, match="3 keyframes but 2 keyframe texts"):
        bs.pack(dataclasses.replace(s, keyframe_texts=s.keyframe_texts[:2]))


def test_fps_is_rational():
    s = sample_stream()
    s = dataclasses.replace(s, header=dataclasses.replace(s.header, fps=Fraction(30000, 1001)))
    assert bs.unpack(bs.pack(s)).header.fps == Fraction(30000, 1001)


def test_fingerprint_check_names_both():
    h = sample_stream().header
    bs.check_fingerprint(h, "0123456789ABCDEF")
    with pytest.raises(BitstreamError) as e:
        bs.check_fingerprint(h, "fedcba9876543210", preset="demo")
    assert "0123456789abcdef" in str(e.value) and "fedcba9876543210" in str(e.value)
    assert "\n" not in str(e.value)


def test_write_is_atomic_and_read_errors_are_one_line(tmp_path):
    path = tmp_path / "s.m3cvc"
    bsf.write_bitstream(path, sample_stream())
    good = path.read_bytes()
    with pytest.raises(BitstreamError):
        bsf.write_bitstream(path, dataclasses.replace(sample_stream(), keyframe_texts=()))
    assert path.read_bytes() == good  # a failed write leaves the old file whole
    assert [p.name for p in tmp_path.iterdir()] == ["s.m3cvc"]  # and no temporary behind
    for p, msg in ((tmp_path / "missing", "no such file"), (tmp_path, "directory")):
        with pytest.raises(BitstreamError, match=msg):
            bsf.read_bitstream(p)


def test_layout_matches_the_spec_example():
    """The byte walk-through in docs/bitstream.md must be what pack() writes."""
    import re

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "bitstream.md"), encoding="utf-8").read()
    block = doc.split("## Example", 1)[1].split("```", 2)[1]
    hex_bytes = []
    for line in block.strip().splitlines():
        hex_part = re.match(r"((?:[0-9a-f]{2}\s+)+)", line + " ").group(1)
        hex_bytes += [int(h, 16) for h in hex_part.split() if h != "..."]
    data = bs.pack(sample_stream("zstd-dict"))
    assert bytes(hex_bytes) == data[: len(hex_bytes)]
    assert len(hex_bytes) == 52  # the whole 50-byte header plus the texts section's tag and length
    assert "Total 295 bytes: header 50, texts 127, indices 118." in doc
    assert len(data) == 295


def test_float_fps_is_read_by_its_decimal_value():
    s = sample_stream()
    s = dataclasses.replace(s, header=dataclasses.replace(s.header, fps=29.97))
    assert bs.unpack(bs.pack(s)).header.fps == Fraction(2997, 100)
