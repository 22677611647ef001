"""M3-CVC end to end on a real clip with the tiny preset (random weights): encode -> file -> decode."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.video import read_video
from m3cvc_jax.pipelines import codec as m3cvc
from m3cvc_jax.pipelines import settings
from tests.pipeline_fixtures import CLIP, decoded_png, encoded, run_cli, workdir  # noqa: F401

TINY_FRAMES = 32  # bikes_4s.mp4 is 4 s long: 32 frames at the tiny preset's 8 fps


def test_encode_writes_stream_and_summary(encoded):
    path, out = encoded
    stream, bits = bsf.read_bitstream_with_bits(path)
    h = stream.header
    assert (h.width, h.height, h.num_frames, float(h.fps)) == (128, 80, TINY_FRAMES, 8.0)
    assert h.preset == "tiny" and h.keyframes[0] == 0 and h.mode == "interpolation"
    assert len(stream.keyframe_texts) == len(h.keyframes)
    assert len(stream.clip_texts) == len(m3cvc.clip_segments(h.keyframes, h.num_frames))
    assert any(stream.keyframe_texts), "the tiny describer should write (random) text, not nothing"
    assert f"keyframes  {list(h.keyframes)}" in out
    assert f"total {bits.total} " in out and f"bpp        {bits.bpp(h):.6g}" in out
    for stage in ("keyframes", "describe", "keyframe codec", "total"):
        assert stage in out.splitlines()[-1]


def test_decoded_video_has_source_count_size_fps(decoded_png):
    video = read_video(decoded_png[0])
    assert video.frames.shape == (TINY_FRAMES, 80, 128, 3)
    assert video.fps == 8
    assert video.frames.std() > 0  # something was generated, not a blank buffer


def test_same_input_gives_identical_bitstream(encoded, workdir):
    again = str(workdir / "again.m3cvc")
    code, _, err = run_cli(["encode", CLIP, "-o", again, "--preset", "tiny"])
    assert code == 0, err
    with open(encoded[0], "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()


def test_same_seed_gives_identical_frames(encoded, decoded_png, workdir):
    again = str(workdir / "again_png")
    assert run_cli(["decode", encoded[0], "-o", again, "--seed", "0"])[0] == 0  # the header's seed
    np.testing.assert_array_equal(read_video(again).frames, read_video(decoded_png[0]).frames)


def test_decode_mp4_at_requested_fps_in_prediction_mode(encoded, workdir):
    out = str(workdir / "bikes_4fps.mp4")
    code, stdout, err = run_cli(["decode", encoded[0], "-o", out, "--fps", "4", "--mode", "prediction"])
    assert code == 0, err
    video = read_video(out)
    assert video.fps == 4 and video.frames.shape == (TINY_FRAMES // 2, 80, 128, 3)
    assert "clips (SEINE)" in stdout


def test_inspect_json_matches_the_file(encoded):
    path, _ = encoded
    code, out, err = run_cli(["inspect", path, "--json"])
    assert code == 0, err
    info = json.loads(out)
    stream = bsf.read_bitstream(path)
    size_bits = 8 * os.path.getsize(path)
    assert info["bits"]["total"] == size_bits
    assert sum(info["bits"][k] for k in ("header", "text", "indices", "extra")) == size_bits
    assert info["bpp"] == pytest.approx(size_bits / (128 * 80 * TINY_FRAMES))
    assert info["keyframes"] == list(stream.header.keyframes)
    assert info["num_frames"] == TINY_FRAMES and (info["width"], info["height"]) == (128, 80)
    assert info["texts"] == {"keyframe": list(stream.keyframe_texts), "clip": list(stream.clip_texts)}
    assert info["weights_fingerprint"] == stream.header.weights_fingerprint


def test_decoder_settings_travel_in_the_stream(encoded):
    """Decoder-side --set values given to the encoder reach the decoder (a skippable section)."""
    stream = bsf.read_bitstream(encoded[0])
    assert stream.extras == ()  # preset defaults: nothing extra is sent
    config = settings.load_config("tiny", ["video_model.steps=3", "keyframe_codec.guidance_scale=1.5",
                                           "keyframes.threshold=0.5"])
    sent = settings.decoder_overrides(config)
    assert sent == ["keyframe_codec.guidance_scale=1.5", "video_model.steps=3"]
    extra = bs.ExtraSection(m3cvc.TAG_DECODER_SETTINGS, "\n".join(sent).encode())
    again = bs.unpack(bs.pack(bs.Bitstream(stream.header, stream.keyframe_texts, stream.clip_texts,
                                           stream.index_data, (extra,)), bs.WRITE_VERSION))
    got = m3cvc.decoder_config(again, overrides=["video_model.guidance_scale=2.0"])
    assert (got.video_model.steps, got.keyframe_codec.guidance_scale) == (3, 1.5)
    assert got.video_model.guidance_scale == 2.0 and got.keyframes.threshold == 0.05  # encoder-side: default


def test_clip_segments():
    assert m3cvc.clip_segments([0, 10, 25], 32) == [(0, 10), (10, 25), (25, 31)]
    assert m3cvc.clip_segments([0, 31], 32) == [(0, 31)]  # a keyframe on the last frame has no clip
    assert m3cvc.clip_segments([0], 1) == []


def _save_as_checkpoints(root, models):
    """The tiny models of `models` written as the converted checkpoints a `paper` weights folder holds."""
    import dataclasses

    from m3cvc_jax import weights
    from m3cvc_jax.weights import flat_params

    c, cfg, fps = models.codec, models.codec_config, {}
    fps["sd-vae"] = weights.save_checkpoint(f"{root}/sd-vae", family="sd-vae", config=dataclasses.asdict(cfg.vae),
                                            params=flat_params(c.vae))
    unet = flat_params(c.unet)
    unet["conv_in.kernel"] = unet["conv_in.kernel"][:, :, :cfg.unet.in_channels]  # a plain SD UNet
    fps["keyframe-unet"] = weights.save_checkpoint(
        f"{root}/keyframe-unet", family="sd-unet", params=unet,
        config=dataclasses.asdict(dataclasses.replace(cfg.unet, extra_in_channels=0)))
    vq = {**{f"post_encoder.{k}": v for k, v in flat_params(c.post_encoder).items()},
          **{f"codebook.{k}": v for k, v in flat_params(c.codebook).items()}}
    fps["post-encoder"] = weights.save_checkpoint(f"{root}/post-encoder", family="keyframe-vq", params=vq,
                                                  config=dataclasses.asdict(cfg.post_encoder))
    fps["clip"] = weights.save_checkpoint(f"{root}/clip", family="clip", params=flat_params(models.clip),
                                          config={"kind": "full", **dataclasses.asdict(models.clip_config)})
    fps["seine"] = weights.save_checkpoint(f"{root}/seine", family="seine", params=flat_params(models.seine),
                                           config=dataclasses.asdict(models.seine_config))
    weights.save_checkpoint(f"{root}/raft", family="raft", params=flat_params(models.raft),
                            config={"preset": "tiny", **dataclasses.asdict(models.raft_config)})
    return fps


def test_paper_preset_runs_from_a_weights_folder(workdir):
    """The folder source end to end, with tiny checkpoints standing in for the converted ones: the conv_in
    of a plain UNet is widened, the VQ export is split, the fingerprint combines the folders' own."""
    from m3cvc_jax.errors import WeightsError
    from m3cvc_jax.pipelines.models import Models, combine_fingerprints

    root = str(workdir / "weights")
    fps = _save_as_checkpoints(root, Models(settings.load_config("tiny", ["seed=3"])))
    sets = [f"weights={root}", "video.width=128", "video.height=80", "video.max_frames=17",
            "keyframe_codec.steps=2", "video_model.steps=2", "video_model.sampler=ddim", "dialogue.describer=none",
            "keyframes.clip_model=tiny", "keyframes.flow_model=tiny", "keyframes.flow_updates=2"]
    config = settings.load_config("paper", sets)
    assert Models(config).fingerprint() == combine_fingerprints(fps)
    path = str(workdir / "paper.m3cvc")
    enc = m3cvc.Codec(config).encode_file(CLIP, path)
    assert enc.stream.header.preset == "paper" and enc.stream.extras  # its decoder settings travel along
    dec = m3cvc.decode_file(path, str(workdir / "paper_png"), weights=root)
    assert dec.video.frames.shape == (17, 80, 128, 3)
    import shutil

    shutil.rmtree(os.path.join(root, "seine"))
    with pytest.raises(WeightsError, match=r"seine.*python -m convert_weights seine seine.pt .*weights/seine"):
        m3cvc.decode_file(path, str(workdir / "paper_png_again"), weights=root)


