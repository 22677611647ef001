"""CMVC's TT2V mode: text-only streams, the prompt template, AnimateDiff decoding (tiny preset), demo's refusal."""

from __future__ import annotations

import json
import os
import zlib
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.decoder_settings import settings_section
from m3cvc_jax.commands.inspect import describe
from m3cvc_jax.errors import BitstreamError, ConfigError
from m3cvc_jax.lmm import tt2v_prompt
from tests.pipeline_fixtures import CLIP, run_cli, workdir  # noqa: F401

# Keyframe and clip texts with what a describer may write: accents, CJK, emoji, quotes, braces, newlines.
KF_TEXTS = ("Two cyclists on a wet road, a green hedge behind.", "Café «terrasse» 自行车 🚲 under {braces}",
            "Grey sky,\nan empty road.")
CLIP_TEXTS = ("The riders move left to right; the camera pans.", "A rider leans into the bend.")
TINY_FRAMES = 32  # bikes_4s.mp4: 4 s at the tiny preset's 8 fps


def tt2v_stream(extras=(), index_data=None) -> bs.Bitstream:
    header = bs.Header(width=128, height=80, fps=Fraction(8), num_frames=20, keyframes=(0, 9, 19), mode="tt2v",
                       preset="tiny", weights_fingerprint="0123456789abcdef", seed=7, keyframe_method="cmvc",
                       text_codec="zstd-dict", index_grid=(1, 1), codebook_size=2, entropy_model="uniform")
    return bs.Bitstream(header, KF_TEXTS, CLIP_TEXTS, index_data or (b"",) * 3, tuple(extras))


def test_tt2v_prompts_round_trip_through_the_bitstream():
    data = bs.pack(tt2v_stream())
    # The mode code (docs/bitstream.md): 3 = tt2v, in v1 right after the keyframe positions 0, +9, +10.
    assert bytes([3, 0, 9, 10, 3]) in data[:40]  # container v1
    assert bs.unpack(data).header.mode == "tt2v"
    back, bits = bs.unpack_with_bits(bs.pack(tt2v_stream(), 2))  # and in container v2, what encode writes
    assert back.header.mode == "tt2v" and back.version == 2
    assert (back.keyframe_texts, back.clip_texts) == (KF_TEXTS, CLIP_TEXTS)
    template = tt2v_prompt.load_template()
    prompts = tt2v_prompt.clip_prompts(template, back.keyframe_texts, back.clip_texts)
    # The bundled template: motion first, then the clip's own keyframe (clip j starts at keyframe j).
    assert prompts == [f"{CLIP_TEXTS[0]} {KF_TEXTS[0]}", f"{CLIP_TEXTS[1]} {KF_TEXTS[1]}"]
    info = describe(back, bits)
    assert info["t2v_prompts"]["clip"] == prompts and info["t2v_prompts"]["negative"] == ""
    assert info["index_bytes"] == [0, 0, 0]


def test_an_edited_template_travels_as_a_decoder_setting(tmp_path):
    path = tmp_path / "template.json"
    path.write_text(json.dumps({"prompt": "[{keyframe_description}] then [{motion_description}]",
                                "negative_prompt": "blurry"}))
    stream = bs.unpack(bs.pack(tt2v_stream((settings_section([f"t2v.template={path}"]),))))
    prompts = describe(stream, bs.unpack_with_bits(bs.pack(stream))[1])["t2v_prompts"]
    assert prompts["template"] == str(path) and prompts["negative"] == "blurry"
    assert prompts["clip"][1] == f"[{KF_TEXTS[1]}] then [{CLIP_TEXTS[1]}]"
    os.remove(path)  # an inspect elsewhere reports the missing file instead of failing
    assert "no such TT2V prompt template" in describe(stream, bs.unpack_with_bits(bs.pack(stream))[1])[
        "t2v_prompts"]["error"]


@pytest.mark.parametrize("data, needle", [
    ({"prompt": "{keyframe_description} {camera}"}, "unknown placeholders camera"),
    ({"negative_prompt": "x"}, 'needs a "prompt"'),
    ({"prompt": "{keyframe_description", "negative_prompt": ""}, "not a format string"),
    ({"prompt": "{motion_description}", "style": "x"}, "unknown TT2V template entries style"),
])
def test_template_errors(tmp_path, data, needle):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=needle):
        tt2v_prompt.load_template(str(path))


