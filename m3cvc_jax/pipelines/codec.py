"""The codec: one `Codec` object per settings (preset + weights + overrides) that owns the loaded models,
their compiled functions and caches, and encodes (video -> bitstream) and decodes (bitstream -> video).

    codec = Codec.load("demo")                        # or Codec.load("paper", weights=DIR, overrides=[...])
    result = codec.encode_file("clip.mp4", "clip.m3cvc")
    video = decode_file("clip.m3cvc", "clip.mp4").video   # a decoder Codec rebuilt from the stream's header
    params, spec = codec.params, codec.spec           # the research API's arguments (docs/api.md)

`m3cvc encode/decode`, eval's codec `ours` and the research API all go through it; nothing is cached at
module level: codecs derived from one (`with_config`, `for_stream`) share its model store.

Encode: read + preprocess (size, rate) -> keyframe selection (CLIP image features, RAFT motion; see
`keyframe_stage.py`) -> dialogue texts (D_F per keyframe, D_C per clip) -> keyframe VQ indices -> entropy
and text coding -> the v1 container, written atomically.
Decode: indices -> z_hat -> SD sampling guided by D_F -> VAE decode (the keyframes) -> SEINE rebuilds every
clip between keyframes (interpolation: both ends given; prediction: the first) -> frames concatenated at
the coded frame count and rate, or retimed to a requested rate.

Clips: clip i runs from keyframe i to keyframe i+1 (both included), the last from the last keyframe to the
last frame; a keyframe on the last frame has no clip. Each clip has one description D_C. Decoded
keyframes are placed at their positions as decoded by SD (SEINE's copy of a given frame went through one
more VAE round trip). Interpolation needs a keyframe at both ends, so the final clip is predicted.

CMVC's TT2V mode (`decode.mode=tt2v`) sends texts only: encode stops after the dialogue (the index maps
are empty), decode composes each clip's prompt from D_F and D_C (`lmm/tt2v_prompt.py`) and lets AnimateDiff
generate it (`decoders/t2v.py`); frames at keyframe positions are generated like the others.

Modes (how clips are rebuilt) are the table of `modes.py`. Every jitted function has static shapes per
stream (frame size, window, grid), so each compiles once and serves every keyframe and window. Timings are wall-clock seconds per stage, compilation included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
from fractions import Fraction
from typing import Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import colour_means, index_rdo, it2v_weights
from m3cvc_jax.codec.colour_correction import correct_mean_colour
from m3cvc_jax.codec.decoder_settings import TAG_DECODER_SETTINGS, settings_section, stream_settings  # noqa: F401
from m3cvc_jax.codec.entropy import ENTROPY_MODELS, IndexModel, decode_index_maps, decode_indices, encode_index_maps
from m3cvc_jax.codec.index_prior import IndexPrior
from m3cvc_jax.decoders import t2v
from m3cvc_jax.decoders.video import VideoReconstructor, retime
from m3cvc_jax.errors import BitstreamError, ConfigError
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.io.destination import check_file_output, check_folder_output
from m3cvc_jax.io.video import PreprocessConfig, Video, load_video, write_video, writes_folder
from m3cvc_jax.lmm import tt2v_prompt
from m3cvc_jax.pipelines import api, it2v, keyframe_stage, modes
from m3cvc_jax.pipelines.it2v_clips import IT2VClips, it2v_key
from m3cvc_jax.pipelines import presets as codec_configs
from m3cvc_jax.pipelines import settings as settings_lib
from m3cvc_jax.pipelines.models import T2V_DECODER_COMPONENTS as T2V_COMPONENTS
from m3cvc_jax.pipelines.models import Models, ModelStore

# Index grid, codebook size and entropy model a text-only (tt2v) stream's header holds: unused, smallest.
TEXT_ONLY_GRID = ((1, 1), 2, "uniform")


class Timings(dict):
    """Seconds per stage, in the order the stages ran."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start

    def total(self) -> float:
        return sum(self.values())


# `report(stage, done, total)`: an optional caller's view of the long stages (e.g. `m3cvc eval`'s bar).
Report = Callable[[str, int, int], None]


def progress(iterable, desc: str, total: int | None = None, report: Report | None = None):
    """tqdm on stderr for the long stages (silent when stderr is not a terminal); `report` is told too."""
    bar = tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, disable=None, unit="step")
    return bar if report is None else _reporting(bar, desc, len(iterable) if total is None else total, report)


def _reporting(items, desc: str, total: int, report: Report):
    report(desc, 0, total)
    for i, item in enumerate(items):
        yield item
        report(desc, i + 1, total)


def clip_segments(keyframes: Sequence[int], num_frames: int) -> list[tuple[int, int]]:
    """(first, last) frame of each clip, both included: keyframe i to i+1, then the last one to the end."""
    ends = list(keyframes[1:]) + [num_frames - 1]
    return [(k, e) for k, e in zip(keyframes, ends) if e > k]


