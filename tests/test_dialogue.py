"""The M3-CVC dialogues (turn structure, prompts, history), template editing, describer backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.lmm import dialogue
from m3cvc_jax.lmm.chat import format_chat
from m3cvc_jax.lmm.describers import (
    DialogueDescriber, FixedDescriber, NoneDescriber, OverrideDescriber, Qwen2VLChat, make_describer,
)
from m3cvc_jax.lmm.generate import SamplingConfig
from m3cvc_jax.lmm.processor import ProcessorConfig


class FakeChat:
    """Answers "answer N" and records what it was shown."""

    def __init__(self):
        self.calls = []

    def reply(self, messages, *, images=(), videos=()):
        self.calls.append({"messages": [dict(m) for m in messages], "images": len(images), "videos": len(videos)})
        return f" answer {len(self.calls)} "


FRAME = np.zeros((56, 56, 3), np.uint8)
CLIP = np.zeros((4, 56, 56, 3), np.uint8)


@pytest.fixture(scope="module")
def templates():
    return dialogue.load_templates()


def _user_texts(messages):
    return [m["content"][-1]["text"] for m in messages if m["role"] == "user"]


def test_keyframe_dialogue_four_turns(templates):
    chat = FakeChat()
    r = dialogue.keyframe_dialogue(chat, FRAME, "a red car on a road", templates, turns=4)
    assert [t.name for t in r.turns] == ["objects", "differences", "details", "summary"]
    assert r.text == "answer 4"  # the last answer, stripped, is D_F
    assert "a red car on a road" in r.turns[1].prompt
    assert "60 words" in r.turns[3].prompt
    # Turn k sees the system prompt, k user prompts and the k-1 earlier answers; the image rides on turn 1 only.
    for k, call in enumerate(chat.calls, start=1):
        msgs = call["messages"]
        assert msgs[0] == {"role": "system", "content": templates["system"]}
        assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * (k - 1) + ["user"]
        assert [m["content"] for m in msgs[1:] if m["role"] == "assistant"] == [f"answer {i}" for i in range(1, k)]
        assert msgs[1]["content"][0] == {"type": "image"}
        assert all(item.get("type") != "image" for m in msgs[2:] if m["role"] == "user" for item in m["content"])
        assert call["images"] == 1 and call["videos"] == 0
    assert _user_texts(chat.calls[-1]["messages"]) == [t.prompt for t in r.turns]


def test_keyframe_dialogue_turn_counts_and_first_keyframe(templates):
    for turns, names in ((1, ["single"]), (2, ["objects", "summary"])):
        chat = FakeChat()
        r = dialogue.keyframe_dialogue(chat, FRAME, None, templates, turns=turns)
        assert [t.name for t in r.turns] == names and len(chat.calls) == turns
    r = dialogue.keyframe_dialogue(FakeChat(), FRAME, None, templates, turns=4)
    assert templates["keyframe"]["no_previous"] in r.turns[1].prompt
    with pytest.raises(ConfigError, match="3 turns"):
        dialogue.keyframe_dialogue(FakeChat(), FRAME, None, templates, turns=3)


def test_clip_dialogue_uses_keyframe_description(templates):
    chat = FakeChat()
    r = dialogue.clip_dialogue(chat, CLIP, "D_F text", templates, turns=1)
    assert r.text == "answer 1" and [t.name for t in r.turns] == ["motion"]
    assert "D_F text" in r.turns[0].prompt
    assert chat.calls[0]["messages"][1]["content"][0] == {"type": "video"} and chat.calls[0]["videos"] == 1
    r2 = dialogue.clip_dialogue(FakeChat(), CLIP, "D_F text", templates, turns=2)
    assert [t.name for t in r2.turns] == ["events", "motion_summary"]


def test_templates_are_editable(tmp_path, templates):
    steered = dialogue.load_templates(overrides={"keyframe.turns.summary": "Say only: {max_words}!",
                                                 "keyframe.max_words": "7"})
    r = dialogue.keyframe_dialogue(FakeChat(), FRAME, None, steered, turns=2)
    assert r.turns[1].prompt == "Say only: 7!"
    edited = dict(templates, system="Be terse.")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(edited))
    chat = FakeChat()
    dialogue.keyframe_dialogue(chat, FRAME, None, dialogue.load_templates(str(path)), turns=1)
    assert chat.calls[0]["messages"][0]["content"] == "Be terse."
    with pytest.raises(ConfigError, match="no entry"):
        dialogue.load_templates(overrides={"keyframe.turns.nope": "x"})
    bad = dict(templates, keyframe=dict(templates["keyframe"], turns={"single": "{unknown_field}"}, schedules={"1": ["single"]}))
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="unknown placeholders"):
        dialogue.keyframe_dialogue(FakeChat(), FRAME, None, dialogue.load_templates(str(path)), turns=1)


def test_fixed_none_and_override_describers(tmp_path):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"keyframe": ["k0", "k1"], "clip": ["c0"]}))
    fixed = make_describer("fixed", fixed_texts=str(path))
    assert fixed.describe_keyframe(FRAME, None) == "k0"
    assert fixed.describe_keyframe(FRAME, "k0") == "k1"
    assert fixed.describe_clip(CLIP, "k1") == "c0"
    with pytest.raises(ConfigError, match="clip 1 needs one more"):
        fixed.describe_clip(CLIP, "k1")
    none = make_describer("none")
    assert none.describe_keyframe(FRAME, None) == "" and none.describe_clip(CLIP, "") == ""
    with pytest.raises(WeightsError, match="convert_weights qwen2-vl"):
        make_describer("qwen2-vl", weights_dir=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="unknown describer"):
        make_describer("gpt")
    with pytest.raises(ConfigError):
        FixedDescriber({"keyframe": "not a list"})

    base = DialogueDescriber(FakeChat(), keyframe_turns=2)
    steer = OverrideDescriber(base, keyframe={1: "user text"}, clip={0: "user motion"})
    assert steer.describe_keyframe(FRAME, None) == "answer 2"
    assert steer.describe_keyframe(FRAME, "answer 2") == "user text"
    assert len(base.chat.calls) == 2  # the overridden keyframe asked the model nothing
    assert steer.describe_clip(CLIP, "user text") == "user motion"
    assert isinstance(OverrideDescriber(NoneDescriber()).describe_clip(CLIP, ""), str)


def test_dialogue_with_tiny_random_qwen2_vl(tmp_path):
    """The real chat path: tokenizer, processor, Flax model, generation. Texts are gibberish."""
    from m3cvc_jax.lmm.model_io import random_model
    from m3cvc_jax.lmm.tokenizer import qwen2_tokenizer

    tok = qwen2_tokenizer(str(tmp_path))
    chat = Qwen2VLChat(random_model("tiny", seed=1), tok, sampling=SamplingConfig(max_new_tokens=6),
                       processor=ProcessorConfig(video_min_pixels=56 * 56), length_bucket=128)
    describer = DialogueDescriber(chat, keyframe_turns=2, clip_turns=1)
    rng = np.random.default_rng(0)
    d_f = describer.describe_keyframe(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8), None)
    kf = describer.transcripts[-1]
    assert [t.name for t in kf.turns] == ["objects", "summary"] and d_f == kf.turns[-1].response
    # The second prompt the model saw is the whole conversation in Qwen2-VL's chat format.
    inputs = chat.last_inputs
    assert inputs["image_grid_thw"] == ((1, 4, 4),)
    n_pad = int((inputs["input_ids"] == 151655).sum())
    assert n_pad == 4 and inputs["mm_token_type_ids"].sum() == 4
    expected = format_chat(kf.messages[:-1]).replace("<|image_pad|>", "<|image_pad|>" * n_pad)
    assert tok.decode(inputs["input_ids"][0], skip_special_tokens=False) == expected
    assert kf.turns[0].response in expected

    d_c = describer.describe_clip(rng.integers(0, 256, (3, 56, 56, 3), dtype=np.uint8), d_f)
    clip = describer.transcripts[-1]
    assert d_c == clip.text and d_f in clip.turns[0].prompt
    assert chat.last_inputs["video_grid_thw"] == ((2, 4, 4),)
    assert int((chat.last_inputs["input_ids"] == 151656).sum()) == 8
    assert chat.calls == 3


def test_later_turns_reuse_the_kv_cache_and_answer_the_same(tmp_path):
    """Turn 2 of a keyframe dialogue prefills only the tokens after the cached prompt + answer; its answer,
    and the first-token logits, equal a full prefill of the whole conversation."""
    from m3cvc_jax.lmm.generate import Generator
    from m3cvc_jax.lmm.model_io import random_model
    from m3cvc_jax.lmm.tokenizer import qwen2_tokenizer

    tok = qwen2_tokenizer(str(tmp_path))
    model = random_model("tiny", seed=1)
    frame = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    texts, chats = {}, {}
    for reuse in (False, True):
        chat = Qwen2VLChat(model, tok, sampling=SamplingConfig(max_new_tokens=6), length_bucket=32,
                           reuse_cache=reuse)
        texts[reuse] = DialogueDescriber(chat, keyframe_turns=4, clip_turns=1).describe_keyframe(frame, None)
        chats[reuse] = chat
    assert texts[True] == texts[False]
    full, reused = chats[False].prefilled, chats[True].prefilled
    assert reused[0] == full[0] and all(r < f for r, f in zip(reused[1:], full[1:])), (reused, full)
    # A new image is never served from the cache.
    chat = chats[True]
    chat.reply([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], images=[frame[::-1]])
    assert chat.prefilled[-1] == chat.last_inputs["input_ids"].shape[1]

    # The first-token logits of a continued conversation agree with a full prefill of it.
    import jax

    gen, sampling = Generator(model, length_bucket=32), SamplingConfig(max_new_tokens=3)
    inputs = chat.last_inputs
    out = gen.generate(inputs["input_ids"], sampling=sampling, pixel_values=inputs["pixel_values"],
                       image_grid_thw=inputs["image_grid_thw"])
    follow = np.concatenate([inputs["input_ids"], out.tokens[:, :2], np.asarray([[151645, 198, 9707]])], axis=1)
    p = gen.prepare(follow, image_grid_thw=inputs["image_grid_thw"], max_new_tokens=3)
    reuse = gen._reusable(out.session, follow, out.session.vision)
    # 3 tokens generated, the first 2 fed back: the cache holds the prompt and those 2.
    assert out.tokens.shape[1] == 3 and reuse == inputs["input_ids"].shape[1] + 2
    _, cache, got, _ = gen._extend_prefill(out.session, reuse, p, sampling, jax.random.key(0))
    _, _, want = gen._prefill(gen.state, p["ids"], p["positions"], p["valid"], jax.numpy.int32(p["true_len"]),
                              jax.numpy.asarray(inputs["pixel_values"]), None, jax.random.key(0),
                              image_grid_thw=p["image_grid_thw"], video_grid_thw=None, max_len=p["max_len"],
                              sampling=sampling)
    assert int(cache.end) == follow.shape[1]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
