"""CMVC TT2V: the text-to-video prompt of a clip, composed from the two texts the stream carries.

The stream holds the keyframe description D_F (one per keyframe) and the motion description D_C (one per
clip); clip j starts at keyframe j. The decoder joins them with an editable template file
(`m3cvc_jax/lmm/tt2v_prompt.json`, or another given by `t2v.template`), as the describer's dialogue
prompts are (`lmm/m3cvc_dialogue.json`). `m3cvc inspect` composes the same prompts, so what it shows is
what the decoder conditions on. No JAX here: the command line's `inspect` uses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
from typing import Sequence

from m3cvc_jax.errors import ConfigError

DEFAULT_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tt2v_prompt.json")
PLACEHOLDERS = ("keyframe_description", "motion_description")


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    prompt: str
    negative_prompt: str = ""

    def __post_init__(self):
        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            if not isinstance(text, str):
                raise ConfigError(f"TT2V prompt template: {name!r} must be a string")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as e:
                raise ConfigError(f"TT2V prompt template: {name!r} is not a format string ({e})") from None
            unknown = sorted(fields - set(PLACEHOLDERS))
            if unknown:
                raise ConfigError(f"TT2V prompt template: {name!r} uses unknown placeholders {', '.join(unknown)} "
                                  f"(known: {', '.join(PLACEHOLDERS)})")

    def compose(self, keyframe_description: str, motion_description: str) -> str:
        values = {"keyframe_description": keyframe_description, "motion_description": motion_description}
        # Joining two empty texts must give the empty prompt, not the template's spaces.
        return self.prompt.format(**values).strip()


def load_template(path: str = "") -> PromptTemplate:
    """The template file at `path` (empty: the bundled one)."""
    path = path or DEFAULT_TEMPLATE
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such TT2V prompt template file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "prompt" not in data:
        raise ConfigError(f"{path}: a TT2V prompt template needs a \"prompt\" entry")
    unknown = sorted(set(data) - {"prompt", "negative_prompt", "_comment"})
    if unknown:
        raise ConfigError(f"{path}: unknown TT2V template entries {', '.join(unknown)}")
    try:
        return PromptTemplate(data["prompt"], data.get("negative_prompt", ""))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def clip_prompts(template: PromptTemplate, keyframe_texts: Sequence[str], clip_texts: Sequence[str]) -> list[str]:
    """The prompt of every clip: clip j starts at keyframe j (a keyframe on the last frame has no clip)."""
    if len(clip_texts) > len(keyframe_texts):
        raise ConfigError(f"{len(clip_texts)} clip texts for {len(keyframe_texts)} keyframes")
    return [template.compose(kf, motion) for kf, motion in zip(keyframe_texts, clip_texts)]
