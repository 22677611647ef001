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
    "tiny.m3cvc": "a0add0bbfc5f1d574e617c51edc592f2e50bb26e3f5b78378e18c5515446c796",
    "tiny.y4m": "ef609db7488acd5366d8ae1f7445dce1ae1dbec8574963b045e37ecd85459134",
    "demo.m3cvc": "d72019774fb9db3d8247f7532209fb292baaaaf275929dd3070951b7cf4a8ec5",
    "demo.y4m": "7bebd5d38cc25c05f7cad42ae5f3db7a146450f6fb392e9eacbc0addacc75901",
    "main.m3cvc": "8bba6edb95e08c0816014f4081b60a10703a301d28812775903a46f9a078459b",
    "main.y4m": "5fcaa7d1517bb6743694bdd50f45c9d33941acf9d446cf6ab157e9e91f063061",
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
