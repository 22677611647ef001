"""Bytes per description for each text codec, on held-out keyframe and clip descriptions.

    python -m benchmarks.text_coding                      # measure (uses the shipped dictionary)
    python -m benchmarks.text_coding --train-dictionary   # choose + train the zstd dictionary, then measure

Data: benchmarks/data/descriptions_{keyframe,clip}.txt, one description per line, written in the style of
Qwen2-VL's summaries (objects + background, differences to the previous keyframe; main motion of a clip).
Every 4th description (index % 4 == 3) is held out for the measurement; the dictionary's kind and size are
chosen on a validation part of the rest (index % 4 == 2) and it is then trained on all non-held-out ones.
Two figures per codec: a description coded alone, and the texts of one stream (3 keyframe + 1 clip
descriptions) coded together, which is what the bitstream does. The last line compares the default codec
with the paper's LZW on the joint figure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os

import zstandard as zstd

from m3cvc_jax.codec import text_coding
from m3cvc_jax.codec.bitstream import decode_texts, encode_texts
from m3cvc_jax.io.atomic import atomic_write_bytes

DATA = os.path.join(os.path.dirname(__file__), "data")


def load() -> tuple[list[str], list[str]]:
    def read(name):
        with open(os.path.join(DATA, f"descriptions_{name}.txt"), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]

    return read("keyframe"), read("clip")


def split(texts: list[str], part: int) -> list[str]:
    return [t for i, t in enumerate(texts) if i % 4 == part]


def groups(kf: list[str], clip: list[str]) -> list[tuple[list[str], list[str]]]:
    """Streams of 3 keyframe descriptions + 1 clip description."""
    n = min(len(kf) // 3, len(clip))
    return [(kf[3 * g : 3 * g + 3], [clip[g]]) for g in range(n)]


def dictionary_candidates(samples: list[bytes]) -> dict[str, bytes]:
    out = {}
    for size in (1024, 2048, 4096, 8192):
        out[f"trained-{size}"] = zstd.train_dictionary(size, samples).as_bytes()
    raw = b"\n".join(samples)
    for size in (2048, 4096, 8192):
        # Raw-content dictionaries: zstd matches against their tail first, so keep the most recent text.
        out[f"raw-{size}"] = raw[-size:]
    return out


def zstd_dict_size(data: bytes, d: bytes) -> int:
    params = zstd.ZstdCompressionParameters.from_level(
        19, format=zstd.FORMAT_ZSTD1_MAGICLESS, write_content_size=False, write_checksum=False, write_dict_id=False
    )
    return len(zstd.ZstdCompressor(compression_params=params, dict_data=zstd.ZstdCompressionDict(d)).compress(data))


def train_dictionary(kf: list[str], clip: list[str]) -> None:
    fit = [t.encode() for p in (0, 1) for t in split(kf, p) + split(clip, p)]
    val = [t.encode() for t in split(kf, 2) + split(clip, 2)]
    scores = {name: sum(zstd_dict_size(v, d) for v in val) for name, d in dictionary_candidates(fit).items()}
    for name, score in sorted(scores.items(), key=lambda kv: kv[1]):
        print(f"dictionary {name:>13}: {score / len(val):6.1f} validation bytes per description")
    best = min(scores, key=scores.get)
    train = fit + val
    final = dictionary_candidates(train)[best]
    meta = {
        "about": "zstd dictionary for description texts; built by `python -m benchmarks.text_coding "
        "--train-dictionary` from benchmarks/data (held-out descriptions excluded)",
        "kind": best,
        "zstd_version": zstd.ZSTD_VERSION if hasattr(zstd, "ZSTD_VERSION") else zstd.__version__,
        "training_descriptions": len(train),
        "size": len(final),
        "sha256": hashlib.sha256(final).hexdigest(),
        "dictionary_base64": base64.b64encode(final).decode(),
    }
    atomic_write_bytes(text_coding.DICTIONARY_PATH, (json.dumps(meta, indent=1) + "\n").encode())
    text_coding.zstd_dictionary_bytes.cache_clear()
    print(f"chose {best}; wrote {text_coding.DICTIONARY_PATH} ({len(final)} bytes)")


def measure(kf: list[str], clip: list[str]) -> dict[str, tuple[float, float]]:
    held_kf, held_clip = split(kf, 3), split(clip, 3)
    held = held_kf + held_clip
    streams = groups(held_kf, held_clip)
    n_joint = sum(len(a) + len(b) for a, b in streams)
    raw_alone = sum(len(t.encode()) for t in held) / len(held)
    raw_joint = sum(len(t.encode()) for a, b in streams for t in a + b)
    print(f"held-out: {len(held)} descriptions ({len(held_kf)} keyframe, {len(held_clip)} clip), "
          f"{len(streams)} streams of 3+1; raw UTF-8 {raw_alone:.1f} bytes per description")
    results = {}
    for codec in text_coding.TEXT_CODECS:
        alone = 0
        for t in held:
            coded = text_coding.compress_text(t, codec)
            assert text_coding.decompress_text(coded, codec, 1 << 20) == t
            alone += len(coded)
        joint = 0
        for a, b in streams:
            coded = encode_texts(a, b, codec)
            assert decode_texts(coded, codec) == (tuple(a), tuple(b))
            joint += len(coded)
        results[codec] = (alone / len(held), joint / n_joint)
        print(f"{codec:>10}: {alone / len(held):6.1f} bytes/description alone, {joint / n_joint:6.1f} in a stream"
              f" ({8 * joint / raw_joint:.2f} bits per raw byte)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dictionary", action="store_true")
    args = parser.parse_args()
    kf, clip = load()
    if args.train_dictionary:
        train_dictionary(kf, clip)
    results = measure(kf, clip)
    best = min(results, key=lambda c: results[c][1])
    default = text_coding.DEFAULT_TEXT_CODEC
    print(f"smallest in a stream: {best}; library default: {default}"
          + ("" if best == default else "  <-- default differs from the measurement"))
    print(f"ratio={results[default][1] / results['lzw'][1]:.3f}")


if __name__ == "__main__":
    main()
