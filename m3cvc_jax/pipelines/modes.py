"""The codec's modes: how the clips between decoded keyframes are rebuilt (written in the stream header).

One entry per mode; the `Codec` dispatches on `clip_decoder`. M3-CVC's two modes both run SEINE
(M3-CVC II-D, `decoders/video.py`); CMVC's `it2v` (keyframe images + motion text, LoRA interpolation) and
`tt2v` (texts only, a text-to-video model) are meant to be added here with their own clip decoders.
"""

from __future__ import annotations

import dataclasses

from m3cvc_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    clip_decoder: str  # the Codec's clip decoder for this mode
    last_keyframe_given: bool  # clip i also conditioned on keyframe i+1 (when the clip ends on one)
    summary: str


MODES: dict[str, Mode] = {
    "interpolation": Mode("interpolation", "seine", True,
                          "SEINE with keyframes i and i+1 given (mask onelast1); the final clip is predicted"),
    "prediction": Mode("prediction", "seine", False, "SEINE with keyframe i given (mask first1)"),
}


def mode(name: str) -> Mode:
    if name not in MODES:
        raise ConfigError(f"unknown mode {name!r}; one of {', '.join(MODES)}")
    return MODES[name]
