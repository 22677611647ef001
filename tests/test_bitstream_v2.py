"""Container v2 (`codec/container_v2.py`): byte-exact round trips, its lean overhead, corruption always a
BitstreamError (hypothesis; `python -m benchmarks.fuzz_bitstream` runs longer), and versions 1/2/other."""

import dataclasses
import os
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.io import bitstream_file as bsf
from tests.bitstream_mutations import check_unpack, mutate, resign_v2
from tests.bitstream_sample import sample_stream
from tests.fixtures.make_golden_streams import SAMPLE_EXTRA

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def main_job_like(texts: bool = False) -> bs.Bitstream:
    """The README main job's shape: 32 frames, keyframes 0/15/30, preset demo, fixed keyframes, no texts."""
    s = sample_stream("zstd-dict")
    h = dataclasses.replace(s.header, width=128, height=80, num_frames=32, keyframes=(0, 15, 30), preset="demo",
                            keyframe_method="fixed", seed=0, index_grid=(10, 16), codebook_size=256,
                            entropy_model="learned")
    kf = ("a", "b", "c") if texts else ("",) * 3
    return bs.Bitstream(h, kf, ("",) * 3, s.index_data)


VALID = bs.pack(sample_stream("lzw", extras=(bs.ExtraSection(7, b"cmvc-weights"),)), 2)


@pytest.mark.parametrize("stream", [
    sample_stream("lzw"), sample_stream("zstd-dict", extras=(bs.ExtraSection(9, b"x", skippable=True),)),
    main_job_like(), main_job_like(texts=True),
    bs.Bitstream(dataclasses.replace(main_job_like().header, preset="custom", keyframe_method="mine",
                                     keyframes=(0, 5, 31)), ("",) * 3, ("",) * 2, main_job_like().index_data),
], ids=["lzw", "extras", "no-texts", "texts", "custom-names"])
def test_round_trip_byte_for_byte(stream):
    data = bs.pack(stream, 2)
    assert data[:3] == b"M3\x02"
    back, bits = bs.unpack_with_bits(data)
    assert back == stream and bs.pack(back, 2) == data
    assert bits.header + bits.text + bits.indices + bits.extra == bits.total == 8 * len(data)


def test_overhead_of_the_main_job_shape():
    """Bytes outside the index and text payloads (measured 33: 3 magic+version, 3 codes, 6 size/rate/frames,
    1 keyframe interval, 8 fingerprint, 1 seed, 4 grid+codebook, 3 map lengths, 4 CRC); v1 took 78."""
    stream = main_job_like()
    payload = sum(len(b) for b in stream.index_data)
    v2, v1 = bs.pack(stream, 2), bs.pack(stream, 1)
    assert len(v2) - payload <= 33 and len(v1) - payload >= 75
    assert bs.unpack_with_bits(v2)[1].text == 0  # no texts: a flag bit, no bytes


def test_every_truncation():
    for n in range(len(VALID)):
        with pytest.raises(bs.BitstreamError):
            bs.unpack(VALID[:n])


@FUZZ
@given(st.lists(st.integers(0, 8 * len(VALID) - 1), min_size=1, max_size=4, unique=True))
def test_bit_flips_are_caught_by_the_crc(positions):
    data = bytearray(VALID)
    for p in positions:
        data[p // 8] ^= 1 << (p % 8)
    with pytest.raises(bs.BitstreamError):
        bs.unpack(bytes(data))


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_after_the_magic(data):
    check_unpack(b"M3\x02" + data)
    check_unpack(resign_v2(b"M3\x02" + data))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
                min_size=1, max_size=6))
def test_edits_behind_a_recomputed_crc(edits):
    check_unpack(resign_v2(mutate(VALID[:-4], edits)))


def test_v2_refuses_non_canonical_forms():
    body = bytearray(bs.pack(main_job_like(), 2)[:-4])
    body[4] = 0  # preset and method spelt out instead of coded
    with pytest.raises(bs.BitstreamError):
        bs.unpack(resign_v2(bytes(body)))


@pytest.mark.parametrize("data, msg", [(b"M3\x03" + b"\x00" * 20, "version 3"), (b"M3\x09", "version 9")])
def test_unknown_versions_are_refused_with_one_line(data, msg):
    with pytest.raises(bs.BitstreamError, match=msg) as e:
        bs.unpack(data)
    assert "\n" not in str(e.value)
    with pytest.raises(bs.BitstreamError, match="version 3"):
        bs.pack(sample_stream(), 3)


def test_v1_and_v2_golden_streams_still_parse():
    """v1 files stay readable next to v2 (tests/test_golden_stream.py checks v1 content in full)."""
    v1 = bsf.read_bitstream(os.path.join(FIXTURES, "golden_sample_lzw.m3cvc"))
    v2 = bsf.read_bitstream(os.path.join(FIXTURES, "golden_v2_sample.m3cvc"))
    assert v1 == v2 == sample_stream("lzw", extras=(SAMPLE_EXTRA,))
    assert (v1.version, v2.version) == (1, 2)
    with open(os.path.join(FIXTURES, "golden_v2_sample.m3cvc"), "rb") as f:
        data = f.read()
    assert data[:3] == b"M3\x02" and zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")


def test_every_pipeline_mode_has_a_code():
    """A mode added to pipelines/modes.py must get a code in the container (append to bitstream.MODES)."""
    from m3cvc_jax.pipelines.modes import MODES

    missing = [m for m in MODES if m not in bs.MODES]
    assert not missing, f"modes without a bitstream code: {missing}"
    for code, mode in enumerate(bs.MODES):
        stream = dataclasses.replace(main_job_like(), header=dataclasses.replace(main_job_like().header, mode=mode))
        if mode in bs.TEXT_ONLY_MODES:  # texts only: no index data
            stream = dataclasses.replace(stream, index_data=(b"",) * len(stream.index_data))
        assert bs.unpack(bs.pack(stream, 2)).header.mode == mode
        assert bs.unpack(bs.pack(stream, 1)).header.mode == mode