def test_empty_texts_give_the_empty_prompt():
    assert tt2v_prompt.load_template().compose("", "") == ""


def test_a_tt2v_stream_carries_no_index_data():
    with pytest.raises(BitstreamError, match="carries no index maps"):
        bs.pack(tt2v_stream(index_data=(b"", b"\x01\x02\x03\x04", b"")))
    # A keyframe stream with data, relabelled tt2v behind a recomputed header CRC, is refused on reading.
    good = bs.Bitstream(tt2v_stream().header.__class__(**{**tt2v_stream().header.__dict__, "mode": "prediction"}),
                        KF_TEXTS, CLIP_TEXTS, (b"", b"\x01\x02\x03\x04", b""))
    data = bytearray(bs.pack(good))
    body_len = data[5]
    head_end = 6 + body_len
    pos = data.index(bytes([3, 0, 9, 10, 1]), 0, head_end) + 4
    data[pos] = 3
    data[head_end:head_end + 4] = zlib.crc32(bytes(data[:head_end])).to_bytes(4, "little")
    with pytest.raises(BitstreamError, match="index map data in a tt2v stream"):
        bs.unpack(bytes(data))
    # The same in container v2: the mode code is bits 0-2 of the flags byte, one CRC over the file.
    data = bytearray(bs.pack(good, 2))
    assert data[1] & 7 == bs.MODES.index("prediction")  # byte 0: 0xB2 (lean family, version 2); 1: flags
    data[1] = (data[1] & ~7) | bs.MODES.index("tt2v")
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    with pytest.raises(BitstreamError, match="index map data in a tt2v stream"):
        bs.unpack(bytes(data))


def test_retime_clip_and_generation_size():
    from m3cvc_jax.decoders import t2v

    assert t2v.retime_clip(np.arange(16), 11).tolist() == [0, 2, 3, 4, 6, 8, 9, 10, 12, 14, 15]
    assert t2v.retime_clip(np.arange(4), 7).tolist() == [0, 0, 1, 2, 2, 2, 3]  # longer than the window: repeats
    assert t2v.generation_size(320, 512, 8, 4) == (320, 512)  # SD 1.5: multiples of 64 px
    assert t2v.generation_size(80, 136, 8, 4) == (128, 192)
    assert t2v.generation_size(80, 128, 8, 2) == (80, 128)  # the tiny UNet: multiples of 16 px
    with pytest.raises(ConfigError):
        t2v.retime_clip(np.arange(4), 0)


def test_demo_refuses_tt2v_naming_the_presets_that_run_it(tmp_path):
    code, out, err = run_cli(["encode", CLIP, "-o", str(tmp_path / "x.m3cvc"), "--preset", "demo", "--mode", "tt2v"])
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("m3cvc: error: preset 'demo' cannot run mode tt2v: ")
    assert "not a text-to-image model" in lines[0] and "--preset paper" in lines[0]
    assert not os.path.exists(tmp_path / "x.m3cvc")