def test_paper_preset_runs_it2v_from_a_weights_folder(workdir):
    """CMVC IT2V with the `paper` preset's folder source (tiny checkpoints standing in for the converted SD 1.5
    ones, the keyframe UNet a plain SD UNet widened on load): encode and decode run from the folder, the
    stream is an it2v stream with its weights section, and the file decoded by a fresh decoder equals what
    the encoder's own codec decodes (both sides train the same LoRAs from the same decoded keyframes)."""
    from m3cvc_jax.codec.bitstream import TAG_IT2V_WEIGHTS
    from m3cvc_jax.pipelines.models import Models

    root = str(workdir / "weights_it2v")
    _save_as_checkpoints(root, Models(settings.load_config("tiny", ["seed=3"])))
    sets = [f"weights={root}", "video.width=128", "video.height=80", "video.max_frames=7",
            "keyframe_codec.steps=2", "dialogue.describer=none", "keyframes.method=fixed", "keyframes.interval=3",
            "cmvc.lora_rank=4", "cmvc.lora_steps=2", "cmvc.lora_lr=0.01", "cmvc.sampling_steps=2",
            "cmvc.opt_steps=0", "decode.mode=it2v"]
    config = settings.load_config("paper", sets)
    codec = m3cvc.Codec(config)
    path = str(workdir / "paper_it2v.m3cvc")
    enc = codec.encode_file(CLIP, path)
    h = enc.stream.header
    assert h.preset == "paper" and h.mode == "it2v" and list(h.keyframes) == [0, 3, 6]
    assert [e.tag for e in enc.stream.extras].count(TAG_IT2V_WEIGHTS) == 1
    got = m3cvc.decode_file(path, str(workdir / "paper_it2v_png"), weights=root).video.frames
    assert got.shape == (7, 80, 128, 3)
    np.testing.assert_array_equal(got, codec.decode(enc.stream).video.frames)
