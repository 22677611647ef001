"""Codec configuration from a preset plus `--set KEY=VALUE` overrides, checked field by field."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Iterable, Mapping

import ml_collections

from m3cvc_jax.codec import colour_means
from m3cvc_jax.codec.bitstream import MAX_FPS_TERM, MAX_FRAMES
from m3cvc_jax.codec.decoder_settings import DECODER_PREFIXES, ENCODER_ONLY
from m3cvc_jax.codec.keyframe_config import KeyframeConfig
from m3cvc_jax.decoders.keyframe_decoding import SAMPLERS as KEYFRAME_SAMPLERS
from m3cvc_jax.decoders.keyframe_decoding import KeyframeDecoding
from m3cvc_jax.decoders.video import VideoReconstructionConfig
from m3cvc_jax.decoders.video_decoding import SAMPLERS as VIDEO_SAMPLERS
from m3cvc_jax.decoders.video_decoding import VideoDecoding
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io.video import as_fraction
from m3cvc_jax.pipelines import presets as codec_configs
from m3cvc_jax.pipelines.it2v_config import IT2VConfig
from m3cvc_jax.pipelines.modes import MODES

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for name, value in config.items():
        key = f"{prefix}{name}"
        keys.extend(all_keys(value, key + ".") if isinstance(value, ml_collections.ConfigDict) else [key])
    return keys


def _parse(key: str, text: str, current):
    kind = type(current)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ValueError
            return low in _TRUE
        if kind is int:
            return int(text.strip())
        if kind is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"--set {key}={text}: expected a {kind.__name__}") from None


def apply_override(config: ml_collections.ConfigDict, assignment: str) -> None:
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {assignment!r}")
    keys = all_keys(config)
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"--set: unknown setting {key!r}{hint}")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = _parse(key, text, node[leaf])


def assignments(overrides: Iterable[str] | Mapping[str, object]) -> list[str]:
    """`KEY=VALUE` strings of `--set`-style overrides, given as such or as a mapping {KEY: VALUE}."""
    if isinstance(overrides, Mapping):
        return [f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}" for key, value in overrides.items()]
    return list(overrides)


def load_config(preset: str = "tiny", overrides: Iterable[str] | Mapping[str, object] = ()) -> ml_collections.ConfigDict:
    """The preset's config with overrides (`KEY=VALUE` strings or a mapping) applied, then frozen (a typo
    later is an error, not a no-op)."""
    if preset not in codec_configs.PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; one of {', '.join(codec_configs.PRESETS)}")
    config = codec_configs.get_config(preset)
    overrides = assignments(overrides)
    for assignment in overrides:
        apply_override(config, assignment)
    method = MODES[config.decode.mode].keyframe_method if config.decode.mode in MODES else None
    if method and not any(a.partition("=")[0].strip() == "keyframes.method" for a in overrides):
        config.keyframes.method = method  # the mode's own keyframes unless the user chose a method
    validate(config)
    return ml_collections.FrozenConfigDict(config)


# Enumerated fields, checked when a config is loaded so a typo fails before any model is built.
CHOICES = {
    # float16 is left out: SD's VAE decoder overflows its range (diffusers keeps that VAE in float32).
    "dtype": ("float32", "bfloat16"),
    "keyframes.method": ("m3cvc", "semantic", "cmvc", "fixed"),
    "keyframes.flow_model": ("raft_small", "raft_large", "tiny", "classical"),
    "dialogue.describer": ("qwen2-vl", "fixed", "none"),
    "coding.text_codec": ("lzw", "zlib", "brotli", "zstd", "zstd-dict"),
    "coding.entropy_model": ("uniform", "static", "adaptive", "learned", "auto"),
    "keyframe_codec.sampler": KEYFRAME_SAMPLERS,
    "video_model.sampler": VIDEO_SAMPLERS,
    "decode.mode": tuple(MODES),
    "cmvc.interpolation": ("linear", "diffmorpher"),
}


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: finite, between `low` and `high` (open ends optional), and a
    multiple of `multiple_of`."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    multiple_of: int = 1

    def describe(self) -> str:
        if self.high == math.inf and self.multiple_of == 1:
            if self.low == 0:
                return "must be positive" if self.low_open else "must not be negative"
            return f"must be >= {_number(self.low)}"
        text = (f"must be in {'(' if self.low_open else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.high_open else ']'}")
        return text + (f" and a multiple of {self.multiple_of}" if self.multiple_of > 1 else "")

    def check(self, key: str, value) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: must be a finite number")
        below = value <= self.low if self.low_open else value < self.low
        above = value >= self.high if self.high_open else value > self.high
        if below or above or (self.multiple_of > 1 and value % self.multiple_of):
            raise ConfigError(f"{key}={value!r}: {self.describe()}")


def _number(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Every numeric field of the codec presets, pipelines/presets.py (a field missing here is refused by
# `validate`). The bounds are the decoder's own: a value outside one would make `encode` write a stream
# `decode` refuses or decodes to garbage (tests/test_settings_validation.py checks them against the components' constructors).
POSITIVE = Range(0, low_open=True)
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**64, high_open=True),  # the header's varint
    # decoders/video.py: generation size a multiple of 8 (the VAE), at most MAX_SIDE.
    "video.width": Range(8, 512, multiple_of=8),
    "video.height": Range(8, 512, multiple_of=8),
    "video.fps": Range(0, MAX_FPS_TERM, low_open=True),
    "video.start_time": Range(0),
    "video.max_frames": Range(0, MAX_FRAMES),  # 0: all frames
    "coding.rd_lambda": Range(0, 1e6),
    "keyframes.lambda1": Range(0),
    "keyframes.lambda2": Range(0),
    "keyframes.threshold": Range(0),
    "keyframes.max_clip_length": Range(2),
    "keyframes.interval": POSITIVE,
    "keyframes.flow_updates": POSITIVE,
    "dialogue.turns": POSITIVE,
    "dialogue.clip_turns": POSITIVE,
    "dialogue.clip_frames": POSITIVE,
    "dialogue.max_new_tokens": POSITIVE,
    "dialogue.temperature": Range(0),
    "keyframe_codec.pixels_per_index": POSITIVE,
    # SD's DDIM: "leading" spacing with steps_offset 1 puts the first timestep at 1000 for 1000 steps.
    "keyframe_codec.steps": Range(1, 999),
    "keyframe_codec.guidance_scale": Range(0),
    # SEINE's chain has 1000 timesteps; respacing keeps at most all of them.
    "video_model.steps": Range(1, 1000),
    "video_model.guidance_scale": Range(0),
    "video_model.window": Range(3),  # one given frame at each end and one generated
    "video_model.strength": Range(0, 1, low_open=True),
    # AnimateDiff's DDIM uses "linspace" spacing over the 1000 training timesteps.
    "t2v.steps": Range(1, 1000),
    "t2v.guidance_scale": Range(0),
    # Checked against the motion modules' positions (at most 32 in the released ones) when they load.
    "t2v.window": Range(1, 1024),
    # pipelines/it2v.IT2VConfig's bounds
    "cmvc.lora_rank": Range(1, 1024),
    "cmvc.lora_steps": Range(0, 100_000),
    "cmvc.lora_lr": Range(0, 1, low_open=True),
    "cmvc.sampling_steps": Range(1, 999),
    "cmvc.opt_steps": Range(0, 100_000),
    "cmvc.opt_lr": Range(0, 1, low_open=True),
    "cmvc.w_bits": Range(1, 16),
    "colour.mean_bits": Range(1, colour_means.MAX_BITS),  # codec/colour_means.py's field
    "colour.anchor_tolerance": Range(0, 255),  # levels of 0..255
}


def check_fps_representable(key: str, fps) -> None:
    """The header stores the frame rate as a fraction (of its decimal form) with terms <= MAX_FPS_TERM."""
    f = as_fraction(fps)
    if f.numerator > MAX_FPS_TERM or f.denominator > MAX_FPS_TERM:
        raise ConfigError(f"{key}={fps!r}: not a frame rate the bitstream can hold (a fraction with terms "
                          f"<= {MAX_FPS_TERM}, e.g. 8, 29.97 or 0.5)")




def get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def validate(config) -> None:
    """Every field of the tree: enumerations, then range and finiteness of every number (`RANGES`).

    The encoder (`load_config`) and the decoder (`load_config` on the stream's preset, header fields and
    sent settings) both run this, so a stream the encoder writes is one the decoder accepts.
    """
    for key, allowed in CHOICES.items():
        if get(config, key) not in allowed:
            raise ConfigError(f"{key}={get(config, key)!r}: expected one of {', '.join(allowed)}")
    for key in all_keys(config):
        value = get(config, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key not in RANGES:
                raise ConfigError(f"{key}: a numeric setting without a declared range (settings.RANGES)")
            RANGES[key].check(key, value)
    check_fps_representable("video.fps", config.video.fps)
    # Combinations of fields the decoders refuse (e.g. a sampler's step limit), refused at encode time too.
    video_decoding(config)
    reason = codec_configs.UNSUPPORTED_MODES.get(config.preset, {}).get(config.decode.mode)
    if reason:
        raise ConfigError(f"preset {config.preset!r} cannot run mode {config.decode.mode}: {reason}")


def decoder_overrides(config) -> list[str]:
    """`KEY=VALUE` for every decoder-side setting that differs from the preset's default."""
    base = codec_configs.get_config(config.preset)
    out = []
    for key in all_keys(base):
        if key.startswith(DECODER_PREFIXES) and key not in ENCODER_ONLY and get(config, key) != get(base, key):
            value = get(config, key)
            out.append(f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}")
    return out