def clip_sample(first: int, last: int, count: int) -> np.ndarray:
    """`count` frame indices spread evenly over [first, last], both ends included (repeats in short clips):
    every clip shows the describer a video of the same length, so its programs compile once."""
    return np.round(np.linspace(first, last, count)).astype(int)


def to_model_range(frames: np.ndarray) -> jax.Array:
    return jnp.asarray(frames, jnp.float32) / 127.5 - 1.0


def to_uint8(frames) -> np.ndarray:
    return np.asarray(jnp.round((jnp.clip(frames, -1.0, 1.0) + 1.0) * 127.5)).astype(np.uint8)


def index_model(config, models: Models, kind: str | None = None) -> IndexModel:
    """The index model `kind` (default: the config's) with the tables the weights store for it."""
    kind = config.coding.entropy_model if kind is None else kind
    size = models.codec_config.post_encoder.codebook_size
    counts = None
    if kind == "static":
        meta = models.meta("post-encoder") if models.root is not None else {}
        counts = meta.get("tables", {}).get("histogram")
        if counts is None:
            raise ConfigError("coding.entropy_model=static needs the word histogram train.vq_pretrain stores "
                              "with the post-encoder weights; these weights have none (use adaptive)")
        counts = tuple(int(c) for c in counts)
    if kind == "learned":
        tables = models.meta("post-encoder").get("tables", {}) if models.root is not None else {}
        return IndexModel(kind, size, prior=IndexPrior.from_tables(tables))
    return IndexModel(kind, size, counts)


def index_models(config, models: Models) -> list[IndexModel]:
    """The models an encode tries: the config's, or for `auto` every model these weights have tables for
    (uniform, static, adaptive, learned)."""
    if config.coding.entropy_model != "auto":
        return [index_model(config, models)]
    out = []
    for kind in ENTROPY_MODELS:
        try:
            out.append(index_model(config, models, kind))
        except ConfigError:  # no histogram / no prior with these weights
            continue
    return out


def rd_index_prior(config, imodels: Sequence[IndexModel]) -> IndexPrior | None:
    """The prior `coding.rd_lambda` weighs the indices' bits with (None at lambda 0); ConfigError without one."""
    if not index_rdo.check_lambda(config.coding.rd_lambda):
        return None
    prior = next((m.prior for m in imodels if m.kind == "learned"), None)
    if prior is None:
        raise ConfigError("coding.rd_lambda > 0 weighs each index's bits under the learned index prior: it needs "
                          "coding.entropy_model=learned or auto and weights with a prior (or coding.rd_lambda=0)")
    return prior


def smallest_coding(maps, imodels: Sequence[IndexModel]) -> tuple[tuple[bytes, ...], IndexModel]:
    """The maps coded under each model; the shortest payload and its model (ties: the earlier model).
    A learned prior that does not fit this content (e.g. new weights' prior on unseen footage) then never
    costs more than the models without training."""
    coded = [(encode_maps(maps, m), m) for m in imodels]
    return min(coded, key=lambda c: sum(len(b) for b in c[0]))


def encode_maps(maps, imodel: IndexModel) -> tuple[bytes, ...]:
    """All keyframe maps in one payload, each coded given the previous keyframe's (the learned model's
    temporal context): one range-coder flush and no per-map lengths in the stream."""
    return (encode_index_maps(maps, imodel),)


def decode_maps(blobs, count: int, grid: tuple[int, int], imodel: IndexModel) -> list[np.ndarray]:
    """`count` maps from one joint payload, or from one payload per keyframe (v1 streams)."""
    if len(blobs) == 1:
        return decode_index_maps(blobs[0], count, grid, imodel)
    maps: list[np.ndarray] = []
    for blob in blobs:
        maps.append(decode_indices(blob, grid, imodel, maps[-1] if maps else None))
    return maps


@dataclasses.dataclass
class EncodeResult:
    stream: bs.Bitstream
    bits: bs.Bits
    timings: Timings
    decision: object = None  # codec.keyframes.Decision (scores per frame), for inspection


@dataclasses.dataclass
class DecodeResult:
    video: Video
    timings: Timings
    keyframes: np.ndarray  # (K, H, W, 3) uint8 as decoded by the keyframe codec


def read_input(path: str, config) -> Video:
    v = config.video
    return load_video(path, PreprocessConfig(width=v.width, height=v.height, fps=v.fps, start_time=v.start_time,
                                             max_frames=v.max_frames or None))


