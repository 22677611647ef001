"""Codec "ours" for `m3cvc eval`: the real encode pipeline writes a real bitstream, the real decoder reads it.

A rate point is a string of `-`-separated knobs, each a `--set` override applied after the user's:

    g<N>   keyframe_codec.pixels_per_index = N   (the index grid: 16 -> 32x20 indices at 512x320, 8 -> 64x40)
    t<X>   keyframes.threshold = X               (D_th: lower -> more keyframes -> more bits)
    i<N>   keyframes.interval = N                (keyframes.method=fixed: one keyframe every N frames)

    <mode> decode.mode = a mode of pipelines/modes.py (`interpolation`, `prediction`, `it2v`); a mode's own
           keyframe method applies unless set (it2v: keyframes.method=cmvc, CMVC's intervals of i<N>)

e.g. `g16-t0.25`, `g8-t0.125`, `g16-i4`, `it2v-i8` (CMVC IT2V, keyframes in intervals of 8). CMVC's text-only mode (`--set decode.mode=tt2v`) has no index
grid: its rate points are `i<N>` alone (`i8`, the CMVC keyframes' interval; `g` is refused), by default
the interval N, N/2, N/4. A rate point may instead be a rate target, `bpp:X` or `bytes:N`
(`--rate-points ours=bpp:0.01,bpp:0.02,bpp:0.04`): each sequence is then coded by rate control
(`pipelines/rate_control.py`, as `m3cvc encode --target-bpp`), so RD curves sweep bitrate as with a
classical codec; a target a sequence cannot reach fails that sequence with the smallest reachable size.
The default ladder is the thresholds 2·D, D, D/2 around the
config's D_th at grids 16 and 8 for random-weight presets (tiny), and at the config's own grid for a
weights folder (its post-encoder fixes the grid; asking for another raises WeightsError). `--rate-points
ours=g16-t0.25,g8-t0.25` picks others. The frame size and rate are the evaluation's preprocessing
(`--width`, `--height`, `--fps`, `--max-frames`), so `video.*` settings are refused here.

One `pipelines.codec.Codec` per resolved config is kept for the whole run, all sharing one model store
(every sequence and rate point reuses the weights and their compiled programs); the decoder is the
stream's own (`Codec.for_stream`), as in `m3cvc decode`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from m3cvc_jax.codec import rate_target
from m3cvc_jax.codec.rate_target import RateTarget
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.video import Video, as_fraction
from m3cvc_jax.pipelines import modes, rate_control
from m3cvc_jax.pipelines.codec import Codec, decoder_config
from m3cvc_jax.pipelines.models import ModelStore
from m3cvc_jax.pipelines.modes import MODES, mode_overrides
from m3cvc_jax.pipelines.presets import DEFAULT_PRESET
from m3cvc_jax.pipelines.settings import load_config

KNOBS = {"g": ("keyframe_codec.pixels_per_index", int), "t": ("keyframes.threshold", float),
         "i": ("keyframes.interval", int)}
RANDOM_GRIDS = (16, 8)


def rate_point_target(rate_point) -> RateTarget | None:
    """The rate target of a rate point `bpp:X` / `bytes:N`, None for knob rate points."""
    text = str(rate_point).strip()
    return rate_target.parse(text) if ":" in text else None


def rate_point_overrides(rate_point) -> list[str]:
    """`--set` overrides of a rate point name such as `g16-t0.25` or `it2v-i8` (none for a rate target)."""
    if rate_point_target(rate_point) is not None:
        return []
    text = str(rate_point).strip()
    out, seen = [], set()
    parts = text.split("-") if text else [""]
    mode_parts = [p for p in parts if p in MODES]
    if len(mode_parts) > 1:
        raise ConfigError(f"rate point {text!r} of codec ours: more than one mode")
    for part in parts:
        if part in MODES:
            continue
        knob = KNOBS.get(part[:1])
        if knob is None or part[:1] in seen:
            raise ConfigError(f"rate point {text!r} of codec ours: expected knobs g<N>, t<X>, i<N> or a mode "
                              f"({', '.join(MODES)}) joined by '-' (e.g. g16-t0.25, it2v-i8)")
        seen.add(part[:1])
        key, kind = knob
        try:
            value = kind(part[1:])
        except ValueError:
            raise ConfigError(f"rate point {text!r} of codec ours: {part!r} needs a {kind.__name__}") from None
        out.append(f"{key}={value!r}" if kind is float else f"{key}={value}")
    if mode_parts:
        out = mode_overrides(mode_parts[0], out)
    return out


def default_rate_points(config, random_weights: bool) -> tuple[str, ...]:
    grids = RANDOM_GRIDS if random_weights else (int(config.keyframe_codec.pixels_per_index),)
    n = int(config.keyframes.interval)
    intervals = sorted({n, -(-n // 2), -(-n // 4)}, reverse=True)
    if not modes.mode(config.decode.mode).keyframe_images:
        return tuple(f"i{i}" for i in intervals)  # texts only: more keyframes, more descriptions
    if config.keyframes.method == "fixed":
        # No threshold to move (the demo preset): the keyframe interval N, N/2 and N/4 set the rate.
        return tuple(f"g{g}-i{i}" for g in grids for i in intervals)
    d = float(config.keyframes.threshold)
    return tuple(f"g{g}-t{t:g}" for g in grids for t in (2 * d, d, d / 2))


def _config_key(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


class M3CVCCodec:
    """The M3-CVC pipeline as an evaluation codec (see the module docstring for rate points)."""

    name = "ours"

    def __init__(self, preset: str | None = None, weights: str | None = None, overrides: Sequence[str] = (),
                 rate_points: Sequence | None = None):
        self.preset = preset or DEFAULT_PRESET
        self.weights = weights
        for o in overrides:
            if o.strip().startswith("video."):
                raise ConfigError(f"--set {o}: codec ours codes the evaluation's frames; use eval's --width, "
                                  f"--height, --fps, --start-time, --max-frames instead")
        self.overrides = tuple(overrides) + ((f"weights={weights}",) if weights else ())
        self._store = ModelStore()
        base = Codec(load_config(self.preset, self.overrides), store=self._store)
        random_weights = base.models.root is None  # also fails now if a weights folder is missing
        points = tuple(rate_points) if rate_points else default_rate_points(base.config, random_weights)
        text_only = not modes.mode(base.config.decode.mode).keyframe_images
        for rp in points:  # every rate point's config is checked before the first encode
            sets = rate_point_overrides(rp)
            if text_only and any(o.startswith("keyframe_codec.pixels_per_index=") for o in sets):
                raise ConfigError(f"rate point {rp!r} of codec ours: g<N> (the index grid) has no effect in mode "
                                  f"{base.config.decode.mode}, whose streams carry texts only; use i<N>")
            load_config(self.preset, self.overrides + tuple(sets))
        self.rate_points = points
        self._codecs: dict[str, Codec] = {}

    def config(self, rate_point, width: int, height: int, fps):
        """The encoder config of one rate point for frames of this size and rate."""
        frame = [f"video.width={width}", f"video.height={height}", f"video.fps={float(fps)!r}"]
        return load_config(self.preset, self.overrides + tuple(rate_point_overrides(rate_point))
                           + tuple(frame))

    def codec(self, config) -> Codec:
        """The codec of `config`, built once per run (all of them share one model store)."""
        key = _config_key(config)
        if key not in self._codecs:
            self._codecs[key] = Codec(config, store=self._store)
        return self._codecs[key]

    def encode(self, frames: np.ndarray, fps, rate_point, workdir: str, progress=None) -> str:
        t, h, w, _ = frames.shape
        config = self.config(rate_point, w, h, fps)
        video = Video(np.asarray(frames, np.uint8), as_fraction(fps))
        target = rate_point_target(rate_point)
        if target is None:
            stream, _ = self.codec(config).encode(video, report=progress)
        else:
            stream = rate_control.search(self.codec(config), video, target).stream
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, f"{rate_point}.m3cvc")
        bsf.write_bitstream(path, stream)
        return path

    def decode(self, path: str, progress=None) -> np.ndarray:
        stream = bsf.read_bitstream(path)
        decoder = self.codec(decoder_config(stream, weights=self.weights))
        return decoder.decode(stream, report=progress).video.frames


def make_ours(preset=None, weights=None, overrides=(), rate_points=None, **_) -> M3CVCCodec:
    """Factory of the eval codec table (`vtm`, `vtm_cfg` and other run options are not ours)."""
    return M3CVCCodec(preset=preset, weights=weights, overrides=overrides, rate_points=rate_points)
