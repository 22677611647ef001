"""`m3cvc encode/decode --mode it2v` with the tiny preset: round trip, determinism, the weights section,
encoder and decoder LoRAs, corrupt-section refusal, `inspect`."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import it2v_weights
from m3cvc_jax.errors import BitstreamError
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.video import read_video
from m3cvc_jax.pipelines import api, it2v
from m3cvc_jax.pipelines.codec import Codec, decode_maps, read_input, to_model_range
from m3cvc_jax.pipelines.it2v_clips import it2v_key
from tests.colour_reference import assert_corrected, with_means
from tests.pipeline_fixtures import CLIP, run_cli, workdir  # noqa: F401

FRAMES = 8  # keyframes 0, 3, 6 and the forced 7: two clips with frames between, one without
# No describer (the random Qwen2-VL would dominate the compile time); fixed keyframes every 3 frames (no
# CLIP image tower to compile; the mode's default method is checked on the config below).
SETTINGS = ["--set", f"video.max_frames={FRAMES}", "--set", "dialogue.describer=none", "--set", "keyframes.interval=3",
            "--set", "keyframes.method=fixed"]


@pytest.fixture(scope="module")
def run(workdir):
    path = str(workdir / "it2v.m3cvc")
    code, out, err = run_cli(["encode", CLIP, "-o", path, "--preset", "tiny", "--mode", "it2v", *SETTINGS])
    assert code == 0, err
    folder = str(workdir / "it2v_png")
    code, dout, err = run_cli(["decode", path, "-o", folder])
    assert code == 0, err
    return dict(path=path, out=out, folder=folder, dout=dout, workdir=workdir)


def test_round_trip_frames_size_and_mode(run):
    stream = bsf.read_bitstream(run["path"])
    h = stream.header
    assert h.mode == "it2v" and h.keyframe_method == "fixed"
    # fixed every 3 frames gives 0, 3, 6; IT2V adds the last frame so that every clip has both ends
    assert list(h.keyframes) == [0, 3, 6, FRAMES - 1]
    assert Codec.load("tiny", mode="it2v").config.keyframes.method == "cmvc"  # the mode's default method
    assert Codec.load("tiny", mode="it2v", overrides=["keyframes.method=fixed"]).config.keyframes.method == "fixed"
    video = read_video(run["folder"])
    assert video.frames.shape == (FRAMES, 80, 128, 3)
    assert "clips (IT2V)" in run["dout"]
    assert "w " in run["out"]


def test_mean_colours_apply_to_the_it2v_frames(run):
    """Sent mean colours shift the decoded it2v video after the clips are rebuilt (the LoRAs still train on the
    uncorrected keyframes, so the rest of the decode is the same frames)."""
    stream, targets = with_means(bsf.read_bitstream(run["path"]))
    frames = Codec.for_stream(stream).decode(stream).video.frames
    assert_corrected(frames, read_video(run["folder"]).frames, stream.header.keyframes, targets)


def test_decode_deterministic(run):
    again = str(run["workdir"] / "it2v_png2")
    code, _, err = run_cli(["decode", run["path"], "-o", again])
    assert code == 0, err
    np.testing.assert_array_equal(read_video(again).frames, read_video(run["folder"]).frames)


def test_encoder_and_decoder_loras_bit_identical(run):
    """Two codecs (encoder side, decoder side from the stream), separately built: same decoded keyframes,
    same LoRAs, same inverted latents, bit for bit."""
    stream = bsf.read_bitstream(run["path"])
    h = stream.header
    enc = Codec.load("tiny", mode="it2v", overrides=[s for s in SETTINGS if s != "--set"])
    dec = Codec.for_stream(stream)
    assert enc.it2v_clips() is not dec.it2v_clips()
    video = read_input(CLIP, enc.config)
    params = {"codec": enc.models.codec}
    maps = [np.asarray(api.encode_keyframe(params, to_model_range(video.frames[k]))) for k in h.keyframes]
    emb_e = enc.text_embeddings(["", *stream.keyframe_texts, *stream.clip_texts])
    emb_d = dec.text_embeddings(["", *stream.keyframe_texts, *stream.clip_texts])
    np.testing.assert_array_equal(emb_e, emb_d)
    kf_key = jax.random.split(jax.random.key(h.seed))[0]
    n = len(h.keyframes)
    kf_e = enc.decode_keyframes(maps, emb_e[1:1 + n], emb_e[0], kf_key)
    kf_d = dec.decode_keyframes(decode_maps(stream.index_data, n, tuple(h.index_grid), dec.index_model(h.entropy_model)),
                                emb_d[1:1 + n], emb_d[0], kf_key)
    for a, b in zip(kf_e, kf_d):
        np.testing.assert_array_equal(a, b)
    ends_e = enc.it2v_clips().endpoints(kf_e[0], kf_e[1], emb_e[1 + n], it2v_key(h.seed, 0))
    ends_d = dec.it2v_clips().endpoints(kf_d[0], kf_d[1], emb_d[1 + n], it2v_key(h.seed, 0))
    leaves_e, leaves_d = jax.tree.leaves((ends_e.lora0, ends_e.lora1)), jax.tree.leaves((ends_d.lora0, ends_d.lora1))
    assert len(leaves_e) == len(leaves_d) > 0
    for a, b in zip(leaves_e, leaves_d):
        np.testing.assert_array_equal(a, b)
    assert any(np.any(np.asarray(x)) for x in leaves_e if x.ndim == 2)
    np.testing.assert_array_equal(ends_e.x0, ends_d.x0)
    np.testing.assert_array_equal(ends_e.x1, ends_d.x1)
    # The next clip's key gives other LoRAs (keys are per clip, not shared).
    other = enc.it2v_clips().endpoints(kf_e[0], kf_e[1], emb_e[1 + n], it2v_key(h.seed, 1))
    assert any(not np.array_equal(a, b) for a, b in zip(leaves_e, jax.tree.leaves((other.lora0, other.lora1))))


def test_inspect_shows_the_weights(run, capsys):
    code, out, err = run_cli(["inspect", run["path"], "--json"])
    assert code == 0, err
    info = json.loads(out)
    h = bsf.read_bitstream(run["path"]).header
    w = info["it2v_weights"]
    n = it2v_weights.inbetween_count(h.keyframes, h.num_frames)
    assert w["bits_per_weight"] == 8 and len(w["frames"]) == n == FRAMES - len(h.keyframes)
    assert w["code_bits"] == 2 * 8 * n and w["section_bits"] == info["bits"]["weights"] > w["code_bits"]
    total = info["bits"]
    assert total["header"] + total["text"] + total["indices"] + total["extra"] + total["weights"] == total["total"]
    assert all(0 <= x["w_i"] <= 1 and 0 <= x["w_l"] <= 1 for x in w["frames"])
    assert [x["frame"] for x in w["frames"]] == [f for f in range(FRAMES) if f not in h.keyframes]
    code, human, _ = run_cli(["inspect", run["path"]])
    assert "it2v weights" in human and f"w {total['weights']}" in human


def _pack_unchecked(stream, version=bs.WRITE_VERSION) -> bytes:
    """The bytes of `stream` with the writer's IT2V check off: what a faulty or hostile writer could make."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bs, "check_it2v_weights", lambda *a, **k: None)
        return bs.pack(stream, 2)


