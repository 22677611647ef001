import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3cvc_jax.codec import text_coding as tc
from m3cvc_jax.errors import ConfigError

DESCRIPTION = (
    "The image shows a cyclist in a red jersey riding on a country road lined with tall trees. Compared with "
    "the previous keyframe, the cyclist has moved closer to the camera."
)


@pytest.mark.parametrize("codec", sorted(tc.TEXT_CODECS))
@pytest.mark.parametrize("text", ["", "a", DESCRIPTION, "日本語のテキスト 🎬 " * 30, "x\x00y\r\n"])
def test_round_trip(codec, text):
    coded = tc.compress_text(text, codec)
    assert tc.decompress_text(coded, codec, 1 << 20) == text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400), st.sampled_from(sorted(tc.TEXT_CODECS)))
def test_any_text_round_trips(text, codec):
    assert tc.decompress_text(tc.compress_text(text, codec), codec, 1 << 20) == text


@pytest.mark.parametrize("codec", sorted(tc.TEXT_CODECS))
def test_bombs_are_capped(codec):
    coded = tc.compress(b"z" * 200_000, codec)
    with pytest.raises(tc.TextCodingError, match="exceeds|invalid"):
        tc.decompress(coded, codec, 10_000)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(sorted(tc.TEXT_CODECS)))
def test_garbage_raises_only_text_coding_error(data, codec):
    try:
        tc.decompress(data, codec, 1 << 16)
    except tc.TextCodingError:
        pass


def test_default_is_the_measured_winner_and_dictionary_is_intact():
    assert tc.DEFAULT_TEXT_CODEC == "zstd-dict"  # benchmarks/text_coding.py, docs/bitstream.md
    assert len(tc.zstd_dictionary_bytes()) == 8192
    # The dictionary must actually help on a description it was not trained on.
    assert len(tc.compress_text(DESCRIPTION, "zstd-dict")) < 0.8 * len(tc.compress_text(DESCRIPTION, "zstd"))


def test_unknown_codec():
    with pytest.raises(ConfigError, match="unknown text codec"):
        tc.compress(b"x", "gzip")


GOLDEN = {
    "lzw": "4110190de67101c8ea6e39880c263391bce7093a1a0ca2036184ee6e1018cd061399a4dd0430c14ca6410188c26c360b80",
    "zlib": "735448c94f57282acd2b56484c2eca2f2e5628c94855c8492ccf5348ce482ccecc4b574854284a4d51484accc9d10300",
    "brotli": "a20500bf9172355d2d82a03697ea8564ec8f8a0e86832dac1551051889e428bcb023716a4e79b6fee0adb7a61037831203",
    "zstd": "00007101004120646f672072756e73206163726f737320746865206c61776e2063686173696e672061207265642062616c6c2e",
    "zstd-dict": "00007d0000084104fc734aa253df699787f7a518",
}


@pytest.mark.parametrize("codec", sorted(GOLDEN))
def test_old_streams_still_decode(codec):
    """Bytes written by the first release (codec parameters, LZW widths, the shipped dictionary) must
    decode forever; a changed dictionary needs a new codec id, not a replaced file."""
    text = "A dog runs across the lawn chasing a red ball."
    assert tc.decompress_text(bytes.fromhex(GOLDEN[codec]), codec, 1 << 16) == text