def decoder_config(stream: bs.Bitstream, *, mode: str | None = None, weights: str | None = None,
                   overrides: Sequence[str] = ()):
    """The config a stream decodes with: its preset, frame size, seed, mode and sent settings, then
    the caller's overrides."""
    h = stream.header
    if h.preset not in codec_configs.PRESETS:
        raise BitstreamError(f"bitstream made with preset {h.preset!r}, which this decoder does not know "
                             f"({', '.join(codec_configs.PRESETS)})")
    sent_means = bs.mean_colour_section(stream.extras) is not None
    base = [f"video.width={h.width}", f"video.height={h.height}", f"video.fps={float(h.fps)!r}",
            f"seed={h.seed}", f"decode.mode={h.mode}", f"colour.mean_correction={sent_means}", *stream_settings(stream)]
    try:
        config = settings_lib.load_config(h.preset, base)
    except ConfigError as e:
        raise BitstreamError(f"corrupt bitstream: {e}") from None
    if mode and modes.mode(mode).keyframe_images != modes.mode(h.mode).keyframe_images:
        raise ConfigError(f"--mode {mode}: this is a {h.mode} stream"
                          + (" (texts only, no keyframe images)" if h.mode in bs.TEXT_ONLY_MODES else "")
                          + "; it decodes only in its own mode")
    extra = settings_lib.assignments(overrides) + ([f"decode.mode={mode}"] if mode else []) + ([f"weights={weights}"] if weights else [])
    if extra:  # the caller's settings win; their errors are the caller's (ConfigError)
        config = settings_lib.load_config(h.preset, base + extra)
        if config.colour.mean_correction and not sent_means:
            raise ConfigError("colour.mean_correction=true: this stream carries no mean colours (it was encoded "
                              "with colour.mean_correction=false)")
    return config


