"""Stored streams must keep parsing to the same content: a container change that breaks old files fails
here (round-trip tests alone cannot see it, since writer and reader change together).

The files are made by tests/fixtures/make_golden_streams.py; never regenerate them to make this pass.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.entropy import IndexModel, decode_indices
from m3cvc_jax.codec.text_coding import TEXT_CODECS
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.pipelines import codec as m3cvc
from tests.bitstream_sample import GRID, sample_maps, sample_stream

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY = os.path.join(FIXTURES, "golden_tiny.m3cvc")


def _maps(stream):
    h = stream.header
    model = IndexModel(h.entropy_model, h.codebook_size)
    return [np.asarray(decode_indices(b, tuple(h.index_grid), model)) for b in stream.index_data]


def test_real_tiny_stream():
    stream, bits = bsf.read_bitstream_with_bits(TINY)
    assert stream.header == bs.Header(
        width=128, height=80, fps=Fraction(8), num_frames=9, keyframes=(0, 4, 8), mode="interpolation",
        preset="tiny", weights_fingerprint="d73797e16437262a", seed=0, keyframe_method="fixed",
        text_codec="zstd-dict", index_grid=(5, 8), codebook_size=32, entropy_model="adaptive")
    assert stream.keyframe_texts == ("赞扬peated缸\tcb", "диагност añonodes consulted",
                                     "Autonomous cemeteryTest også")
    assert stream.clip_texts == ("Binary Erect costly ell", "Disallow fec isinstance疑难")
    assert stream.extras == (bs.ExtraSection(m3cvc.TAG_DECODER_SETTINGS, b"video_model.steps=3"),)
    assert m3cvc.stream_settings(stream) == ["video_model.steps=3"]
    assert [m.tolist() for m in _maps(stream)] == [[[9] * 8] * 5] * 3
    assert bits.as_dict() == {"header": 384, "text": 1104, "indices": 272, "extra": 200, "weights": 0, "colour": 0,
                               "total": 1960}
    # The decoder's view: the stream's settings and header make a valid decoding config.
    config = m3cvc.decoder_config(stream)
    assert (config.video.width, config.video.height, config.video_model.steps, config.decode.mode) == (
        128, 80, 3, "interpolation")


@pytest.mark.parametrize("codec", sorted(TEXT_CODECS))
def test_sample_streams_per_text_codec(codec):
    stream = bsf.read_bitstream(os.path.join(FIXTURES, f"golden_sample_{codec}.m3cvc"))
    expected = sample_stream(codec, extras=(bs.ExtraSection(100, b"\x00\x01golden extra\xff"),))
    assert stream == expected
    maps = _maps(stream)
    assert all(m.shape == GRID for m in maps)
    np.testing.assert_array_equal(np.stack(maps), np.stack(sample_maps()))
