"""Container v2 (`codec/container_v2.py`): byte-exact round trips, its lean overhead, corruption always a
BitstreamError (hypothesis; `python -m benchmarks.fuzz_bitstream` runs longer), and versions 1/2/other."""

import dataclasses
import os
import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import it2v_weights
from m3cvc_jax.io import bitstream_file as bsf
from tests.bitstream_mutations import V2_START, check_unpack, mutate, resign_v2
from tests.bitstream_sample import sample_stream
from tests.fixtures.make_golden_streams import SAMPLE_EXTRA

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def as_read_from_v2(stream: bs.Bitstream) -> bs.Bitstream:
    """What v2 keeps of `stream`: the first 2 bytes of the weights fingerprint."""
    h = stream.header
    return dataclasses.replace(stream, header=dataclasses.replace(h, weights_fingerprint=h.weights_fingerprint[:4]))


def main_job_like(texts: bool = False) -> bs.Bitstream:
    """The README main job's shape: 32 frames, keyframes 0/15/30, preset demo, fixed keyframes, no texts."""
    s = sample_stream("zstd-dict")
    h = dataclasses.replace(s.header, width=128, height=80, num_frames=32, keyframes=(0, 15, 30), preset="demo",
                            keyframe_method="fixed", seed=0, index_grid=(10, 16), codebook_size=256,
                            entropy_model="learned")
    kf = ("a", "b", "c") if texts else ("",) * 3
    return bs.Bitstream(h, kf, ("",) * 3, (b"".join(s.index_data),))  # one payload for all maps, as encode writes


VALID = bs.pack(sample_stream("lzw", extras=(bs.ExtraSection(7, b"cmvc-weights"),)), 2)


@pytest.mark.parametrize("stream", [
    sample_stream("lzw"), sample_stream("zstd-dict", extras=(bs.ExtraSection(9, b"x", skippable=True),)),
    main_job_like(), main_job_like(texts=True),
    bs.Bitstream(dataclasses.replace(main_job_like().header, preset="custom", keyframe_method="mine",
                                     keyframes=(0, 5, 31)), ("",) * 3, ("",) * 2, sample_stream().index_data),
], ids=["lzw", "extras", "no-texts", "texts", "custom-names"])
def test_round_trip_byte_for_byte(stream):
    data = bs.pack(stream, 2)
    assert data[:1] == V2_START
    back, bits = bs.unpack_with_bits(data)
    assert back == as_read_from_v2(stream) and bs.pack(back, 2) == data
    assert bits.header + bits.text + bits.indices + bits.extra == bits.total == 8 * len(data)


def test_overhead_of_the_main_job_shape():
    """Bytes outside the index and text payloads: 14 (1 magic+version, 3 codes, 2 grid, 1 frame count,
    1 keyframe interval, 2 fingerprint, 4 CRC); 16 with one payload per keyframe (2 lengths); v1 took 78."""
    stream = main_job_like()
    per_map = dataclasses.replace(stream, index_data=sample_stream().index_data)
    for s, overhead in [(stream, 14), (per_map, 16)]:
        payload = sum(len(b) for b in s.index_data)
        data = bs.pack(s, 2)
        assert len(data) - payload == overhead
        bits = bs.unpack_with_bits(data)[1]
        assert bits.text == 0 and bits.extra == 0  # no texts: a flag bit, no bytes
        assert bits.header == 8 * 14 and bits.indices == 8 * (len(data) - 14)
    assert len(bs.pack(per_map, 1)) - payload >= 75
    with pytest.raises(bs.BitstreamError, match="one index payload per keyframe"):
        bs.pack(stream, 1)


def test_unusual_values_cost_bytes_only_when_used():
    """Frame rate without a code, a frame size off the grid, another codebook, a seed: spelt out, round trip."""
    base = main_job_like()
    n = len(bs.pack(base, 2))
    for change, extra in [(dict(fps=Fraction(2997, 100)), 3), (dict(width=130), 5), (dict(codebook_size=512), 5),
                          (dict(seed=1234), 2), (dict(keyframes=(0, 15, 29)), 3)]:
        stream = dataclasses.replace(base, header=dataclasses.replace(base.header, **change))
        data = bs.pack(stream, 2)
        assert len(data) == n + extra, change
        assert bs.unpack(data) == as_read_from_v2(stream)


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
    check_unpack(V2_START + data)
    check_unpack(resign_v2(V2_START + data))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
                min_size=1, max_size=6))
def test_edits_behind_a_recomputed_crc(edits):
    check_unpack(resign_v2(mutate(VALID[:-4], edits)))


def test_v2_refuses_non_canonical_forms():
    body = bytearray(bs.pack(main_job_like(), 2)[:-4])
    body[2] &= 0xE0  # preset and method spelt out instead of coded
    with pytest.raises(bs.BitstreamError):
        bs.unpack(resign_v2(bytes(body)))


@pytest.mark.parametrize("data, msg", [(b"\xb3" + b"\x00" * 20, "version 3"), (b"\xb9", "version 9")])
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
    assert v1 == sample_stream("lzw", extras=(SAMPLE_EXTRA,)) and v2 == as_read_from_v2(v1)
    assert (v1.version, v2.version) == (1, 2)
    with open(os.path.join(FIXTURES, "golden_v2_sample.m3cvc"), "rb") as f:
        data = f.read()
    assert data[:1] == V2_START and zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "little")


def test_every_pipeline_mode_has_a_code():
    """A mode added to pipelines/modes.py must get a code in the container (append to bitstream.MODES)."""
    from m3cvc_jax.pipelines.modes import MODES

    missing = [m for m in MODES if m not in bs.MODES]
    assert not missing, f"modes without a bitstream code: {missing}"
    for code, mode in enumerate(bs.MODES):
        stream = bs.Bitstream(dataclasses.replace(main_job_like().header, mode=mode), ("",) * 3, ("",) * 3,
                              sample_stream().index_data)
        if mode in bs.TEXT_ONLY_MODES:  # texts only: no index data
            stream = dataclasses.replace(stream, index_data=(b"",) * len(stream.index_data))
        if mode == "it2v":  # keyframes on the first and last frames, and the weights section (extra 3)
            h = dataclasses.replace(stream.header, num_frames=stream.header.keyframes[-1] + 1)
            n = it2v_weights.inbetween_count(h.keyframes, h.num_frames)
            stream = dataclasses.replace(stream, header=h, extras=stream.extras + (
                bs.ExtraSection(bs.TAG_IT2V_WEIGHTS, it2v_weights.pack(np.zeros((n, 2), int), 8), False),))
        assert bs.unpack(bs.pack(stream, 2)).header.mode == mode
        assert bs.unpack(bs.pack(stream, 1)).header.mode == mode


def test_fingerprint_prefix_tells_other_weights_apart():
    h = bs.unpack(bs.pack(main_job_like(), 2)).header
    assert h.weights_fingerprint == "0123"
    bs.check_fingerprint(h, "0123456789abcdef")  # the weights the stream was made with
    with pytest.raises(bs.BitstreamError, match="made with weights 0123 .* holds 0124456789abcdef"):
        bs.check_fingerprint(h, "0124456789abcdef")
    with pytest.raises(bs.BitstreamError):
        bs.pack(dataclasses.replace(main_job_like(), header=dataclasses.replace(h, weights_fingerprint="01")), 2)
