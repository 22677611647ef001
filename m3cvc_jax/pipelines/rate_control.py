"""Rate control: the settings whose stream lands at or under a target (`m3cvc encode --target-bpp X` /
`--target-bytes N`, `m3cvc eval` rate points `bpp:X` / `bytes:N`).

The knobs are the ones that set M3-CVC's rate: the keyframe decision (D_th for the CLIP + flow methods,
the interval for `fixed` and `cmvc`), the index grid among the post-encoders the weights offer
(`keyframe_codec.pixels_per_index`; random-weight presets have all of GRIDS, a weights folder has its own),
the dialogue turns (shorter texts) when there is a describer, and the weight of the indices' bits
against their distortion (`coding.rd_lambda` x1, x2, x4) when the config weighs them. Every combination
is encoded and the largest stream at or under the target wins (ties: the earlier candidate, i.e. the
finer grid, the more keyframes, the more turns, the smaller weight). The rate of a stream is known without decoding, and the encodes share one
cache (`Codec.encode(cache=)`): each keyframe decision, text set and VQ map is computed once, so a search
costs little more than its distinct keyframes' VQ encodes and the entropy coding. The chosen stream
records the target in a small skippable section (`codec/rate_target.py`), counted in its size.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec.rate_target import RateTarget
from m3cvc_jax.errors import M3CVCError, WeightsError
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.destination import check_file_output
from m3cvc_jax.io.video import Video
from m3cvc_jax.pipelines import settings as settings_lib
from m3cvc_jax.pipelines.codec import EncodeResult, Timings, read_input

GRIDS = (8, 16, 32)  # pixels per index tried with random weights (finest first)
THRESHOLD_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 16.0)  # x the config's D_th (larger: fewer keyframes)
TURNS = (4, 2, 1)
RD_FACTORS = (2.0, 4.0)  # x the config's coding.rd_lambda (codec/index_rdo.py)


@dataclasses.dataclass
class RateChoice:
    stream: bs.Bitstream  # with the target section
    overrides: tuple[str, ...]  # the `--set` values chosen (on top of the codec's config)
    size: int  # bytes of the file
    max_bytes: int  # the target for this video, in bytes
    sizes: dict  # bytes of every candidate encoded, by its overrides (the search's table)


def derive(config, overrides: Sequence[str]):
    """`config` (frozen) with `--set`-style overrides applied and validated."""
    c = ml_collections.ConfigDict(config.to_dict())
    for o in overrides:
        settings_lib.apply_override(c, o)
    settings_lib.validate(c)
    return ml_collections.FrozenConfigDict(c)


def keyframe_candidates(config, num_frames: int) -> list[str]:
    """Keyframe settings from more keyframes to fewer."""
    k = config.keyframes
    if k.method in ("fixed", "cmvc"):
        n = int(k.interval)
        ladder = {n, 1, 2, 4, 8, 16, 32, 64}
        ladder |= {n * f for f in (2, 4, 8)}
        intervals = sorted(i for i in ladder if 1 <= i <= max(n, num_frames))
        return [f"keyframes.interval={i}" for i in intervals]
    d = float(k.threshold)
    return [f"keyframes.threshold={d * f!r}" for f in THRESHOLD_FACTORS]


def grid_candidates(codec) -> list[str]:
    if not codec.mode.keyframe_images:  # text only (tt2v): no index grid
        return [""]
    if codec.models.root is not None:  # a weights folder: its post-encoder fixes the grid
        return [f"keyframe_codec.pixels_per_index={int(codec.config.keyframe_codec.pixels_per_index)}"]
    v = codec.config.video
    return [f"keyframe_codec.pixels_per_index={g}" for g in GRIDS if v.width % g == 0 and v.height % g == 0]


def turn_candidates(config) -> list[str]:
    if config.dialogue.describer == "none":
        return [""]
    turns = sorted({t for t in TURNS if t <= int(config.dialogue.turns)} | {int(config.dialogue.turns)},
                   reverse=True)
    return [f"dialogue.turns={t}" for t in turns]


def rd_candidates(config) -> list[str]:
    """The config's rate-distortion weight of the indices and larger ones (fewer bits for the same maps'
    places): only when the config already weighs bits (a learned prior); lambda 0 stays the paper's choice."""
    lam = float(config.coding.rd_lambda)
    if not lam:
        return [""]
    return [""] + [f"coding.rd_lambda={lam * f!r}" for f in RD_FACTORS]


def candidates(codec, num_frames: int) -> list[tuple[str, ...]]:
    """Every combination, finest grid, most keyframes, most turns and smallest RD weight first."""
    out = []
    for g in grid_candidates(codec):
        for k in keyframe_candidates(codec.config, num_frames):
            for t in turn_candidates(codec.config):
                for r in rd_candidates(codec.config):
                    out.append(tuple(o for o in (g, k, t, r) if o))
    return out


def search(codec, video: Video, target: RateTarget) -> RateChoice:
    """The largest stream at or under `target` over `candidates`; M3CVCError naming the smallest reachable
    size when none fits."""
    t, h, w, _ = video.frames.shape
    max_bytes = target.max_bytes(w, h, t)
    cache: dict = {}
    best, sizes = None, {}
    for overrides in candidates(codec, t):
        try:
            candidate = codec.with_config(derive(codec.config, overrides))
            stream, _ = candidate.encode(video, cache=cache)
        except WeightsError:  # a grid these weights do not offer
            continue
        stream = dataclasses.replace(stream, extras=stream.extras + (target.section(),))
        size = sizes[overrides] = len(bs.pack(stream, bs.WRITE_VERSION))
        if size <= max_bytes and (best is None or size > best.size):
            best = RateChoice(stream, overrides, size, max_bytes, sizes)
    if best is None:
        if not sizes:
            raise M3CVCError("rate control: no candidate setting could be encoded")
        overrides = min(sizes, key=sizes.get)
        size = sizes[overrides]
        raise M3CVCError(f"target {target.label} ({max_bytes} bytes for {t} frames at {w}x{h}) is unreachable: "
                         f"the smallest stream is {size} bytes ({8 * size / (w * h * t):.6g} bpp, with "
                         f"{' '.join(overrides)})")
    return best


def encode_file(codec, input_path: str, output_path: str, target: RateTarget):
    """`Codec.encode_file` under a rate target: (EncodeResult of the chosen stream, RateChoice)."""
    check_file_output(output_path, input_path)  # before the long part, not after
    timings = Timings()
    with timings.stage("read"):
        video = read_input(input_path, codec.config)
    with timings.stage("rate search"):
        choice = search(codec, video, target)
    with timings.stage("write"):
        bits = bsf.write_bitstream(output_path, choice.stream)
    return EncodeResult(choice.stream, bits, timings), choice