def test_encode_refuses_a_template_the_decoder_would_refuse(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prompt": "{scene}"}))
    for path, needle in ((tmp_path / "nope.json", "no such TT2V prompt template"), (bad, "unknown placeholders scene")):
        out = tmp_path / "x.m3cvc"
        code, _, err = run_cli(["encode", CLIP, "-o", str(out), "--preset", "tiny", "--mode", "tt2v",
                                "--set", f"t2v.template={path}"])
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
        assert not out.exists()


def test_tt2v_chooses_cmvc_keyframes_unless_told():
    from m3cvc_jax.pipelines.settings import load_config

    assert load_config("tiny", ["decode.mode=tt2v"]).keyframes.method == "cmvc"
    assert load_config("tiny", ["decode.mode=tt2v", "keyframes.method=fixed"]).keyframes.method == "fixed"
    assert load_config("tiny").keyframes.method == "m3cvc"


def test_eval_ours_rate_points_in_tt2v():
    from m3cvc_jax.eval import ours

    codec = ours.M3CVCCodec(preset="tiny", overrides=["decode.mode=tt2v"])
    assert codec.rate_points == ("i8", "i4", "i2")
    assert codec.config("i4", 128, 80, 8.0).keyframes.interval == 4
    with pytest.raises(ConfigError, match="g<N> .* no effect in mode tt2v"):
        ours.M3CVCCodec(preset="tiny", overrides=["decode.mode=tt2v"], rate_points=["g16-i4"])


# ---------------------------------------------------------------------------------------------- end to end


def _frames(folder) -> np.ndarray:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
    return np.stack([np.asarray(Image.open(os.path.join(folder, n))) for n in names])


@pytest.fixture(scope="module")
def tt2v_run(workdir):  # noqa: F811
    """`m3cvc encode --mode tt2v` (tiny, texts from a file, an 8-frame window sent as a decoder setting),
    inspect --json, and a PNG decode."""
    texts = workdir / "tt2v_texts.json"
    texts.write_text(json.dumps({"keyframe": [f"keyframe {i}: {t}" for i, t in enumerate(KF_TEXTS * 3)],
                                 "clip": [f"clip {i}: {t}" for i, t in enumerate(CLIP_TEXTS * 4)]}))
    path = str(workdir / "tt2v.m3cvc")
    code, out, err = run_cli(["encode", CLIP, "-o", path, "--preset", "tiny", "--mode", "tt2v",
                              "--set", "dialogue.describer=fixed", "--set", f"dialogue.texts={texts}",
                              "--set", "t2v.window=8"])
    assert code == 0, err
    code, info, err = run_cli(["inspect", path, "--json"])
    assert code == 0, err
    png = str(workdir / "tt2v_png")
    code, dec_out, err = run_cli(["decode", path, "-o", png])
    assert code == 0, err
    return path, out, json.loads(info), png


def test_tt2v_stream_holds_texts_only(tt2v_run):
    path, out, info, _ = tt2v_run
    assert info["mode"] == "tt2v" and info["keyframe_method"] == "cmvc"
    k = len(info["keyframes"])
    assert k >= 3 and info["index_bytes"] == [0]  # container v2: one (empty) index payload for all keyframes
    assert info["texts"]["keyframe"][0].startswith("keyframe 0: ")
    assert info["t2v_prompts"]["clip"][1] == f"{info['texts']['clip'][1]} {info['texts']['keyframe'][1]}"
    assert info["bits"]["total"] == 8 * os.path.getsize(path)
    # Nothing but the header, the texts and the sections' framing: the texts are the rate.
    b = info["bits"]
    assert b["indices"] <= 8 * (6 + 1 + k) and b["extra"] > 0  # the window setting travels
    assert "mode tt2v" in out


def test_tt2v_decode_has_the_stream_frame_count_and_size_and_is_deterministic(tt2v_run, workdir):  # noqa: F811
    path, _, info, png = tt2v_run
    frames = _frames(png)
    assert frames.shape == (TINY_FRAMES, 80, 128, 3)
    assert frames.std() > 1  # generated pictures, not a constant fill
    again = str(workdir / "tt2v_png_again")
    assert run_cli(["decode", path, "-o", again])[0] == 0
    np.testing.assert_array_equal(_frames(again), frames)
    code, _, err = run_cli(["decode", path, "-o", str(workdir / "x.mp4"), "--mode", "interpolation"])
    assert code == 2 and "tt2v stream" in err


def test_each_clip_follows_its_own_prompt(tt2v_run, workdir):  # noqa: F811
    """Changing clip 1's motion text changes clip 1's frames and nothing before it."""
    import dataclasses

    from m3cvc_jax.io import bitstream_file as bsf
    from m3cvc_jax.pipelines.codec import Codec

    path, _, info, png = tt2v_run
    stream = bsf.read_bitstream(path)
    texts = list(stream.clip_texts)
    texts[1] = "a completely different motion: everything spins"
    edited = dataclasses.replace(stream, clip_texts=tuple(texts))
    frames = Codec.for_stream(edited).decode(edited).video.frames
    reference = _frames(png)
    k1, k2 = info["keyframes"][1], info["keyframes"][2]
    np.testing.assert_array_equal(frames[:k1], reference[:k1])  # clip 0 ends on keyframe 1, which clip 1 redraws
    assert not np.array_equal(frames[k1:k2], reference[k1:k2])


def test_paper_preset_runs_tt2v_from_a_weights_folder(workdir):  # noqa: F811
    """The folder source: tiny checkpoints standing in for `convert_weights sd-unet` / `animatediff` output
    decode exactly what the same random weights decode in the tiny preset; a missing motion module is
    named with its convert command."""
    import dataclasses
    import shutil

    from m3cvc_jax import weights
    from m3cvc_jax.errors import WeightsError
    from m3cvc_jax.pipelines import codec as m3cvc
    from m3cvc_jax.pipelines import settings
    from m3cvc_jax.pipelines.models import MOTION_KEY, Models, combine_fingerprints
    from m3cvc_jax.weights import flat_params

    common = ["video.width=128", "video.height=80", "video.max_frames=17", "dialogue.describer=none",
              "keyframes.clip_model=tiny", "t2v.steps=2", "t2v.window=8", "seed=3", "decode.mode=tt2v"]
    tiny = Models(settings.load_config("tiny", common))
    root = str(workdir / "tt2v_weights")
    unet_cfg, motion_cfg = tiny.t2v_config
    params = flat_params(tiny.t2v_unet)
    motion = {k: v for k, v in params.items() if MOTION_KEY in k.split(".")}
    fps = {
        "sd-vae": weights.save_checkpoint(f"{root}/sd-vae", family="sd-vae", params=flat_params(tiny.vae),
                                          config=dataclasses.asdict(tiny.vae_config)),
        "sd-unet": weights.save_checkpoint(f"{root}/sd-unet", family="sd-unet", config=dataclasses.asdict(unet_cfg),
                                           params={k: v for k, v in params.items() if k not in motion}),
        "motion-module": weights.save_checkpoint(f"{root}/motion-module", family="animatediff", params=motion,
                                                 config=dataclasses.asdict(motion_cfg)),
        "clip": weights.save_checkpoint(f"{root}/clip", family="clip", params=flat_params(tiny.clip),
                                        config={"kind": "full", **dataclasses.asdict(tiny.clip_config)}),
    }
    assert tiny.fingerprints() == fps  # the random weights' per-component fingerprints are the folders'
    config = settings.load_config("paper", [f"weights={root}", *common])
    assert Models(config).fingerprint() == combine_fingerprints(fps)
    path = str(workdir / "paper_tt2v.m3cvc")
    enc = m3cvc.Codec(config).encode_file(CLIP, path)  # no post-encoder, keyframe UNet or SEINE needed
    assert enc.stream.header.preset == "paper" and enc.stream.header.mode == "tt2v"
    got = m3cvc.decode_file(path, str(workdir / "paper_tt2v_png"), weights=root).video.frames
    stream = enc.stream
    tiny_stream = dataclasses.replace(stream, header=dataclasses.replace(
        stream.header, preset="tiny", weights_fingerprint=combine_fingerprints(fps)))
    want = m3cvc.Codec.for_stream(tiny_stream).decode(tiny_stream).video.frames
    assert got.shape == (17, 80, 128, 3)
    np.testing.assert_array_equal(got, want)
    shutil.rmtree(os.path.join(root, "motion-module"))
    with pytest.raises(WeightsError, match=r"motion modules.*python -m convert_weights animatediff .*motion-module"):
        m3cvc.decode_file(path, str(workdir / "paper_tt2v_again"), weights=root)


def test_a_window_beyond_the_motion_positions_is_refused_before_sampling(tt2v_run):
    from m3cvc_jax.io import bitstream_file as bsf
    from m3cvc_jax.pipelines.codec import Codec

    stream = bsf.read_bitstream(tt2v_run[0])
    with pytest.raises(ConfigError, match=r"t2v.window=33: the motion modules know 32 frame positions"):
        Codec.for_stream(stream, overrides=["t2v.window=33"]).decode(stream)


def test_mean_colours_shift_the_generated_frames(tt2v_run):
    """tt2v has no coded keyframes; sent mean colours move the frames generated at keyframe positions (and
    the frames between by the interpolated offsets), exactly as in the keyframe modes."""
    from m3cvc_jax.io import bitstream_file as bsf
    from m3cvc_jax.pipelines.codec import Codec
    from tests.colour_reference import assert_corrected, with_means

    path, _, info, png = tt2v_run
    stream, targets = with_means(bsf.read_bitstream(path))
    frames = Codec.for_stream(stream).decode(stream).video.frames
    assert_corrected(frames, _frames(png), info["keyframes"], targets)
