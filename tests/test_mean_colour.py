"""Mean-colour side information: the pure correction against a numpy/scipy reference, the section's bytes
(quantisation bound, corrupt payloads refused), its place in both containers and in the bits accounting, and
the CLI round trip with `tiny` (the decoder's output is the reference correction of the uncorrected decode; a
stream without the section decodes as before)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import colour_means
from m3cvc_jax.codec.colour_correction import correct_mean_colour, frame_offsets, keyframe_offsets
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.video import read_video
from m3cvc_jax.pipelines import codec as pipeline
from m3cvc_jax.pipelines.settings import load_config
from tests.bitstream_mutations import resign_v2
from tests.colour_reference import assert_corrected, reference_correction, reference_offsets, with_means
from tests.bitstream_sample import sample_stream
from tests.pipeline_fixtures import CLIP, run_cli, workdir  # noqa: F401

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def frames_and_targets(seed: int, positions, num_frames: int = 9):
    rng = np.random.default_rng(seed)
    # Bright, dark and mid frames, so that shifting them saturates pixels at both ends.
    base = rng.uniform(20, 235, size=(num_frames, 1, 1, 3))
    frames = np.clip(base + rng.normal(0, 60, size=(num_frames, 12, 10, 3)), 0, 255).round().astype(np.uint8)
    targets = rng.uniform(5, 250, size=(len(positions), 3))
    return frames, targets


@pytest.mark.parametrize("positions", [(0, 4, 8), (2, 5), (3,)], ids=["ends", "inside", "one"])
def test_correction_matches_the_numpy_reference(positions):
    frames, targets = frames_and_targets(len(positions), positions)
    offs = np.asarray(keyframe_offsets(jnp.asarray(frames[list(positions)]), jnp.asarray(targets, jnp.float32)))
    ref = reference_offsets(frames, positions, targets)
    np.testing.assert_allclose(offs, ref, atol=2e-3)
    per_frame = np.asarray(frame_offsets(jnp.asarray(positions), jnp.asarray(ref, jnp.float32), len(frames)))
    # Held before the first / after the last keyframe, linear between neighbours.
    np.testing.assert_allclose(per_frame[: positions[0] + 1], np.broadcast_to(ref[0], (positions[0] + 1, 3)), atol=1e-4)
    np.testing.assert_allclose(per_frame[positions[-1]:], np.broadcast_to(ref[-1], per_frame[positions[-1]:].shape),
                               atol=1e-4)
    if len(positions) > 1:
        a, b = positions[0], positions[1]
        np.testing.assert_allclose(per_frame[a + 1], ref[0] + (ref[1] - ref[0]) / (b - a), atol=1e-3)
    out = np.asarray(correct_mean_colour(jnp.asarray(frames), jnp.asarray(positions), jnp.asarray(targets, jnp.float32)))
    expected = reference_correction(frames, positions, targets)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    diff = np.abs(out.astype(int) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01  # float32 vs float64 at rounding ties only
    # The keyframes land on their targets: rounding to uint8 moves a mean by at most half a level.
    means = out[list(positions)].astype(np.float64).mean(axis=(1, 2))
    assert np.abs(means - targets).max() <= 0.5 + 1e-2


@pytest.mark.parametrize("bits", [1, 5, 6, 8])
def test_quantised_means_round_trip_within_half_a_step(bits):
    means = np.random.default_rng(bits).uniform(0, 255, size=(7, 3))
    means[0] = (0.0, 255.0, 127.5)
    codes = colour_means.quantise(means, bits)
    payload = colour_means.pack(codes, bits)
    assert len(payload) == 1 + (3 * 7 * bits + 7) // 8
    back, nbits = colour_means.unpack(payload, 7)
    assert nbits == bits and np.array_equal(back, codes)
    step = 255.0 / ((1 << bits) - 1)
    assert np.abs(colour_means.dequantise(back, bits) - means).max() <= step / 2 + 1e-9
    assert tuple(colour_means.dequantise(back, bits)[0, :2]) == (0.0, 255.0)


@pytest.mark.parametrize("payload, needle", [
    (b"", "empty"), (bytes([0]) + bytes(3), "bits per mean 0"), (bytes([9]) + bytes(4), "bits per mean 9"),
    (bytes([6, 0, 0]), "2 bytes of codes, 7 expected"), (bytes([6]) + bytes(7) + b"\x00", "8 bytes of codes"),
    (bytes([6]) + bytes(6) + b"\x01", "non-zero padding"),
])
def test_corrupt_payloads_are_refused(payload, needle):
    with pytest.raises(bs.BitstreamError, match="corrupt bitstream: mean colours") as e:
        colour_means.unpack(payload, 3)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("version", [1, 2])
def test_section_in_both_containers_and_in_the_bits(version):
    plain = sample_stream("zstd-dict", extras=(bs.ExtraSection(9, b"x"),))
    stream = with_means(plain)[0]
    data = bs.pack(stream, version)
    back, bits = bs.unpack_with_bits(data)
    assert bs.mean_colour_section(back.extras) == stream.extras[-1]
    plain_bits = bs.unpack_with_bits(bs.pack(plain, version))[1]
    # The section (tag, length, 8 payload bytes; v1 also a CRC) is its own part; nothing else moved.
    assert bits.colour == 8 * (len(data) - len(bs.pack(plain, version))) == 8 * (10 if version == 2 else 14)
    assert (bits.header, bits.text, bits.indices, bits.extra) == (
        plain_bits.header, plain_bits.text, plain_bits.indices, plain_bits.extra)
    assert bits.header + bits.text + bits.indices + bits.extra + bits.weights + bits.colour == bits.total
    assert plain_bits.colour == 0


@pytest.mark.parametrize("version", [1, 2])
def test_bad_sections_are_refused_on_both_sides(version):
    stream = with_means(sample_stream())[0]
    twice = dataclasses.replace(stream, extras=stream.extras * 2)
    wrong_count = dataclasses.replace(stream, header=dataclasses.replace(stream.header, keyframes=(0, 13)),
                                      keyframe_texts=stream.keyframe_texts[:2], index_data=stream.index_data[:2])
    for bad, needle in [(twice, "2 sections"), (wrong_count, "bytes of codes")]:
        with pytest.raises(bs.BitstreamError, match=f"cannot pack: mean colours: .*{needle}"):
            bs.pack(bad, version)


def test_old_streams_read_as_before():
    """Streams written before the section existed: same content, no colour bits, no correction."""
    stream, bits = bsf.read_bitstream_with_bits(os.path.join(FIXTURES, "golden_tiny.m3cvc"))
    assert bits.colour == 0 and bs.mean_colour_section(stream.extras) is None
    assert pipeline.decoder_config(stream).colour.mean_correction is False
    with pytest.raises(pipeline.ConfigError, match="carries no mean colours"):
        pipeline.decoder_config(stream, overrides=["colour.mean_correction=true"])


def test_presets_and_settings():
    assert load_config("demo").colour.mean_correction is True
    assert load_config("paper").colour.mean_correction is False
    assert load_config("tiny").colour.mean_correction is False
    for bad, needle in [("colour.mean_bits=9", "must be in [1, 8]"), ("colour.mean_bits=0", "must be in [1, 8]"),
                        ("colour.mean_correction=maybe", "expected a bool")]:
        with pytest.raises(pipeline.ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            load_config("tiny", [bad])


TINY = ["--preset", "tiny", "--set", "video.max_frames=9", "--set", "keyframes.method=fixed",
        "--set", "keyframes.interval=4", "--set", "dialogue.describer=none"]


@pytest.fixture(scope="module")
def colour_stream(workdir, tmp_path_factory):  # noqa: F811
    path = str(tmp_path_factory.mktemp("colour") / "c.m3cvc")
    code, out, err = run_cli(["encode", CLIP, "-o", path, *TINY, "--set", "colour.mean_correction=true",
                              "--set", "colour.mean_bits=7"])
    assert code == 0, err
    return path, out


def test_cli_round_trip_with_tiny(colour_stream, tmp_path, capsys):
    path, out = colour_stream
    stream, bits = bsf.read_bitstream_with_bits(path)
    assert bits.colour == 8 * (2 + 1 + 8) and f"colour {bits.colour}" in out  # 3 keyframes x 21 bits -> 8 bytes
    original = pipeline.read_input(CLIP, load_config("tiny", ["video.max_frames=9"])).frames
    keyframes = list(stream.header.keyframes)
    assert keyframes == [0, 4, 8]
    # inspect shows the transmitted values and their bits.
    code, text, err = run_cli(["inspect", path, "--json"])
    assert code == 0, err
    info = json.loads(text)["mean_colours"]
    assert info["bits_per_channel"] == 7 and info["section_bits"] == bits.colour and info["code_bits"] == 63
    sent = np.array([k["rgb"] for k in info["keyframes"]])
    np.testing.assert_allclose(sent, original[keyframes].mean(axis=(1, 2)), atol=255 / 254 + 1e-3)
    code, text, _ = run_cli(["inspect", path])
    assert "mean colours   3 keyframes x RGB at 7 bits: 63 bits of codes, 88 bits" in text

    # An old-style stream: the same one without the section. It decodes as before (nothing shifted), and
    # the stream with the section decodes to exactly that plus the reference correction.
    old = str(tmp_path / "old.m3cvc")
    bsf.write_bitstream(old, dataclasses.replace(stream, extras=tuple(
        e for e in stream.extras if e.tag != colour_means.TAG_MEAN_COLOUR)))
    decoded = {}
    for name, src in [("new", path), ("old", old)]:
        code, _, err = run_cli(["decode", src, "-o", str(tmp_path / name)])
        assert code == 0, err
        decoded[name] = read_video(str(tmp_path / name)).frames
    codes, nbits = colour_means.unpack(bs.mean_colour_section(stream.extras).payload, 3)
    targets = colour_means.dequantise(codes, nbits)
    assert_corrected(decoded["new"], decoded["old"], keyframes, targets)
    assert np.abs(decoded["new"].astype(int) - decoded["old"]).max() > 1  # the correction did something
    # Asking for the correction on a stream that has no means is the caller's error.
    code, _, err = run_cli(["decode", old, "-o", str(tmp_path / "x"), "--set", "colour.mean_correction=true"])
    assert code == 2 and err.count("\n") == 1 and "carries no mean colours" in err


def test_corrupt_section_is_refused_with_one_line(colour_stream, tmp_path):
    data = open(colour_stream[0], "rb").read()
    stream = bsf.read_bitstream(colour_stream[0])
    payload = bs.mean_colour_section(stream.extras).payload
    at = data.index(payload)
    for i, value, needle in [(0, 0, "bits per mean 0"), (len(payload) - 1, payload[-1] | 1, "non-zero padding")]:
        bad = bytearray(data[:-4])
        bad[at + i] = value
        path = str(tmp_path / f"bad{i}.m3cvc")
        with open(path, "wb") as f:
            f.write(resign_v2(bytes(bad)))
        for argv in (["inspect", path], ["decode", path, "-o", str(tmp_path / f"out{i}")]):
            code, _, err = run_cli(argv)
            assert code == 2 and err.count("\n") == 1, err
            assert err.startswith("m3cvc: error: ") and "corrupt bitstream: mean colours" in err and needle in err, err