def it2v_config(config):
    """`pipelines.it2v.IT2VConfig` of the `cmvc` block."""
    m = config.cmvc
    return IT2VConfig(lora_rank=int(m.lora_rank), lora_steps=int(m.lora_steps), lora_lr=float(m.lora_lr),
                      sampling_steps=int(m.sampling_steps), interpolation=str(m.interpolation),
                      opt_steps=int(m.opt_steps), opt_lr=float(m.opt_lr), w_bits=int(m.w_bits))


def keyframe_config(config):
    """`codec.keyframes.KeyframeConfig` of the `keyframes` block."""
    return KeyframeConfig.from_mapping(config.keyframes)


def reconstruction_config(config, out_fps: float | None = None) -> VideoReconstructionConfig:
    """`VideoReconstructionConfig` for SEINE at the coded frame size and rate (the latent scale is the
    VAE's own `scaling_factor`)."""
    vm = config.video_model
    return VideoReconstructionConfig(
        window=vm.window, height=config.video.height, width=config.video.width, source_fps=float(config.video.fps),
        out_fps=out_fps, keep_keyframes=bool(vm.keep_keyframes), sample_posterior=bool(vm.sample_posterior))


def video_decoding(config) -> VideoDecoding:
    """How SEINE samples (`video_model` block): the run settings `VideoReconstructor` takes per call."""
    vm = config.video_model
    return VideoDecoding(sampler=vm.sampler, steps=vm.steps, guidance_scale=float(vm.guidance_scale),
                         strength=float(vm.strength))


def keyframe_decoding(config) -> KeyframeDecoding:
    """How keyframes are decoded (`keyframe_codec` block): the run settings of `decoders.keyframe`."""
    kc = config.keyframe_codec
    return KeyframeDecoding(kc.steps, float(kc.guidance_scale), kc.sampler)
