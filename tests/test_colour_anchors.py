"""Colour anchors (`codec/colour_means.py` choose/pack/unpack_anchors, extra tag 6): the means of frames
between keyframes where the original's colour leaves the straight line between keyframes; which frames the
encoder picks, the section's layout and refusals in both containers, the bits, and a CLI round trip whose
decoded frames are the reference correction through keyframes and anchors alike."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import colour_means as cm
from m3cvc_jax.errors import BitstreamError, ConfigError
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.video import read_video
from m3cvc_jax.pipelines import codec as pipeline
from m3cvc_jax.pipelines.settings import load_config
from tests.bitstream_sample import sample_stream
from tests.colour_reference import assert_corrected, with_means
from tests.pipeline_fixtures import CLIP, run_cli, workdir  # noqa: F401


def trajectory(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.float64)[:, None], 3, axis=1)


def test_straight_lines_between_keyframes_need_no_anchor():
    means = trajectory(np.linspace(20, 200, 17))
    assert cm.choose_anchors(means, [0, 16], 0.5) == []
    assert cm.choose_anchors(means, [0, 16], 0.0) == []  # 0: keyframes only, whatever the content


def test_a_cut_gets_an_anchor_on_each_side_and_only_there():
    means = trajectory([100.0] * 6 + [30.0] * 11)  # a cut between frames 5 and 6, keyframes 0 and 16
    assert cm.choose_anchors(means, [0, 16], 8.0) == [5, 6]
    # The straight line misses frame 6 by 43.75 levels: a looser tolerance takes none.
    assert cm.choose_anchors(means, [0, 16], 45.0) == []
    # One channel out of line is enough; a one-frame spike needs its neighbours too (the line to the spike
    # would otherwise pass 30 levels off at frames 3 and 5).
    means = trajectory(np.full(9, 50.0))
    means[4, 2] = 90.0
    assert cm.choose_anchors(means, [0, 8], 10.0) == [3, 4, 5]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_tolerance_is_validated_where_it_is_read(bad):
    with pytest.raises(ConfigError, match="anchor_tolerance"):
        cm.choose_anchors(trajectory(np.zeros(3)), [0], bad)
    with pytest.raises(ConfigError, match="colour.anchor_tolerance"):
        load_config("tiny", [f"colour.anchor_tolerance={bad}"])


def test_anchors_round_trip_and_corrupt_payloads_are_refused():
    frames, codes = [3, 7, 30], np.array([[1, 2, 3], [63, 0, 5], [10, 20, 30]])
    payload = cm.pack_anchors(frames, codes, 6, 33)
    assert len(payload) == 1 + 3 + 7  # count, 3 x 6 bits, 9 x 6 bits
    got_frames, got_codes = cm.unpack_anchors(payload, 6, (0, 15), 33)
    assert got_frames.tolist() == frames and np.array_equal(got_codes, codes)
    beyond = cm.pack_anchors([3, 7, 35], codes, 6, 40)  # 6-bit positions for 40 frames as for 33
    for bad, needle in [(b"", "empty"), (b"\x00", "empty"), (payload[:-1], "bytes of codes"),
                        (payload[:-1] + bytes([payload[-1] | 1]), "non-zero padding"),
                        (cm.pack_anchors([3, 15, 20], codes, 6, 33), "on a keyframe"),
                        (beyond, "increase within \\[0, 33\\)")]:
        with pytest.raises(BitstreamError, match=f"corrupt bitstream: mean colours: colour anchors: .*{needle}"):
            cm.unpack_anchors(bad, 6, (0, 15), 33)
    with pytest.raises(BitstreamError, match="cannot pack: colour anchor frames must increase"):
        cm.pack_anchors([7, 3], codes[:2], 6, 33)


def anchored(stream: bs.Bitstream, frames=(5, 20)) -> bs.Bitstream:
    section = bs.ExtraSection(cm.TAG_COLOUR_ANCHORS, cm.pack_anchors(frames, np.full((len(frames), 3), 9), 6,
                                                                      stream.header.num_frames))
    return dataclasses.replace(stream, extras=stream.extras + (section,))


@pytest.mark.parametrize("version", [1, 2])
def test_section_in_both_containers_counts_as_colour_and_needs_the_means(version):
    with_keyframe_means = with_means(sample_stream("zstd-dict"))[0]
    stream = anchored(with_keyframe_means)
    data = bs.pack(stream, version)
    back, bits = bs.unpack_with_bits(data)
    assert bs.colour_anchor_section(back.extras) == stream.extras[-1]
    before = bs.unpack_with_bits(bs.pack(with_keyframe_means, version))[1]
    assert bits.colour - before.colour == 8 * (len(data) - len(bs.pack(with_keyframe_means, version))) > 0
    assert (bits.header, bits.indices, bits.extra) == (before.header, before.indices, before.extra)
    alone = anchored(sample_stream("zstd-dict"))
    on_keyframe = anchored(with_keyframe_means, frames=(5, 13))
    twice = dataclasses.replace(stream, extras=stream.extras + stream.extras[-1:])
    for bad, needle in [(alone, "0 sections .*needed by colour anchors"), (on_keyframe, "on a keyframe"),
                        (twice, "colour anchors: 2 sections")]:
        with pytest.raises(BitstreamError, match=f"cannot pack: .*{needle}"):
            bs.pack(bad, version)


def test_presets():
    assert load_config("demo").colour.anchor_tolerance > 0
    assert load_config("paper").colour.anchor_tolerance == 0 and load_config("tiny").colour.anchor_tolerance == 0


TINY = ["--preset", "tiny", "--set", "video.max_frames=9", "--set", "keyframes.method=fixed",
        "--set", "keyframes.interval=8", "--set", "dialogue.describer=none", "--set", "colour.mean_correction=true"]


def test_cli_round_trip_corrects_through_the_anchors(workdir, tmp_path):  # noqa: F811
    """tiny, keyframes 0 and 8, a tolerance of 1 level: anchors between them; inspect lists them; the
    decoded frames are the reference correction of the same stream decoded without any correction, with
    keyframes and anchors as the positions, and each anchor frame carries its sent mean."""
    path = str(tmp_path / "a.m3cvc")
    code, out, err = run_cli(["encode", CLIP, "-o", path, *TINY, "--set", "colour.anchor_tolerance=1"])
    assert code == 0, err
    stream = bsf.read_bitstream(path)
    keyframes = list(stream.header.keyframes)
    assert keyframes == [0, 8]
    codes, nbits = cm.unpack(bs.mean_colour_section(stream.extras).payload, 2)
    frames, anchor_codes = cm.unpack_anchors(bs.colour_anchor_section(stream.extras).payload, nbits, keyframes, 9)
    assert len(frames) >= 1
    original = pipeline.read_input(CLIP, load_config("tiny", ["video.max_frames=9"])).frames
    means = original.astype(np.float64).mean(axis=(1, 2))
    assert frames.tolist() == cm.choose_anchors(means, keyframes, 1.0)
    info = json.loads(run_cli(["inspect", path, "--json"])[1])["mean_colours"]
    assert [a["frame"] for a in info["anchors"]] == frames.tolist()
    assert f"+ {len(frames)} anchors between them" in run_cli(["inspect", path])[1]

    plain = str(tmp_path / "plain.m3cvc")
    bsf.write_bitstream(plain, dataclasses.replace(stream, extras=tuple(
        e for e in stream.extras if e.tag not in bs.COLOUR_TAGS)))
    decoded = {}
    for name, src in [("anchored", path), ("plain", plain)]:
        code, _, err = run_cli(["decode", src, "-o", str(tmp_path / name)])
        assert code == 0, err
        decoded[name] = read_video(str(tmp_path / name)).frames
    positions = np.concatenate([keyframes, frames])
    order = np.argsort(positions)
    targets = cm.dequantise(np.concatenate([codes, anchor_codes])[order], nbits)
    assert_corrected(decoded["anchored"], decoded["plain"], positions[order].tolist(), targets)
