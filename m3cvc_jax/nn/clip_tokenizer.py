"""The OpenAI CLIP tokenizer, offline and torch-free, built with the `tokenizers` library.

The BPE merges are the bundled `m3cvc_jax/assets/bpe_simple_vocab_16e6.txt.gz` (OpenAI, MIT). The vocabulary
is derived from them the way OpenAI's `SimpleTokenizer` does: 256 byte symbols, the same with `</w>`, one
token per merge, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). Pre-tokenisation and
normalisation are those of transformers' `CLIPTokenizerFast` (NFC, whitespace collapse, lower case, CLIP's
regex, byte-level). OpenAI/open_clip additionally run `ftfy.fix_text` (mojibake repair) and
`html.unescape` twice; we do the `html.unescape` but not ftfy, so only broken-Unicode input can differ.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
from typing import Sequence

import numpy as np

BOS_ID = 49406  # <|startoftext|>
EOS_ID = 49407  # <|endoftext|>
CONTEXT_LENGTH = 77
_NUM_MERGES = 49152 - 256 - 2
_PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def vocab_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                        "bpe_simple_vocab_16e6.txt.gz")


def _byte_table() -> dict[int, str]:
    """GPT-2/CLIP's printable stand-in character for each byte value."""
    table, extra = {}, 0
    for b in range(256):
        if b in _PRINTABLE:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _bytes_to_unicode() -> list[str]:
    # OpenAI orders the base vocabulary printable bytes first, then the remapped ones.
    table = _byte_table()
    return [table[b] for b in _PRINTABLE + [b for b in range(256) if b not in _PRINTABLE]]


@functools.lru_cache(maxsize=None)
def _backend():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers  # a slow import, needed only to tokenize

    with gzip.open(vocab_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES + 1]]
    symbols = _bytes_to_unicode()
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                               fuse_unk=False, unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return tok


def encode(text: str) -> list[int]:
    """BPE ids of `text` without the start/end tokens."""
    text = html.unescape(html.unescape(text)).strip()
    return _backend().encode(text, add_special_tokens=False).ids


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH, *, pad_id: int = EOS_ID,
             return_mask: bool = False):
    """Token ids `(N, context_length)` int32: `<|startoftext|> ids <|endoftext|>` then `pad_id`.

    Too long texts are cut and end with `<|endoftext|>` (as OpenAI/open_clip). `pad_id` defaults to
    `<|endoftext|>` as in the transformers tokenizers of OpenAI CLIP and Stable Diffusion 1.x; open_clip
    pads with 0 and SD 2.x with 0 too. With `return_mask`, also the (N, context_length) attention mask.
    """
    if isinstance(texts, str):
        texts = [texts]
    ids = np.full((len(texts), context_length), pad_id, np.int32)
    mask = np.zeros((len(texts), context_length), np.int32)
    for i, text in enumerate(texts):
        toks = [BOS_ID, *encode(text)][:context_length - 1] + [EOS_ID]
        ids[i, :len(toks)] = toks
        mask[i, :len(toks)] = 1
    return (ids, mask) if return_mask else ids


def decode(ids: Sequence[int]) -> str:
    """Text of ids: skips `<|startoftext|>`, stops at the first `<|endoftext|>` (so any padding is dropped)."""
    tok = _backend()
    byte_of = {ch: b for b, ch in _byte_table().items()}
    out = bytearray()
    for i in map(int, ids):
        if i == EOS_ID:
            break
        if i == BOS_ID:
            continue
        piece = tok.id_to_token(i)
        word_end = piece.endswith("</w>")
        out += bytes(byte_of[c] for c in (piece[:-4] if word_end else piece))
        if word_end:
            out += b" "
    return out.decode("utf-8", errors="replace").strip()
