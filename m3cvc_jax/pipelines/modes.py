"""The codec's modes: how the clips between decoded keyframes are rebuilt (written in the stream header).

One entry per mode; the `Codec` dispatches on `clip_decoder`. M3-CVC's two modes both run SEINE
(M3-CVC II-D, `decoders/video.py`); CMVC's `it2v` (keyframe images + motion text, per-keyframe LoRAs
morphed with encoder-optimised weights, `decoders/it2v.py`) has its own. `encoder_defaults` are `--set`
assignments a mode brings to `m3cvc encode --mode` unless the user sets the same key.
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
    encoder_defaults: tuple[str, ...] = ()


MODES: dict[str, Mode] = {
    "interpolation": Mode("interpolation", "seine", True,
                          "SEINE with keyframes i and i+1 given (mask onelast1); the final clip is predicted"),
    "prediction": Mode("prediction", "seine", False, "SEINE with keyframe i given (mask first1)"),
    "it2v": Mode("it2v", "it2v", True,
                 "CMVC IT2V: LoRA per keyframe retrained from the decoded keyframes, eqs. 5-6 with the coded "
                 "per-frame (w_i, w_l); keyframes on the first and last frames",
                 ("keyframes.method=cmvc",)),
}


def mode_overrides(name: str, overrides) -> list[str]:
    """`--set` assignments for encoding in mode `name`: the mode's defaults for keys the user leaves alone,
    the user's, then `decode.mode`."""
    m = mode(name)
    given = {o.partition("=")[0].strip() for o in overrides}
    return [d for d in m.encoder_defaults if d.partition("=")[0] not in given] + list(overrides) + [f"decode.mode={name}"]


def mode(name: str) -> Mode:
    if name not in MODES:
        raise ConfigError(f"unknown mode {name!r}; one of {', '.join(MODES)}")
    return MODES[name]
