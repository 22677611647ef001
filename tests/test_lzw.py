import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3cvc_jax.codec import lzw


def test_classic_example():
    # "TOBEORNOTTOBEORTOBEORNOT": 16 codes; widths 8, then 9 from the second code on -> 8 + 15*9 = 143 bits.
    data = b"TOBEORNOTTOBEORTOBEORNOT"
    coded = lzw.compress(data)
    assert len(coded) == (8 + 15 * 9 + 7) // 8
    assert lzw.decompress(coded) == data


def test_code_width_grows_at_powers_of_two():
    assert [lzw._width(i) for i in (0, 1, 256, 257, 768, 769)] == [8, 9, 9, 10, 10, 11]
    assert lzw._width(10**6) == lzw.MAX_WIDTH


def test_kwkwk_case_and_repetitive_text():
    for data in (b"a" * 1000, b"ab" * 777, b"abababa"):
        coded = lzw.compress(data)
        assert lzw.decompress(coded) == data
    assert len(lzw.compress(b"a" * 1000)) < 70  # runs compress quadratically well


def test_dictionary_freezes_at_the_cap():
    import random

    rng = random.Random(0)
    data = bytes(rng.getrandbits(8) for _ in range(200_000))  # fills 65536 entries
    assert lzw.decompress(lzw.compress(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_unicode_round_trips(text):
    assert lzw.decompress_text(lzw.compress_text(text)) == text


def test_lone_surrogates_round_trip():
    text = "a\ud800b\udfff"
    assert lzw.decompress_text(lzw.compress_text(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_lzw_error(data):
    try:
        lzw.decompress(data, max_size=10_000)
    except lzw.LZWError:
        pass


def test_output_cap():
    coded = lzw.compress(b"a" * 5000)
    with pytest.raises(lzw.LZWError, match="exceeds"):
        lzw.decompress(coded, max_size=4000)


def test_padding_must_be_clean():
    coded = lzw.compress(b"hello")  # 8 + 4 * 9 = 44 bits: 4 bits of padding
    with pytest.raises(lzw.LZWError, match="invalid LZW code"):
        lzw.decompress(coded[:-1] + b"\xff\xff")  # next 9-bit code 511 > next free entry 260
    with pytest.raises(lzw.LZWError):
        lzw.decompress(coded[:-1] + bytes([coded[-1] | 1]), max_size=None)
