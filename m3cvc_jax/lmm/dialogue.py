"""M3-CVC's multi-round dialogues that write the keyframe text D_F and the clip text D_C.

Keyframe: objects and background -> differences to the previous keyframe's description -> trivial
details -> summary (= D_F). Clip: main motion given D_F (= D_C). Which turns are asked is a schedule in
the editable template file (`m3cvc_jax/lmm/m3cvc_dialogue.json`, or another given by path), keyed by the number of turns
(1, 2 or 4 in the paper's ablation). The vision input rides on the first user message; every later turn
sees the whole history, and the last answer is the description.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import string
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from m3cvc_jax.errors import ConfigError

DEFAULT_TEMPLATES = "m3cvc_dialogue.json"


class Chat(Protocol):
    """One assistant reply to a conversation (the LMM backend of a dialogue)."""

    def reply(self, messages: Sequence[dict[str, Any]], *, images: Sequence[np.ndarray] = (),
              videos: Sequence[np.ndarray] = ()) -> str: ...


@dataclasses.dataclass
class Turn:
    name: str
    prompt: str
    response: str


@dataclasses.dataclass
class DialogueResult:
    text: str  # the last answer: D_F or D_C
    turns: list[Turn]
    messages: list[dict[str, Any]]  # the full conversation, for inspection


def templates_path(name: str = DEFAULT_TEMPLATES) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def load_templates(path: str | None = None, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a template file (default: the bundled one) and apply dotted overrides.

    overrides: e.g. `{"keyframe.turns.summary": "...", "clip.max_words": "20"}` (per-encode steering).
    """
    path = path or templates_path()
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such prompt template file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    for key, value in (overrides or {}).items():
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"prompt override {key!r}: no section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"prompt override {key!r}: no entry {parts[-1]!r}")
        node[parts[-1]] = type(node[parts[-1]])(value) if not isinstance(node[parts[-1]], (dict, list)) else value
    validate_templates(data)
    return data


def validate_templates(t: Mapping[str, Any]) -> None:
    for kind in ("keyframe", "clip"):
        section = t.get(kind)
        if not isinstance(section, dict) or "turns" not in section or "schedules" not in section:
            raise ConfigError(f"prompt templates need a {kind!r} section with 'turns' and 'schedules'")
        for n, names in section["schedules"].items():
            unknown = [x for x in names if x not in section["turns"]]
            if unknown:
                raise ConfigError(f"{kind} schedule {n!r} names unknown turns: {', '.join(unknown)}")
            if len(names) != int(n):
                raise ConfigError(f"{kind} schedule {n!r} has {len(names)} turns")


def schedule(templates: Mapping[str, Any], kind: str, turns: int) -> list[str]:
    schedules = templates[kind]["schedules"]
    if str(turns) not in schedules:
        raise ConfigError(f"no {kind} dialogue with {turns} turns; the templates define {', '.join(schedules)}")
    return list(schedules[str(turns)])


def _fill(template: str, values: Mapping[str, Any]) -> str:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    missing = names - set(values)
    if missing:
        raise ConfigError(f"prompt template uses unknown placeholders: {', '.join(sorted(missing))}")
    return template.format(**values)


def run_dialogue(chat: Chat, templates: Mapping[str, Any], kind: str, turns: int, values: Mapping[str, Any], *,
                 images: Sequence[np.ndarray] = (), videos: Sequence[np.ndarray] = ()) -> DialogueResult:
    section = templates[kind]
    values = {"max_words": section.get("max_words", 60), **values}
    messages: list[dict[str, Any]] = []
    if templates.get("system"):
        messages.append({"role": "system", "content": templates["system"]})
    done: list[Turn] = []
    for i, name in enumerate(schedule(templates, kind, turns)):
        prompt = _fill(section["turns"][name], values)
        content: list[dict[str, Any]] = []
        if i == 0:
            content += [{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
        content.append({"type": "text", "text": prompt})
        messages.append({"role": "user", "content": content})
        answer = chat.reply(messages, images=images, videos=videos).strip()
        messages.append({"role": "assistant", "content": answer})
        done.append(Turn(name, prompt, answer))
    return DialogueResult(text=done[-1].response, turns=done, messages=copy.deepcopy(messages))


def keyframe_dialogue(chat: Chat, frame: np.ndarray, previous_description: str | None,
                      templates: Mapping[str, Any], *, turns: int = 4) -> DialogueResult:
    """D_F for one keyframe `(H, W, 3)`; previous_description is the last keyframe's D_F (None for the first)."""
    previous = previous_description or templates["keyframe"].get("no_previous", "")
    return run_dialogue(chat, templates, "keyframe", turns, {"previous_description": previous}, images=[frame])


def clip_dialogue(chat: Chat, frames: np.ndarray, keyframe_description: str,
                  templates: Mapping[str, Any], *, turns: int = 1) -> DialogueResult:
    """D_C for one clip `(T, H, W, 3)` given its keyframe's D_F."""
    return run_dialogue(chat, templates, "clip", turns, {"keyframe_description": keyframe_description},
                        videos=[frames])
