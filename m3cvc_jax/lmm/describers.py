"""Describer backends: what writes D_F (keyframes) and D_C (clips) for the codec.

One interface, three backends:
  qwen2-vl  our Flax Qwen2-VL holding the multi-round dialogues (the `paper` preset's default)
  fixed     texts from a JSON file the user writes: {"keyframe": [...], "clip": [...]}
  none      empty texts (unconditional guidance)
`OverrideDescriber` wraps any of them for per-encode steering: user text replaces chosen descriptions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.lmm import dialogue
from m3cvc_jax.lmm.chat import build_inputs
from m3cvc_jax.lmm.generate import Generator, SamplingConfig
from m3cvc_jax.lmm.model_io import load_model, random_model
from m3cvc_jax.lmm.processor import ProcessorConfig
from m3cvc_jax.lmm.tokenizer import load_tokenizer

BACKENDS = ("qwen2-vl", "fixed", "none")


class Describer(Protocol):
    def describe_keyframe(self, frame: np.ndarray, previous_description: str | None) -> str: ...

    def describe_clip(self, frames: np.ndarray, keyframe_description: str) -> str: ...


class Qwen2VLChat:
    """`dialogue.Chat` on our Flax Qwen2-VL: chat format -> tokens + patches -> generation -> text."""

    def __init__(self, model, tokenizer, *, sampling: SamplingConfig | None = None, seed: int = 0,
                 processor: ProcessorConfig = ProcessorConfig(), value_range=(0.0, 1.0), length_bucket: int = 64,
                 reuse_cache: bool = True):
        """reuse_cache: keep each reply's KV cache so the next turn of the same dialogue prefills only
        its new tokens (the image or video and the earlier turns are not run again)."""
        stops = tuple(tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>"))
        self.sampling = sampling or SamplingConfig(max_new_tokens=96)
        if not self.sampling.stop_tokens:
            self.sampling = dataclasses.replace(self.sampling, stop_tokens=stops, pad_token=stops[1])
        self.generator = Generator(model, length_bucket=length_bucket)
        self.tokenizer, self.processor, self.value_range = tokenizer, processor, value_range
        self.cfg = model.cfg
        self.key = jax.random.key(seed)
        self.calls = 0
        self.last_inputs: dict[str, Any] | None = None
        self.reuse_cache = reuse_cache
        self.session = None
        self.prefilled: list[int] = []  # prompt tokens each reply ran through the model

    def reply(self, messages, *, images=(), videos=()) -> str:
        inputs = build_inputs(self.tokenizer, messages, images=images, videos=videos, processor=self.processor,
                              value_range=self.value_range, image_token_id=self.cfg.image_token_id,
                              video_token_id=self.cfg.video_token_id)
        self.last_inputs = inputs
        out = self.generator.generate(
            inputs["input_ids"], sampling=self.sampling, key=jax.random.fold_in(self.key, self.calls),
            pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
            pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"],
            session=self.session if self.reuse_cache else None,
        )
        self.session = out.session if self.reuse_cache else None
        self.prefilled.append(out.prefilled)
        self.calls += 1
        n = int(out.lengths[0])
        ids = [t for t in out.tokens[0, :n].tolist() if t not in self.sampling.stop_tokens]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class DialogueDescriber:
    """The dialogue engine over any `Chat`; keeps every transcript for inspection."""

    def __init__(self, chat: dialogue.Chat, templates: Mapping[str, Any] | None = None, *,
                 keyframe_turns: int = 4, clip_turns: int = 1, max_clip_frames: int = 8):
        self.chat = chat
        self.templates = templates if templates is not None else dialogue.load_templates()
        dialogue.schedule(self.templates, "keyframe", keyframe_turns)  # fail early on a bad turn count
        dialogue.schedule(self.templates, "clip", clip_turns)
        self.keyframe_turns, self.clip_turns, self.max_clip_frames = keyframe_turns, clip_turns, max_clip_frames
        self.transcripts: list[dialogue.DialogueResult] = []

    def describe_keyframe(self, frame, previous_description):
        r = dialogue.keyframe_dialogue(self.chat, frame, previous_description, self.templates,
                                       turns=self.keyframe_turns)
        self.transcripts.append(r)
        return r.text

    def describe_clip(self, frames, keyframe_description):
        frames = np.asarray(frames)
        if len(frames) > self.max_clip_frames:
            # Uniform subsampling keeps first and last frames; the vision tokens grow with every frame pair.
            frames = frames[np.linspace(0, len(frames) - 1, self.max_clip_frames).round().astype(int)]
        r = dialogue.clip_dialogue(self.chat, frames, keyframe_description, self.templates, turns=self.clip_turns)
        self.transcripts.append(r)
        return r.text


class FixedDescriber:
    """Texts the user wrote: `{"keyframe": [D_F per keyframe], "clip": [D_C per clip]}`, used in order."""

    def __init__(self, texts: str | Mapping[str, Sequence[str]]):
        if isinstance(texts, str):
            if not os.path.isfile(texts):
                raise ConfigError(f"{texts}: no such descriptions file")
            try:
                with open(texts, encoding="utf-8") as f:
                    texts = json.load(f)
            except ValueError as e:
                raise ConfigError(f"descriptions file is not valid JSON ({e})") from None
        if not isinstance(texts, Mapping) or not all(
            isinstance(texts.get(k, []), list) and all(isinstance(s, str) for s in texts.get(k, []))
            for k in ("keyframe", "clip")
        ):
            raise ConfigError('descriptions must look like {"keyframe": ["..."], "clip": ["..."]}')
        self.texts = {k: list(texts.get(k, [])) for k in ("keyframe", "clip")}
        self.used = {"keyframe": 0, "clip": 0}

    def _next(self, kind: str) -> str:
        i = self.used[kind]
        if i >= len(self.texts[kind]):
            raise ConfigError(f"the descriptions file has {len(self.texts[kind])} {kind} texts; {kind} {i} needs one more")
        self.used[kind] += 1
        return self.texts[kind][i]

    def describe_keyframe(self, frame, previous_description):
        return self._next("keyframe")

    def describe_clip(self, frames, keyframe_description):
        return self._next("clip")


class NoneDescriber:
    """Empty texts: the decoder then runs unconditionally."""

    def describe_keyframe(self, frame, previous_description):
        return ""

    def describe_clip(self, frames, keyframe_description):
        return ""


class OverrideDescriber:
    """Per-encode steering: `keyframe={index: text}` / `clip={index: text}` replace those descriptions.

    An overridden D_F is also what the next keyframe's dialogue sees as its predecessor (the previous
    description passed in by the caller), since it is the text that gets transmitted.
    """

    def __init__(self, base: Describer, *, keyframe: Mapping[int, str] | None = None,
                 clip: Mapping[int, str] | None = None):
        self.base = base
        self.overrides = {"keyframe": dict(keyframe or {}), "clip": dict(clip or {})}
        self.count = {"keyframe": 0, "clip": 0}

    def _take(self, kind: str) -> str | None:
        i = self.count[kind]
        self.count[kind] += 1
        return self.overrides[kind].get(i)

    def describe_keyframe(self, frame, previous_description):
        text = self._take("keyframe")
        return text if text is not None else self.base.describe_keyframe(frame, previous_description)

    def describe_clip(self, frames, keyframe_description):
        text = self._take("clip")
        return text if text is not None else self.base.describe_clip(frames, keyframe_description)


def make_describer(
    backend: str,
    *,
    weights_dir: str | None = None,
    preset: str = "tiny",
    fixed_texts: str | Mapping[str, Sequence[str]] | None = None,
    templates: str | None = None,
    prompt_overrides: Mapping[str, str] | None = None,
    keyframe_turns: int = 4,
    clip_turns: int = 1,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    value_range=(0.0, 1.0),
    dtype=jnp.float32,
) -> Describer:
    """Build a backend by name. qwen2-vl: converted weights from `weights_dir`, else random `preset` weights;
    `dtype` is its compute dtype."""
    if backend == "none":
        return NoneDescriber()
    if backend == "fixed":
        if fixed_texts is None:
            raise ConfigError("the 'fixed' describer needs a descriptions JSON file")
        return FixedDescriber(fixed_texts)
    if backend == "qwen2-vl":
        if weights_dir and not os.path.isfile(os.path.join(weights_dir, "config.json")):
            raise WeightsError(
                f"{weights_dir}: no converted Qwen2-VL weights; make them with "
                f"`python -m convert_weights qwen2-vl <transformers Qwen2-VL folder> {weights_dir}`"
            )
        model = load_model(weights_dir, dtype=dtype) if weights_dir else random_model(preset, seed=seed, dtype=dtype)
        chat = Qwen2VLChat(model, load_tokenizer(weights_dir), sampling=sampling, seed=seed, value_range=value_range)
        return DialogueDescriber(chat, dialogue.load_templates(templates, prompt_overrides),
                                 keyframe_turns=keyframe_turns, clip_turns=clip_turns)
    raise ConfigError(f"unknown describer {backend!r}; one of {', '.join(BACKENDS)}")