def _with_weights(stream, payload):
    extras = tuple(dataclasses.replace(e, payload=payload) if e.tag == bs.TAG_IT2V_WEIGHTS else e
                   for e in stream.extras)
    return dataclasses.replace(stream, extras=extras)


@pytest.mark.parametrize("corrupt, needle", [
    (lambda p: bytes([0]) + p[1:], "bits per weight 0"),
    (lambda p: p[:1] + bytes([p[1] + 1]) + p[2:], "frames of weights"),
    (lambda p: p[:-1], "bytes of codes"),
    (lambda p: p + b"\x00", "bytes of codes"),
])
def test_corrupt_weights_section_refused(run, tmp_path, corrupt, needle):
    bad = tmp_path / "bad.m3cvc"
    stream = bsf.read_bitstream(run["path"])
    payload = [e for e in stream.extras if e.tag == bs.TAG_IT2V_WEIGHTS][0].payload
    bad.write_bytes(_pack_unchecked(_with_weights(stream, corrupt(payload))))
    for argv in (["decode", str(bad), "-o", str(tmp_path / "o")], ["inspect", str(bad)]):
        code, _, err = run_cli(argv)
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("m3cvc: error: "), err
        assert "corrupt bitstream: IT2V weights" in lines[0], lines[0]
        assert needle in lines[0], lines[0]
    assert not os.path.exists(tmp_path / "o")


def test_weights_section_only_in_it2v_streams(run):
    """Writers refuse, and the reader refuses, an it2v stream without its weights section and a weights
    section in another mode; the section round-trips with its bits counted apart."""
    stream = bsf.read_bitstream(run["path"])
    assert stream.version == bs.WRITE_VERSION == 2
    without = dataclasses.replace(stream, extras=tuple(e for e in stream.extras if e.tag != bs.TAG_IT2V_WEIGHTS))
    interp = dataclasses.replace(stream, header=dataclasses.replace(stream.header, mode="interpolation"))
    # (v1 stores one index payload per keyframe; tests/test_bitstream_v2.py packs an it2v stream in both)
    with pytest.raises(BitstreamError, match="needs one IT2V weights section"):
        bs.pack(without, 2)
    with pytest.raises(BitstreamError, match="IT2V weights section in a interpolation stream"):
        bs.pack(interp, 2)
    with pytest.raises(BitstreamError, match="corrupt bitstream: an it2v stream needs one IT2V weights"):
        bs.unpack(_pack_unchecked(without))
    with pytest.raises(BitstreamError, match="IT2V weights section in a interpolation stream"):
        bs.unpack(_pack_unchecked(interp))
    back, bits = bs.unpack_with_bits(bs.pack(stream, 2))
    assert back == stream and bits.weights > 0
    assert bits.header + bits.text + bits.indices + bits.extra + bits.weights == bits.total


def test_weight_codes_pack_round_trip():
    rng = np.random.default_rng(0)
    for bits in (1, 3, 8, 11, 16):
        codes = rng.integers(0, 1 << bits, (5, 2))
        payload = it2v_weights.pack(codes, bits)
        assert len(payload) == 2 + (2 * 5 * bits + 7) // 8
        back, b = it2v_weights.unpack(payload, 5)
        assert b == bits
        np.testing.assert_array_equal(back, codes)
    w = np.asarray([[0.0, 1.0], [0.5, 0.25]])
    codes = it2v.quantize_weights(w, 8)
    np.testing.assert_allclose(it2v.dequantize_weights(it2v_weights.unpack(it2v_weights.pack(codes, 8), 2)[0], 8),
                               w, atol=0.5 / 255)
    with pytest.raises(BitstreamError, match="non-zero padding"):
        it2v_weights.unpack(it2v_weights.pack(np.ones((1, 2), int), 3)[:-1] + b"\x01", 1)