class Codec:
    """The codec of one config (a frozen `presets.get_config` tree, from `settings.load_config`): its
    models (built on first use), the compiled programs over them and the per-settings caches.

    Build it with `Codec.load(preset, weights=..., overrides=...)`; a decoder for a stream with
    `Codec.for_stream(stream)`. Codecs made from another with `with_config` / `for_stream(..., store=)`
    share its model store: one set of weights per process for every rate point and every stream.
    """

    def __init__(self, config, *, store: ModelStore | None = None):
        self.config = config
        self.models = Models(config, store=store)
        self.mode = modes.mode(config.decode.mode)
        self._reconstructors: dict = {}  # VideoReconstructionConfig -> VideoReconstructor
        self._it2v: IT2VClips | None = None
        # SEINE windows per batched call (None: every clip's window k in one call); the frames agree to
        # rounding whatever the value, so it is the caller's choice for its hardware, not a stream setting.
        self.windows_per_call: int | None = None

    @classmethod
    def load(cls, preset: str = codec_configs.DEFAULT_PRESET, *, weights: str | None = None,
             overrides: Sequence[str] | Mapping[str, object] = (), store: ModelStore | None = None,
             mode: str | None = None) -> "Codec":
        """The codec of a preset with `--set`-style `KEY=VALUE` overrides (or a mapping {KEY: VALUE}, e.g.
        `{"dtype": "bfloat16"}`) and an optional weights folder; `mode` sets `decode.mode` (`modes.mode_overrides`)."""
        if mode is not None:
            overrides = modes.mode_overrides(mode, settings_lib.assignments(overrides))
        extra = [f"weights={weights}"] if weights else []
        return cls(settings_lib.load_config(preset, [*settings_lib.assignments(overrides), *extra]), store=store)

    @classmethod
    def for_stream(cls, stream: bs.Bitstream, *, mode: str | None = None, weights: str | None = None,
                   overrides: Sequence[str] = (), store: ModelStore | None = None) -> "Codec":
        """The decoder of `stream`: its preset, frame size, seed, mode and sent settings, then the caller's."""
        return cls(decoder_config(stream, mode=mode, weights=weights, overrides=overrides), store=store)

    @property
    def store(self) -> ModelStore:
        return self.models.store

    def with_config(self, config) -> "Codec":
        """Another codec sharing this one's model store (and so its weights, where they coincide)."""
        return Codec(config, store=self.store)

    # -- what the research API takes (docs/api.md)

    @functools.cached_property
    def params(self) -> dict:
        """{"codec": KeyframeCodec, "clip": CLIPModel, "seine": VideoUNet}: the API functions' `params`."""
        m = self.models
        return {"codec": m.codec, "clip": m.clip, "seine": m.seine}

    @functools.cached_property
    def spec(self) -> api.Spec:
        """The decoding settings of the config, static arguments of the API functions."""
        c, cc = self.config, self.models.codec_config
        return api.Spec(width=c.video.width, height=c.video.height, keyframe=settings_lib.keyframe_decoding(c),
                        clip=settings_lib.reconstruction_config(c), grid=cc.grid,
                        codebook_size=cc.post_encoder.codebook_size, clip_decoding=settings_lib.video_decoding(c))

    def reconstructor(self, clip_config) -> VideoReconstructor:
        """SEINE over this codec's weights for one `VideoReconstructionConfig` (kept for later clips)."""
        if clip_config not in self._reconstructors:
            self._reconstructors[clip_config] = VideoReconstructor(self.params["seine"], self.params["codec"].vae,
                                                                   clip_config)
        return self._reconstructors[clip_config]

    def it2v_clips(self) -> IT2VClips:
        """CMVC IT2V over the keyframe UNet and VAE with the `cmvc` settings (built on first use)."""
        if self._it2v is None:
            codec = self.models.codec
            self._it2v = IT2VClips(codec.unet, codec.vae, settings_lib.it2v_config(self.config))
        return self._it2v

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """CLIP hidden states `(N, 77, D)`, one text per call: one compiled program whatever the count."""
        params = self.params
        return np.concatenate([np.asarray(api.encode_text(params, api.tokenize(texts[i:i + 1])))
                               for i in range(len(texts))])

    def decode_keyframes(self, maps, kf_emb, null, kf_key, report: Report | None = None) -> jax.Array:
        """Keyframes `(K, H, W, 3)` in [-1, 1] from their index maps, exactly as the decoder makes them (the
        IT2V encoder trains its LoRAs on these): every keyframe in one batched program, item i the single
        decode with key i."""
        params, spec = self.params, self.spec
        if report:
            report("decode keyframes", 0, len(maps))
        keys = jnp.stack([jax.random.fold_in(kf_key, i) for i in range(len(maps))])
        decoded = jax.block_until_ready(api.decode_keyframe_batch(
            params, jnp.asarray(np.stack(maps)), jnp.asarray(kf_emb), keys, spec.keyframe, jnp.asarray(null)))
        if report:
            report("decode keyframes", len(maps), len(maps))
        return decoded

    def _it2v_weights(self, frames, keyframes, maps, kf_texts, clip_texts, report) -> bs.ExtraSection:
        """Encoder side of IT2V: decode the keyframes as the decoder will, retrain the LoRAs from them,
        search (w_i, w_l) per in-between frame, quantise: the weights section."""
        emb = self.text_embeddings(["", *kf_texts, *clip_texts])
        null, kf_emb, clip_emb = emb[0], emb[1:1 + len(keyframes)], emb[1 + len(keyframes):]
        kf_key, _ = jax.random.split(jax.random.key(int(self.config.seed)))
        decoded = self.decode_keyframes(maps, kf_emb, null, kf_key, report)
        clips, bits = self.it2v_clips(), int(self.config.cmvc.w_bits)
        codes = []
        for j, (s, e) in enumerate(progress(list(zip(keyframes, keyframes[1:])), "IT2V weights", report=report)):
            if e - s < 2:  # adjacent keyframes: nothing in between, no LoRAs to train
                continue
            ends = clips.endpoints(decoded[j], decoded[j + 1], clip_emb[j], it2v_key(int(self.config.seed), j))
            w = clips.search(ends, to_model_range(frames[s + 1:e]))
            codes.append(np.asarray(it2v.quantize_weights(w, bits)).reshape(-1, 2))
        payload = it2v_weights.pack(np.concatenate(codes) if codes else np.zeros((0, 2), int), bits)
        return bs.ExtraSection(bs.TAG_IT2V_WEIGHTS, payload, skippable=False)

    # -- encode

    def index_model(self, kind: str | None = None) -> IndexModel:
        return index_model(self.config, self.models, kind)

    def encode(self, video: Video, timings: Timings | None = None, report: Report | None = None,
               cache: dict | None = None):
        """(Bitstream, keyframe Decision) of preprocessed frames at the config's frame size;
        `report(stage, done, total)` follows the stages.

        cache: a dict kept across encodes of THE SAME frames with other settings (`pipelines/rate_control.py`):
        keyframe decisions, texts and VQ maps already computed for equal settings are reused."""
        cache = {} if cache is None else cache
        config, models = self.config, self.models
        timings = Timings() if timings is None else timings
        frames = video.frames
        t, h, w, _ = frames.shape
        if (w, h) != (config.video.width, config.video.height):
            raise ConfigError(f"frames are {w}x{h}, the config codes {config.video.width}x{config.video.height}")
        kcfg = settings_lib.keyframe_config(config)
        images = self.mode.keyframe_images
        with timings.stage("models"):
            describer = ("qwen2-vl",) if config.dialogue.describer == "qwen2-vl" else ()
            coder = ("sd-vae", "post-encoder") if images else ()
            models.require(keyframe_stage.components(kcfg) + describer + coder)
            if not images:
                _ = self.t2v_template  # a template the decoder would refuse fails the encode, not the decode
            imodels = index_models(config, models) if images else []
            rd_prior = rd_index_prior(config, imodels) if images else None
            fingerprint = models.fingerprint()

        with timings.stage("keyframes"):
            if report:
                report("keyframe selection", 0, t)
            key = ("decision", kcfg)
            if key not in cache:
                cache[key] = keyframe_stage.select(frames, kcfg, models)
            decision = cache[key]
            keyframes = [int(i) for i in np.flatnonzero(np.asarray(decision.is_keyframe))]
            if self.mode.name == "it2v":  # IT2V interpolates only: every clip needs a keyframe at each end
                keyframes = sorted(set(keyframes) | {0, t - 1})

        with timings.stage("describe"):
            key = ("texts", json.dumps(config.dialogue.to_dict(), sort_keys=True), tuple(keyframes))
            if key not in cache:
                cache[key] = self._describe(frames, keyframes, report)
            kf_texts, clip_texts = cache[key]

        if images:
            with timings.stage("keyframe codec"):
                maps = self._keyframe_maps(frames, keyframes, rd_prior, fingerprint, cache, report)

        it2v_section = ()
        if self.mode.name == "it2v":
            with timings.stage("IT2V weights"):
                models.require(("keyframe-unet", "clip"))
                it2v_section = (self._it2v_weights(frames, keyframes, maps, kf_texts, clip_texts, report),)

        with timings.stage("entropy + text coding"):
            if images:
                index_data, imodel = smallest_coding(maps, imodels)
                grid, words, entropy = tuple(maps[0].shape), imodel.codebook_size, imodel.kind
            else:  # text only: no index maps (one empty payload); the grid fields hold their smallest values
                index_data = (b"",)
                grid, words, entropy = TEXT_ONLY_GRID
            header = bs.Header(
                width=w, height=h, fps=video.fps, num_frames=t, keyframes=tuple(keyframes), mode=self.mode.name,
                preset=config.preset, weights_fingerprint=fingerprint, seed=int(config.seed),
                keyframe_method=config.keyframes.method, text_codec=config.coding.text_codec,
                index_grid=grid, codebook_size=words, entropy_model=entropy)
            extras = ()
            overrides = settings_lib.decoder_overrides(config)
            if overrides:
                extras = (settings_section(overrides),)
            extras += it2v_section + self._mean_colour_section(frames, keyframes)
            stream = bs.Bitstream(header, tuple(kf_texts), tuple(clip_texts), index_data, extras)
            bs.pack(stream, bs.WRITE_VERSION)  # validate before anything is written
        return stream, decision

    def _keyframe_maps(self, frames, keyframes: list[int], rd_prior: IndexPrior | None, fingerprint: str,
                       cache: dict, report) -> list[np.ndarray]:
        """Each keyframe's index map: the nearest words, or with `coding.rd_lambda` > 0 the entropy-constrained
        choice under `rd_prior`, each map given the previous one as coded (`codec/index_rdo.py`)."""
        lam = float(self.config.coding.rd_lambda) if rd_prior is not None else 0.0
        params = {"codec": self.models.codec}
        maps: list[np.ndarray] = []
        for k in progress(keyframes, "encode keyframes", report=report):
            x = to_model_range(frames[k])
            if not lam:
                if ("map", fingerprint, k) not in cache:
                    cache["map", fingerprint, k] = np.asarray(api.encode_keyframe(params, x))
                maps.append(cache["map", fingerprint, k])
                continue
            if ("distances", fingerprint, k) not in cache:
                cache["distances", fingerprint, k] = np.asarray(api.keyframe_distances(params, x))
            maps.append(index_rdo.rd_index_map(cache["distances", fingerprint, k], maps[-1] if maps else None,
                                               rd_prior, lam))
        return maps

    def _mean_colour_section(self, frames, keyframes: list[int]) -> tuple[bs.ExtraSection, ...]:
        """Each keyframe's per-channel mean of the original, quantised (none without colour.mean_correction)."""
        c = self.config.colour
        if not c.mean_correction:
            return ()
        means = np.asarray(frames, np.float64).mean(axis=(1, 2))
        bits = int(c.mean_bits)
        payload = colour_means.pack(colour_means.quantise(means[keyframes], bits), bits)
        out = (bs.ExtraSection(colour_means.TAG_MEAN_COLOUR, payload, skippable=True),)
        anchors = colour_means.choose_anchors(means, keyframes, float(c.anchor_tolerance))
        if anchors:
            payload = colour_means.pack_anchors(anchors, colour_means.quantise(means[anchors], bits), bits, len(frames))
            out += (bs.ExtraSection(colour_means.TAG_COLOUR_ANCHORS, payload, skippable=True),)
        return out

    def _describe(self, frames, keyframes: list[int], report) -> tuple[list[str], list[str]]:
        """Keyframe texts D_F (each given the previous) and clip texts D_C (M3-CVC II-B)."""
        config, describer = self.config, self.models.describer()
        kf_texts, previous = [], None
        for k in progress(keyframes, "describe keyframes", report=report):
            previous = describer.describe_keyframe(frames[k], previous)
            kf_texts.append(previous)
        segments = clip_segments(keyframes, len(frames))
        clip_texts = [describer.describe_clip(frames[clip_sample(s, e, config.dialogue.clip_frames)],
                                              kf_texts[keyframes.index(s)])
                      for s, e in progress(segments, "describe clips", report=report)]
        return kf_texts, clip_texts

    def encode_file(self, input_path: str, output_path: str) -> EncodeResult:
        check_file_output(output_path, input_path)  # before the long part, not after
        timings = Timings()
        with timings.stage("read"):
            video = read_input(input_path, self.config)
        stream, decision = self.encode(video, timings)
        with timings.stage("write"):
            bits = bsf.write_bitstream(output_path, stream)
        return EncodeResult(stream, bits, timings, decision)

    # -- decode

    def check_stream(self, stream: bs.Bitstream) -> None:
        """Refuse a stream these models cannot decode (other weights, grid or codebook)."""
        h = stream.header
        bs.check_fingerprint(h, self.models.fingerprint(), self.config.preset)
        if not self.mode.keyframe_images:
            return
        cc = self.models.codec_config
        if tuple(h.index_grid) != tuple(cc.grid):
            raise BitstreamError(f"bitstream index grid {h.index_grid[0]}x{h.index_grid[1]} does not fit "
                                 f"{h.width}x{h.height} frames at {cc.pixels_per_index} px per index")
        if h.codebook_size != cc.post_encoder.codebook_size:
            raise BitstreamError(f"bitstream codebook has {h.codebook_size} words, the weights "
                                 f"{cc.post_encoder.codebook_size}")

    def decode(self, stream: bs.Bitstream, *, seed: int | None = None, fps: float | None = None,
               timings: Timings | None = None, report: Report | None = None) -> DecodeResult:
        """Frames of a stream (this codec from `for_stream`). seed: sampling seed (default: the header's);
        `report(stage, done, total)` follows the stages (SEINE in frames)."""
        timings = Timings() if timings is None else timings
        h = stream.header
        mode = self.mode.name
        if fps is not None:
            check_output_rate(h, fps)
        if not self.mode.keyframe_images:
            return self._decode_text_only(stream, seed=seed, fps=fps, timings=timings, report=report)
        models = self.models
        with timings.stage("models"):
            models.require(("sd-vae", "post-encoder", "keyframe-unet", "clip")
                           + (("seine",) if self.mode.clip_decoder == "seine" else ()))
            self.check_stream(stream)
            params, spec = self.params, self.spec
        with timings.stage("entropy + text decoding"):
            maps = decode_maps(stream.index_data, len(h.keyframes), tuple(h.index_grid),
                               self.index_model(h.entropy_model))
            segments = clip_segments(h.keyframes, h.num_frames)
            if len(stream.clip_texts) != len(segments):
                raise BitstreamError(f"corrupt bitstream: {len(stream.clip_texts)} clip texts for {len(segments)} clips")
            w_codes, w_bits = self._weights_of(stream)
        key = jax.random.key(h.seed if seed is None else seed)
        kf_key, clip_key = jax.random.split(key)

        with timings.stage("text encoding"):
            if report:
                report("text encoding", 0, 1)
            emb = self.text_embeddings([""] + list(stream.keyframe_texts) + list(stream.clip_texts))
            null = emb[0]
            kf_emb = emb[1:1 + len(h.keyframes)]
            clip_emb = emb[1 + len(h.keyframes):]

        with timings.stage("keyframes (SD)"):
            decoded = self.decode_keyframes(maps, kf_emb, null, kf_key, report)

        stage = {"seine": "SEINE", "it2v": "IT2V"}[self.mode.clip_decoder]
        with timings.stage(f"clips ({stage})"):
            if report:
                report(f"{stage} frames ({mode})", 0, h.num_frames)
            out = np.zeros((h.num_frames, h.height, h.width, 3), np.uint8)
            index_of = {k: i for i, k in enumerate(h.keyframes)}
            if self.mode.clip_decoder == "it2v":
                done = 0  # in-between frames whose weights are used so far
                for j, (s, e) in enumerate(progress(segments, f"clips ({mode})")):
                    w = it2v.dequantize_weights(w_codes[done:done + e - s - 1], w_bits)
                    done += e - s - 1
                    clip = self._it2v_clip(decoded[index_of[s]], decoded[index_of[e]], clip_emb[j], it2v_key(h.seed, j), w)
                    out[s:e + 1] = to_uint8(clip)
                    if report:
                        report(f"{stage} frames ({mode})", e + 1, h.num_frames)
            else:
                lasts = [index_of[e] if self.mode.last_keyframe_given and e in index_of else None for _, e in segments]
                clips = self._seine_clips(decoded[np.array([index_of[s] for s, _ in segments], int)],
                                          [None if i is None else decoded[i] for i in lasts], jnp.asarray(clip_emb),
                                          jnp.stack([jax.random.fold_in(clip_key, j) for j in range(len(segments))]),
                                          [e - s + 1 for s, e in segments], null)
                for (s, e), clip in zip(segments, clips):
                    out[s:e + 1] = to_uint8(clip)
                if report:
                    report(f"SEINE frames ({mode})", h.num_frames, h.num_frames)
            keyframes = to_uint8(decoded)
            out[: h.keyframes[0]] = keyframes[0]  # a stream may start after frame 0: hold the first keyframe
            out[list(h.keyframes)] = keyframes
        out = self._correct_colour(stream, out, timings)
        return DecodeResult(retimed(out, h, fps), timings, keyframes)

    def _correct_colour(self, stream: bs.Bitstream, frames: np.ndarray, timings: Timings) -> np.ndarray:
        """Frames shifted to the keyframes' transmitted mean colours (unchanged when the stream sent none or
        the decoder was told colour.mean_correction=false)."""
        section = bs.mean_colour_section(stream.extras)
        if section is None or not self.config.colour.mean_correction:
            return frames
        h = stream.header
        codes, bits = colour_means.unpack(section.payload, len(h.keyframes))
        positions = np.asarray(h.keyframes, np.int64)
        anchors = bs.colour_anchor_section(stream.extras)
        if anchors is not None:  # the means of frames between keyframes join the keyframes' in frame order
            frames_at, anchor_codes = colour_means.unpack_anchors(anchors.payload, bits, h.keyframes, h.num_frames)
            positions = np.concatenate([positions, frames_at])
            codes = np.concatenate([codes, anchor_codes])
            order = np.argsort(positions)
            positions, codes = positions[order], codes[order]
        with timings.stage("mean colour"):
            return np.asarray(_correct_mean_colour(jnp.asarray(frames), jnp.asarray(positions),
                                                   jnp.asarray(colour_means.dequantise(codes, bits), jnp.float32)))

    # -- CMVC TT2V (texts only)

    @functools.cached_property
    def t2v_template(self) -> tt2v_prompt.PromptTemplate:
        return tt2v_prompt.load_template(self.config.t2v.template)

    def _decode_text_only(self, stream: bs.Bitstream, *, seed, fps, timings: Timings, report) -> DecodeResult:
        """CMVC TT2V: every clip generated by AnimateDiff from its composed prompt, then concatenated; the
        frames at keyframe positions are the generated ones (nothing else was sent)."""
        h, models, c = stream.header, self.models, self.config.t2v
        with timings.stage("models"):
            models.require(T2V_COMPONENTS)
            template = self.t2v_template  # a bad template file fails before any model is built
            self.check_stream(stream)
            if c.window > models.t2v_config[1].motion_max_seq_length:
                raise ConfigError(f"t2v.window={c.window}: the motion modules know "
                                  f"{models.t2v_config[1].motion_max_seq_length} frame positions")
            params = {"clip": models.clip}
            unet, vae = models.t2v_unet, models.vae
        segments = clip_segments(h.keyframes, h.num_frames)
        if len(stream.clip_texts) != len(segments):
            raise BitstreamError(f"corrupt bitstream: {len(stream.clip_texts)} clip texts for {len(segments)} clips")
        prompts = tt2v_prompt.clip_prompts(template, stream.keyframe_texts, stream.clip_texts)
        key = jax.random.key(h.seed if seed is None else seed)

        with timings.stage("text encoding"):
            texts = [template.negative_prompt] + prompts
            emb = np.concatenate([np.asarray(api.encode_text(params, api.tokenize(texts[i:i + 1])))
                                  for i in range(len(texts))])

        scheduler = t2v.make_scheduler(int(c.steps))
        out = np.zeros((h.num_frames, h.height, h.width, 3), np.uint8)
        with timings.stage("clips (AnimateDiff)"):
            for j, (s, e) in enumerate(progress(segments, "clips (tt2v)", report=report)):
                window = _t2v_window(unet, vae, emb[1 + j], emb[0], jax.random.fold_in(key, j), scheduler,
                                     float(c.guidance_scale), window=int(c.window), height=h.height, width=h.width)
                out[s:e + 1] = to_uint8(t2v.retime_clip(np.asarray(window), e - s + 1))
            out[: h.keyframes[0]] = out[h.keyframes[0]]  # a stream may start after frame 0: hold its first frame
        keyframes = out[list(h.keyframes)].copy()
        # No coded keyframes here, but the generated frames at keyframe positions take the sent means too.
        out = self._correct_colour(stream, out, timings)
        return DecodeResult(retimed(out, h, fps), timings, keyframes)

    def _weights_of(self, stream: bs.Bitstream):
        """(codes `(F, 2)`, bits per weight) of an it2v stream; (None, 0) for the other modes."""
        if self.mode.clip_decoder != "it2v":
            return None, 0
        h = stream.header
        if h.mode != "it2v":
            raise ConfigError(f"mode it2v decodes it2v streams only; this one is {h.mode} (no IT2V weights)")
        section = [x for x in stream.extras if x.tag == bs.TAG_IT2V_WEIGHTS and not x.skippable]
        if len(section) != 1:
            raise BitstreamError("corrupt bitstream: an it2v stream without its IT2V weights section")
        return it2v_weights.unpack(section[0].payload, it2v_weights.inbetween_count(h.keyframes, h.num_frames))

    def _it2v_clip(self, first, last, text_emb, key, w):
        """CMVC's IT2V clip: LoRAs retrained from the decoded keyframes, frames by eqs. 5-6 with the coded w."""
        if len(w) == 0:  # adjacent keyframes (the encoder trained nothing either)
            return jnp.stack([first, last])
        clips = self.it2v_clips()
        ends = clips.endpoints(first, last, text_emb, key)
        return jnp.concatenate([first[None], clips.frames(ends, w), last[None]])

    def _seine_clips(self, firsts, lasts, text_embs, keys, lengths: list[int], null_text_emb) -> list[jax.Array]:
        """M3-CVC's clip decoder (II-D): SEINE interpolating (`last` given) or predicting from `first`, for
        every clip of the stream at once (window k of every clip in one batched program)."""
        recon = self.reconstructor(self.spec.clip)
        modes_ = ["prediction" if last is None else "interpolation" for last in lasts]
        return recon.clips(firsts, lasts, lengths, modes_, text_embs, jnp.asarray(null_text_emb)[None], keys,
                           self.spec.clip_decoding, self.windows_per_call)


