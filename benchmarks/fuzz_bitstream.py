"""Long fuzzing run of the bitstream reader (the tests run the same properties briefly).

    python -m benchmarks.fuzz_bitstream [--cases 100000] [--seed 0]

Mutators, over valid v1 and v2 streams of every text codec: random bytes; random bytes after a valid magic;
truncations; bit flips; byte insertions; byte deletions; byte edits; splices (a prefix of one stream and
a suffix of another); and CRC-recomputed forgeries of the header and of every section (texts, indices,
extra), re-wrapped with correct lengths and CRCs so that the parsers behind the CRC checks are reached,
plus dropped, duplicated and reordered sections; for v2, random bytes after its magic and edits of
everything before the file CRC with the CRC recomputed.

Counts: crashes (any exception but BitstreamError, or a broken property of tests/bitstream_mutations.py:
an accepted input whose header or index/extra sections do not re-encode byte for byte), hangs (an input
taking over a second, stopped by an alarm), and accepted-but-different (accepted; only the compressed
texts re-encode to other bytes, i.e. a forged text payload that still decompresses). Exit status 1 on any
crash or hang; each is printed as hex. The last line compares the time to handle a mutated input with
the time to read a valid one.
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import sys
import time
import traceback

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.text_coding import TEXT_CODECS
from tests.bitstream_mutations import V2_START, assemble, check_unpack, is_v2, resign_v2, split
from tests.bitstream_sample import sample_stream

HANG_SECONDS = 1.0


class Hang(Exception):
    pass


def _edit(rng: random.Random, blob: bytes) -> bytes:
    out = bytearray(blob)
    for _ in range(rng.randint(1, 8)):
        op = rng.choice(("set", "insert", "delete", "flip"))
        if op == "insert" or not out:
            out.insert(rng.randint(0, len(out)), rng.randrange(256))
        elif op == "delete":
            del out[rng.randrange(len(out))]
        elif op == "set":
            out[rng.randrange(len(out))] = rng.choice((0, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        else:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def mutators(valid: dict[str, bytes]) -> dict[str, callable]:
    """name -> f(rng, codec) returning a mutated input."""
    parts = {codec: split(data) for codec, data in valid.items() if not is_v2(data)}
    codecs = sorted(valid)
    v1 = sorted(parts)

    def random_bytes(rng, codec):
        return rng.randbytes(rng.randint(0, 4096))

    def magic_then_random(rng, codec):
        return bs.MAGIC + b"\x01" + rng.randbytes(rng.randint(0, 4096))

    def truncation(rng, codec):
        return valid[codec][: rng.randrange(len(valid[codec]))]

    def bit_flips(rng, codec):
        data = bytearray(valid[codec])
        for p in rng.sample(range(8 * len(data)), rng.randint(1, 4)):  # distinct: no flip undoes another
            data[p // 8] ^= 1 << (p % 8)
        return bytes(data)

    def insertion(rng, codec):
        data = valid[codec]
        i = rng.randint(0, len(data))
        return data[:i] + rng.randbytes(rng.randint(1, 16)) + data[i:]

    def deletion(rng, codec):
        data = valid[codec]
        i = rng.randrange(len(data))
        return data[:i] + data[i + rng.randint(1, 16):]

    def byte_edits(rng, codec):
        return _edit(rng, valid[codec])

    def splice(rng, codec):
        a, b = valid[codec], valid[rng.choice(codecs)]
        return a[: rng.randint(0, len(a))] + b[rng.randint(0, len(b)):]

    def v2_magic_then_random(rng, codec):
        return V2_START + rng.randbytes(rng.randint(0, 4096))

    def v2_forged_behind_crc(rng, codec):
        data = valid[codec] if is_v2(valid[codec]) else valid["v2-" + codec]
        return resign_v2(_edit(rng, data[:-4]))

    def forged_header(rng, codec):
        codec = codec if codec in parts else rng.choice(v1)
        body, sections = parts[codec]
        return assemble(_edit(rng, body), sections)

    def forged_section(i):
        def forge(rng, codec):
            codec = codec if codec in parts else rng.choice(v1)
            body, sections = parts[codec]
            sections = list(sections)
            tag, payload = sections[i]
            if rng.random() < 0.1:
                tag = rng.randrange(256)
            sections[i] = (tag, _edit(rng, payload))
            return assemble(body, sections)

        return forge

    def forged_section_list(rng, codec):
        codec = codec if codec in parts else rng.choice(v1)
        body, sections = parts[codec]
        sections = list(sections)
        op = rng.choice(("drop", "duplicate", "swap"))
        i, j = rng.randrange(len(sections)), rng.randrange(len(sections))
        if op == "drop":
            del sections[i]
        elif op == "duplicate":
            sections.insert(j, sections[i])
        else:
            sections[i], sections[j] = sections[j], sections[i]
        return assemble(body, sections)

    out = {f.__name__: f for f in (random_bytes, magic_then_random, truncation, bit_flips, insertion, deletion,
                                   byte_edits, splice, forged_header, forged_section_list, v2_magic_then_random,
                                   v2_forged_behind_crc)}
    names = {bs.TAG_TEXTS: "texts", bs.TAG_INDICES: "indices"}
    for i, (tag, _) in enumerate(next(iter(parts.values()))[1]):
        out[f"forged_section_{names.get(tag, f'extra{tag & 0x7F}')}"] = forged_section(i)
    return out


def _alarm(signum, frame):
    raise Hang()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    extras = (bs.ExtraSection(7, b"extra payload"),)
    valid = {codec: bs.pack(sample_stream(codec, extras)) for codec in TEXT_CODECS}
    valid.update({f"v2-{codec}": bs.pack(sample_stream(codec, extras), 2) for codec in TEXT_CODECS})
    muts = mutators(valid)
    names, codecs = sorted(muts), sorted(valid)

    t0 = time.perf_counter()
    n_valid = 0
    while time.perf_counter() - t0 < 0.5:
        for data in valid.values():
            bs.unpack(data)
            n_valid += 1
    valid_us = 1e6 * (time.perf_counter() - t0) / n_valid

    signal.signal(signal.SIGALRM, _alarm)
    counts: collections.Counter = collections.Counter()
    crashes = hangs = 0
    slowest = 0.0
    start = time.perf_counter()
    for _ in range(args.cases):
        name, codec = rng.choice(names), rng.choice(codecs)
        data = muts[name](rng, codec)
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            outcome = check_unpack(data)
        except Hang:
            outcome = "hang"
            hangs += 1
            print(f"HANG ({name}, {codec}): input hex {data.hex()}", file=sys.stderr)
        except Exception:
            outcome = "crash"
            crashes += 1
            print(f"CRASH ({name}, {codec}): input hex {data.hex()}", file=sys.stderr)
            traceback.print_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - t)
        counts[(name, outcome)] += 1
    elapsed = time.perf_counter() - start

    total = sum(counts.values())
    different = sum(n for (_, o), n in counts.items() if o == "accepted-different")
    print(f"cases {total} in {elapsed:.1f} s (seed {args.seed}): crashes {crashes}, hangs {hangs}, "
          f"accepted-but-different {different}")
    outcomes = ("rejected", "accepted", "accepted-different", "crash", "hang")
    print(f"  {'mutator':>26} " + " ".join(f"{o:>18}" for o in outcomes))
    for name in names:
        print(f"  {name:>26} " + " ".join(f"{counts[(name, o)]:18d}" for o in outcomes))
    mutated_us = 1e6 * elapsed / max(total, 1)
    print(f"valid stream read: {valid_us:.1f} us; mutated input handled: {mutated_us:.1f} us on average "
          f"(mutation included), slowest {1e3 * slowest:.1f} ms")
    print(f"ratio={mutated_us / valid_us:.3f}")
    return 1 if crashes or hangs else 0


if __name__ == "__main__":
    raise SystemExit(main())
