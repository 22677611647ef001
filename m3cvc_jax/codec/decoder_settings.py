"""The decoder-side settings a stream carries: `KEY=VALUE` lines in one skippable extra section.

An encoder told `--set video_model.steps=50` (or any setting under `DECODER_PREFIXES`) sends the values
that differ from the preset, so the decoder runs with what the encoder was told. Host-side bytes only (no
JAX): `m3cvc inspect` reads them too.
"""

from __future__ import annotations

from typing import Sequence

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.errors import BitstreamError

TAG_DECODER_SETTINGS = 16  # skippable extra section: decoder-side `--set` overrides the encoder was given
# Settings the decoder must share with the encoder: sent in the stream when they differ from the preset.
DECODER_PREFIXES = ("keyframe_codec.", "video_model.", "t2v.", "cmvc.")
ENCODER_ONLY = ("cmvc.opt_steps", "cmvc.opt_lr")  # the encoder's w search: nothing for the decoder to redo


def settings_section(lines: Sequence[str]) -> bs.ExtraSection:
    return bs.ExtraSection(TAG_DECODER_SETTINGS, "\n".join(lines).encode("utf-8"))


def stream_settings(stream: bs.Bitstream) -> list[str]:
    """The decoder-side overrides the encoder sent (empty if none)."""
    for extra in stream.extras:
        if extra.tag == TAG_DECODER_SETTINGS:
            try:
                text = extra.payload.decode("utf-8")
            except UnicodeDecodeError:
                raise BitstreamError("corrupt bitstream: decoder settings are not UTF-8") from None
            lines = [line for line in text.split("\n") if line]
            if not all(line.startswith(DECODER_PREFIXES) for line in lines):
                raise BitstreamError("corrupt bitstream: decoder settings name an encoder-side field")
            return lines
    return []


def setting(stream: bs.Bitstream, key: str, default: str = "") -> str:
    """The value the stream sends for `key` (as text), or `default`."""
    for line in stream_settings(stream):
        name, _, value = line.partition("=")
        if name == key:
            return value
    return default