_correct_mean_colour = jax.jit(correct_mean_colour)


@functools.partial(jax.jit, static_argnames=("window", "height", "width"))
def _t2v_window(unet, vae, text_emb, null_text_emb, key, scheduler, guidance_scale, *, window, height, width):
    return t2v.generate_clip(unet, vae, text_emb, null_text_emb, key, scheduler=scheduler,
                             guidance_scale=guidance_scale, window=window, height=height, width=width)


def retimed(frames: np.ndarray, header: bs.Header, fps: float | None) -> Video:
    """The decoded frames at the coded rate, or retimed (nearest earlier frame) to `fps`."""
    if fps is None:
        return Video(frames, header.fps)
    idx = retime(header.num_frames, float(header.fps), float(fps))
    return Video(frames[idx], Fraction(repr(float(fps))) if isinstance(fps, float) else Fraction(fps))


def check_output_rate(header: bs.Header, fps: float) -> None:
    """A requested output rate the same rules as the coded one allow, giving at most MAX_FRAMES frames."""
    settings_lib.RANGES["video.fps"].check("--fps", fps)
    settings_lib.check_fps_representable("--fps", fps)
    frames = header.num_frames * Fraction(repr(float(fps))) / header.fps
    if frames > bs.MAX_FRAMES:
        raise ConfigError(f"--fps {fps:g} would make {float(frames):.3g} frames from {header.num_frames} at "
                          f"{float(header.fps):g} fps (at most {bs.MAX_FRAMES})")


def decode_file(input_path: str, output_path: str, *, mode: str | None = None, fps: float | None = None,
                seed: int | None = None, weights: str | None = None, overrides: Sequence[str] = (),
                force: bool = False, store: ModelStore | None = None) -> DecodeResult:
    """Read a stream, decode it with the codec its header names, write the frames.
    force: write into a non-empty output folder, replacing only the frame files and video.json."""
    if writes_folder(output_path):  # before the long part, not after
        check_folder_output(output_path, input_path, force)
    else:
        check_file_output(output_path, input_path)
    timings = Timings()
    with timings.stage("read"):
        stream = bsf.read_bitstream(input_path)
        if fps is not None:
            check_output_rate(stream.header, fps)  # before any model or weights folder is looked at
        codec = Codec.for_stream(stream, mode=mode, weights=weights, overrides=overrides, store=store)
    result = codec.decode(stream, seed=seed, fps=fps, timings=timings)
    with timings.stage("write"):
        write_video(output_path, result.video, force=force)
    return result
