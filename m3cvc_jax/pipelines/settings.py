"""Codec configuration from a preset plus `--set KEY=VALUE` overrides, checked field by field."""

from __future__ import annotations

import difflib
from typing import Iterable

import ml_collections

from configs import m3cvc as codec_configs
from m3cvc_jax.errors import ConfigError

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


def load_config(preset: str = "tiny", overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """The preset's config with overrides applied, then frozen (a typo later is an error, not a no-op)."""
    if preset not in codec_configs.PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; one of {', '.join(codec_configs.PRESETS)}")
    config = codec_configs.get_config(preset)
    for assignment in overrides:
        apply_override(config, assignment)
    validate(config)
    return ml_collections.FrozenConfigDict(config)


# Enumerated fields, checked when a config is loaded so a typo fails before any model is built.
CHOICES = {
    "keyframes.method": ("m3cvc", "semantic", "cmvc", "fixed"),
    "keyframes.flow_model": ("raft_small", "raft_large", "tiny", "classical"),
    "dialogue.describer": ("qwen2-vl", "fixed", "none"),
    "coding.text_codec": ("lzw", "zlib", "brotli", "zstd", "zstd-dict"),
    "coding.entropy_model": ("uniform", "static", "adaptive"),
    "keyframe_codec.sampler": ("ddim", "ddpm", "dpmpp2m"),
    "video_model.sampler": ("ddpm", "ddim", "dpmpp2m"),
    "decode.mode": ("interpolation", "prediction"),
}
POSITIVE = ("video.width", "video.height", "video.fps", "keyframes.interval", "keyframes.flow_updates",
            "dialogue.turns", "dialogue.clip_turns", "dialogue.clip_frames", "dialogue.max_new_tokens", "keyframe_codec.pixels_per_index",
            "keyframe_codec.steps", "video_model.steps", "video_model.window", "video_model.strength")
NON_NEGATIVE = ("seed", "video.start_time", "video.max_frames", "dialogue.temperature",
                "keyframe_codec.guidance_scale", "video_model.guidance_scale")
# Settings the decoder must share with the encoder: sent in the stream when they differ from the preset.
DECODER_PREFIXES = ("keyframe_codec.", "video_model.")


def get(config, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def validate(config) -> None:
    for key, allowed in CHOICES.items():
        if get(config, key) not in allowed:
            raise ConfigError(f"{key}={get(config, key)!r}: expected one of {', '.join(allowed)}")
    for key in POSITIVE:
        if not get(config, key) > 0:
            raise ConfigError(f"{key}={get(config, key)!r}: must be positive")
    for key in NON_NEGATIVE:
        if get(config, key) < 0:
            raise ConfigError(f"{key}={get(config, key)!r}: must not be negative")
    if config.seed >= 1 << 64:
        raise ConfigError(f"seed={config.seed}: must be below 2**64")


def decoder_overrides(config) -> list[str]:
    """`KEY=VALUE` for every decoder-side setting that differs from the preset's default."""
    base = codec_configs.get_config(config.preset)
    out = []
    for key in all_keys(base):
        if key.startswith(DECODER_PREFIXES) and get(config, key) != get(base, key):
            value = get(config, key)
            out.append(f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}")
    return out


def keyframe_config(config):
    """`codec.keyframes.KeyframeConfig` of the `keyframes` block (`flow_updates` is the runner's)."""
    from m3cvc_jax.codec.keyframes import KeyframeConfig

    block = {k: v for k, v in config.keyframes.items() if k != "flow_updates"}
    return KeyframeConfig.from_mapping(block)


def reconstruction_config(config, out_fps: float | None = None, latent_scale: float = 0.18215):
    """`VideoReconstructionConfig` for SEINE at the coded frame size and rate; `latent_scale` is the VAE's
    `scaling_factor` (SD's 0.18215; a VAE trained here, e.g. the demo's, has its own)."""
    from m3cvc_jax.pipelines.video_reconstruction import VideoReconstructionConfig

    vm = config.video_model
    return VideoReconstructionConfig(
        window=vm.window, height=config.video.height, width=config.video.width, source_fps=float(config.video.fps),
        out_fps=out_fps, sampler=vm.sampler, num_steps=vm.steps, cfg_scale=float(vm.guidance_scale),
        keep_keyframes=bool(vm.keep_keyframes), sample_posterior=bool(vm.sample_posterior),
        latent_scale=float(latent_scale), strength=float(vm.strength))
