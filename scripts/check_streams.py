"""Byte-identity check of the bundled clip's streams and decodes against recorded SHA-256 sums.

    python scripts/check_streams.py                 # encode + decode each job, compare with REFERENCE
    python scripts/check_streams.py --print         # print the sums of this tree (to record new ones)

A refactoring that must not change behaviour keeps these sums: the bitstream of each preset and its
decode (.y4m, raw frames) on `assets/clips/bikes_4s.mp4`, plus the README's main job (the demo preset on
the whole clip). The sums were recorded on the x86-64 AMD EPYC machine the project was developed on;
another CPU may round differently in the decoder's sampling (the streams of `demo` should still match).
Exit status 1 on any mismatch. Runs the `m3cvc` command of this interpreter, about two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile

CLIP = "assets/clips/bikes_4s.mp4"
JOBS = {  # name: encode arguments after INPUT -o OUT
    "tiny": ["--preset", "tiny", "--set", "video.max_frames=16"],
    "demo": ["--preset", "demo", "--set", "video.max_frames=16"],
    "main": [],  # README's main job: the default preset on the whole clip
}
# Streams (.m3cvc) recorded for container v2 and the demo's learned index prior (issue 16). Decodes (.y4m)
# re-recorded for issue 21: keyframes decoded in one batch and SEINE windows sampled in batched programs
# (tiny: rounding), and the demo preset's 8 SEINE steps instead of 25 (demo, main); the streams did not change.
REFERENCE = {
    "tiny.m3cvc": "e7fd6a2723db06fc82a91f4143281f265f380810fdfe42c439e65cbc1af53a17",
    "tiny.y4m": "6d678e781b09bca5366e5743cd171afcab4cc3e7af5addf66ef12ca33fc8f47d",
    "demo.m3cvc": "9a25123eba6e1225208a056690a5971b0831cc0a3b6f5310561d811b480fc2fe",
    "demo.y4m": "921ff92bed53dc27945c3113bc4b8fcaa35f19cada9d21ebcc82e9486add9cb7",
    "main.m3cvc": "5bb4a7a4e316329dd5cfac2432fab8681b9981095a2398033d9bd45e9eb23b4f",
    "main.y4m": "c61c9817c561713147a53d4f349c1ad4923ed6db8bf5528e3439e0bd41d64393",
}


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def m3cvc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "m3cvc_jax", *args], check=True, stdout=subprocess.DEVNULL)


def run_jobs(workdir: str) -> dict[str, str]:
    sums = {}
    for name, extra in JOBS.items():
        stream, frames = os.path.join(workdir, f"{name}.m3cvc"), os.path.join(workdir, f"{name}.y4m")
        m3cvc("encode", CLIP, "-o", stream, *extra)
        m3cvc("decode", stream, "-o", frames)
        sums[f"{name}.m3cvc"], sums[f"{name}.y4m"] = sha256(stream), sha256(frames)
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print this tree's sums, compare nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        sums = run_jobs(workdir)
    bad = 0
    for name, digest in sums.items():
        if args.print:
            print(f'    "{name}": "{digest}",')
            continue
        ok = digest == REFERENCE[name]
        bad += not ok
        print(f"{'same' if ok else 'DIFFERENT':9s} {name} {digest}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
