"""Corrupt input makes the reader raise BitstreamError only: never another exception, never a hang.

A longer run of the same properties: `python -m benchmarks.fuzz_bitstream`.
"""

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.text_coding import TEXT_CODECS
from tests.bitstream_mutations import assemble, check_unpack, mutate, split
from tests.bitstream_sample import sample_bytes, sample_stream

VALID = sample_bytes()
BODY, SECTIONS = split(VALID)
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def test_split_and_assemble_are_inverse():
    assert assemble(BODY, SECTIONS) == VALID
    assert check_unpack(VALID) == "accepted"


def test_a_forged_header_is_refused_or_reencodes_byte_for_byte():
    """fps 16/2 reads as 8/1 and would re-encode differently: the reader takes lowest terms only."""
    body = bytearray(BODY)
    i = BODY.index(bytes([8, 1]))  # after width and height varints: fps numerator 8, denominator 1
    body[i:i + 2] = bytes([16, 2])
    with pytest.raises(bs.BitstreamError, match="lowest terms"):
        bs.unpack(assemble(bytes(body), SECTIONS))


@FUZZ
@given(st.lists(st.text(max_size=40), min_size=2, max_size=2), st.binary(max_size=50))
def test_valid_streams_round_trip_byte_for_byte(texts, extra):
    s = sample_stream("lzw", extras=(bs.ExtraSection(9, extra),))
    s = dataclasses.replace(s, clip_texts=tuple(texts))
    try:
        data = bs.pack(s)
    except bs.BitstreamError:  # e.g. a lone surrogate: refused when written, never stored
        return
    assert bs.unpack(data) == s and check_unpack(data) == "accepted"


def test_every_truncation():
    for n in range(len(VALID)):
        with pytest.raises(bs.BitstreamError):
            bs.unpack(VALID[:n])


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data):
    check_unpack(data)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_after_a_valid_magic(data):
    check_unpack(bs.MAGIC + b"\x01" + data)


@FUZZ
@given(st.lists(st.integers(0, 8 * len(VALID) - 1), min_size=1, max_size=4))
def test_bit_flips(positions):
    data = bytearray(VALID)
    for p in positions:
        data[p // 8] ^= 1 << (p % 8)
    check_unpack(bytes(data))


EDITS = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(EDITS)
def test_header_body_mutations_behind_a_valid_crc(edits):
    check_unpack(assemble(mutate(BODY, edits), SECTIONS))


@FUZZ
@given(st.integers(0, len(SECTIONS) - 1), EDITS, st.integers(0, 255))
def test_section_mutations_behind_a_valid_crc(which, edits, tag):
    sections = list(SECTIONS)
    t, payload = sections[which]
    sections[which] = (tag if edits[0][2] == "set" and edits[0][1] < 16 else t, mutate(payload, edits))
    check_unpack(assemble(BODY, sections))


@pytest.mark.parametrize("codec", sorted(TEXT_CODECS))
def test_text_payload_mutations_for_every_codec(codec):
    import random

    rng = random.Random(codec)
    body, sections = split(bs.pack(sample_stream(codec)))
    tag, payload = sections[0]
    for _ in range(150):
        edits = [(rng.randrange(10_000), rng.randrange(256), rng.choice(["set", "insert", "delete"]))
                 for _ in range(rng.randint(1, 4))]
        check_unpack(assemble(body, [(tag, mutate(payload, edits))] + sections[1:]))


@pytest.mark.parametrize("field", ["header", "section"])
def test_huge_length_fields_fail_fast(field):
    huge = bs._varint((1 << 63) - 1)
    if field == "header":
        data = bs.MAGIC + b"\x01" + huge + b"\x00" * 16
    else:
        data = assemble(BODY, []) + bytes([1]) + huge + b"\x00" * 16
    with pytest.raises(bs.BitstreamError, match="exceeds|truncated"):
        bs.unpack(data)
