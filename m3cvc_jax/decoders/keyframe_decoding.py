"""The keyframe decoder's run settings (`decoders/keyframe.py`), free of JAX so the command line and the
codec presets (`pipelines/presets.py`, which take their defaults from here) load without it."""

from __future__ import annotations

import dataclasses


SAMPLERS = ("ddim", "ddpm", "dpmpp2m")


@dataclasses.dataclass(frozen=True)
class KeyframeDecoding:
    """How keyframes are decoded: DDIM steps and classifier-free guidance on the text (PerCo's 20, 3.0);
    sampler: ddim | ddpm | dpmpp2m (DPM-Solver++ 2M, `decoders.keyframe.make_scheduler`)."""

    steps: int = 20
    guidance_scale: float = 3.0
    sampler: str = "ddim"
