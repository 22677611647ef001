"""One validation for encoder and decoder: every numeric setting has a range and must be finite, the
encoder refuses what the decoder would refuse, and the declared bounds are the decoder components' own."""

from __future__ import annotations

import dataclasses
import math

import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.errors import BitstreamError, ConfigError
from m3cvc_jax.pipelines import codec as m3cvc
from m3cvc_jax.pipelines import presets as codec_configs
from m3cvc_jax.pipelines import settings
from tests.bitstream_sample import sample_stream

# Values the issue found accepted by `encode` although `decode` refuses them or decodes garbage.
BAD = [
    "video_model.strength=2", "video_model.strength=0", "video_model.strength=nan", "video_model.steps=5000",
    "video_model.window=2", "video_model.guidance_scale=inf", "video_model.guidance_scale=-1",
    "keyframe_codec.steps=5000", "keyframe_codec.steps=1000", "keyframe_codec.guidance_scale=nan",
    "keyframes.threshold=-1", "keyframes.threshold=nan", "keyframes.lambda1=nan", "keyframes.lambda2=-0.5",
    "video.fps=inf", "video.fps=nan", "video.fps=0", "video.fps=1e-7", "video.start_time=inf",
    "video.width=130", "video.width=1024", "dialogue.temperature=nan", "seed=18446744073709551616",
    "t2v.steps=0", "t2v.steps=5000", "t2v.guidance_scale=nan", "t2v.guidance_scale=-1", "t2v.window=0",
]


@pytest.mark.parametrize("assignment", BAD)
def test_encoder_refuses(assignment):
    key = assignment.partition("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        settings.load_config("tiny", [assignment])


@pytest.mark.parametrize("assignment", [a for a in BAD if a.startswith(settings.DECODER_PREFIXES)])
def test_decoder_refuses_the_same_in_a_streams_settings(assignment):
    stream = sample_stream(extras=(bs.ExtraSection(m3cvc.TAG_DECODER_SETTINGS, assignment.encode()),))
    stream = dataclasses.replace(stream, header=dataclasses.replace(stream.header, width=128, height=80))
    with pytest.raises(BitstreamError, match="corrupt bitstream"):
        m3cvc.decoder_config(bs.unpack(bs.pack(stream)))
    with pytest.raises(ConfigError):  # and as the decoder's own --set
        m3cvc.decoder_config(sample_stream(), overrides=[assignment])


def test_every_numeric_field_of_every_preset_has_a_range():
    for preset in codec_configs.PRESETS:
        config = codec_configs.get_config(preset)
        values = {k: settings.get(config, k) for k in settings.all_keys(config)}
        numeric = {k for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numeric == set(settings.RANGES), preset
        settings.validate(config)
        for key in numeric:  # every float field refuses non-finite values
            if isinstance(settings.get(config, key), float):
                for text in ("nan", "inf", "-inf"):
                    with pytest.raises(ConfigError, match="finite"):
                        settings.load_config(preset, [f"{key}={text}"])


def test_bounds_are_the_decoder_components_own():
    """Each edge of RANGES against the constructor that would refuse the value at decode time."""
    from m3cvc_jax.decoders.keyframe import make_scheduler
    from m3cvc_jax.decoders.video import VideoReconstructionConfig, seine_scheduler
    from m3cvc_jax.decoders.video_decoding import VideoDecoding

    r = settings.RANGES
    make_scheduler(int(r["keyframe_codec.steps"].high))
    with pytest.raises(ConfigError):
        make_scheduler(int(r["keyframe_codec.steps"].high) + 1)
    for sampler in ("ddpm", "ddim"):
        seine_scheduler(sampler, int(r["video_model.steps"].high))
    # DPM-Solver's linspace spacing repeats a timestep at 1000 steps: refused by the settings, not NaN.
    seine_scheduler("dpmpp2m", int(r["video_model.steps"].high) - 1)
    with pytest.raises(ConfigError):
        seine_scheduler("dpmpp2m", int(r["video_model.steps"].high))
    with pytest.raises(ConfigError, match="dpmpp2m"):
        settings.load_config("tiny", ["video_model.sampler=dpmpp2m", f"video_model.steps={int(r['video_model.steps'].high)}"])
    VideoReconstructionConfig(window=int(r["video_model.window"].low), width=int(r["video.width"].high),
                              height=int(r["video.height"].low))
    VideoDecoding(steps=int(r["video_model.steps"].high), strength=r["video_model.strength"].high,
                  guidance_scale=r["video_model.guidance_scale"].low)
    for bad in (dict(window=int(r["video_model.window"].low) - 1), dict(width=int(r["video.width"].high) + 8),
                dict(height=12)):
        with pytest.raises(ConfigError):
            VideoReconstructionConfig(**bad)
    for bad in (dict(steps=int(r["video_model.steps"].high) + 1), dict(strength=1.5),
                dict(guidance_scale=r["video_model.guidance_scale"].low - 1)):
        with pytest.raises(ConfigError):
            VideoDecoding(**bad)


def test_range_messages():
    assert settings.RANGES["video_model.strength"].describe() == "must be in (0, 1]"
    assert settings.RANGES["keyframes.threshold"].describe() == "must not be negative"
    assert settings.RANGES["seed"].describe() == f"must be in [0, {2**64})"
    with pytest.raises(ConfigError, match=r"x=nan: must be a finite number"):
        settings.Range(0).check("x", math.nan)
