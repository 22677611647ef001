"""Long fuzzing run of the bitstream reader (the tests run the same properties briefly).

    python -m benchmarks.fuzz_bitstream [--seconds 120] [--seed 0]

Mutators: random bytes, truncation, bit flips, byte edits of the whole stream, and edits of the header
body or of one section payload re-wrapped with correct lengths and CRCs (to reach the parsers behind the
CRC checks), over streams of every text codec. Any exception other than BitstreamError, or an input that
takes over a second, is a failure: it is printed as hex and the exit status is 1. The last line compares
the time to reject a corrupt input with the time to read a valid one.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import traceback

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.text_coding import TEXT_CODECS
from tests.bitstream_mutations import assemble, check_unpack, split
from tests.bitstream_sample import sample_stream

SLOW_SECONDS = 1.0


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


def mutators(valid: dict[str, bytes]):
    parts = {codec: split(data) for codec, data in valid.items()}

    def random_bytes(rng, data):
        return rng.randbytes(rng.randint(0, 4096))

    def magic_then_random(rng, data):
        return bs.MAGIC + b"\x01" + rng.randbytes(rng.randint(0, 4096))

    def truncate(rng, data):
        return data[: rng.randrange(len(data))]

    def edit_stream(rng, data):
        return _edit(rng, data)

    def edit_header(rng, data, codec):
        body, sections = parts[codec]
        return assemble(_edit(rng, body), sections)

    def edit_section(rng, data, codec):
        body, sections = parts[codec]
        sections = list(sections)
        i = rng.randrange(len(sections))
        tag, payload = sections[i]
        if rng.random() < 0.2:
            tag = rng.randrange(256)
        sections[i] = (tag, _edit(rng, payload))
        if rng.random() < 0.2:
            sections = sections[: rng.randrange(len(sections) + 1)]
        return assemble(body, sections)

    plain = [random_bytes, magic_then_random, truncate, edit_stream]
    return plain, [edit_header, edit_section]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    extras = (bs.ExtraSection(7, b"extra payload"),)
    valid = {codec: bs.pack(sample_stream(codec, extras)) for codec in TEXT_CODECS}
    plain, structured = mutators(valid)

    t0 = time.perf_counter()
    n_valid = 0
    while time.perf_counter() - t0 < 0.5:
        for data in valid.values():
            bs.unpack(data)
            n_valid += 1
    valid_us = 1e6 * (time.perf_counter() - t0) / n_valid

    counts: collections.Counter = collections.Counter()
    failures = 0
    slowest = 0.0
    busy = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        codec = rng.choice(sorted(valid))
        if rng.random() < 0.5:
            m = rng.choice(plain)
            data = m(rng, valid[codec])
        else:
            m = rng.choice(structured)
            data = m(rng, valid[codec], codec)
        t = time.perf_counter()
        try:
            outcome = "accepted" if check_unpack(data) else "rejected"
        except Exception:
            outcome = "FAILURE"
            failures += 1
            print(f"FAILURE ({m.__name__}, {codec}): input hex {data.hex()}", file=sys.stderr)
            traceback.print_exc()
        dt = time.perf_counter() - t
        busy += dt
        slowest = max(slowest, dt)
        if dt > SLOW_SECONDS:
            failures += 1
            print(f"SLOW ({dt:.2f} s, {m.__name__}, {codec}): input hex {data.hex()}", file=sys.stderr)
        counts[(m.__name__, outcome)] += 1

    total = sum(counts.values())
    print(f"{total} inputs in {args.seconds:.0f} s (seed {args.seed}); failures: {failures}")
    for (name, outcome), n in sorted(counts.items()):
        print(f"  {name:>18}: {n:7d} {outcome}")
    corrupt_us = 1e6 * busy / max(total, 1)
    print(f"valid stream read: {valid_us:.1f} us; corrupt input handled: {corrupt_us:.1f} us on average, "
          f"slowest {1e3 * slowest:.1f} ms")
    print(f"ratio={corrupt_us / valid_us:.3f}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
