"""Every model the codec needs, built for a config: random weights (tiny) or converted checkpoints (paper).

Weight sources are one entry per preset in `WEIGHT_SOURCES`:
  random   weights drawn from `config.seed` with integer arithmetic only (numpy PCG64 bits scaled by
           exactly representable factors), so every machine builds the same bytes and the same
           fingerprint; the decoder rebuilds them from the seed in the header.
  folder   `--weights DIR` (or a bundled folder: a `demo` preset is `"demo": FolderSource(BUNDLED)`)
           holding one converted checkpoint per component in the sub-folders of `COMPONENTS`.

The combined fingerprint covers the components decoding depends on (`DECODER_COMPONENTS`; a text-only
tt2v stream: `T2V_DECODER_COMPONENTS`, AnimateDiff = `sd-unet` + `motion-module`): a stream
decodes the same whatever CLIP image tower, RAFT or Qwen2-VL chose its keyframes and wrote its texts, but
not with another VAE, VQ codebook, UNet, text encoder or SEINE. Components load lazily: the encoder never
touches SEINE's weights, the decoder never touches Qwen2-VL's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.lmm.describers import make_describer
from m3cvc_jax.lmm.generate import SamplingConfig
from m3cvc_jax.nn.animatediff import MotionAdapterConfig, UNetMotionModel, check_compatible, merge_params
from m3cvc_jax.nn.clip import PRESETS as CLIP_PRESETS
from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel
from m3cvc_jax.nn.keyframe_codec import KeyframeCodec, KeyframeCodecConfig, extend_conv_in
from m3cvc_jax.nn.post_encoder import PostEncoderConfig
from m3cvc_jax.nn.raft import PRESETS as RAFT_PRESETS
from m3cvc_jax.nn.raft import RAFT, RAFTConfig
from m3cvc_jax.nn.unet import UNetConfig
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
from m3cvc_jax.nn.video_unet import PRESETS as VIDEO_UNET_PRESETS
from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
from m3cvc_jax.random_weights import fill_random, random_module
from m3cvc_jax.weights import (abstract_module, assign_params, fingerprint, flat_params, load_checkpoint,
                               load_module, read_config)


@dataclasses.dataclass(frozen=True)
class Component:
    family: str  # the `family` in the checkpoint's config.json
    what: str
    command: str  # how to make the sub-folder; {dst} is its path


COMPONENTS: dict[str, Component] = {
    "sd-vae": Component("sd-vae", "the Stable Diffusion 1.5 VAE",
                        "python -m convert_weights sd-vae SD15_DIR/vae {dst}"),
    "post-encoder": Component("keyframe-vq", "the VQ post-encoder and codebook",
                              "python -m train.vq_pretrain --config configs/vq_pretrain.py --workdir WORKDIR "
                              "&& cp -r WORKDIR/export {dst}"),
    "keyframe-unet": Component("sd-unet", "the keyframe UNet (SD 1.5 with the index condition at conv_in)",
                               "python -m convert_weights sd-unet SD15_DIR/unet {dst} --extra-in-channels 32"),
    "clip": Component("clip", "CLIP ViT-L/14 (keyframe decision and SD's text encoder)",
                      "python -m convert_weights clip CLIP_VIT_L14_DIR {dst}"),
    "raft": Component("raft", "RAFT optical flow", "python -m convert_weights raft raft_small.pth {dst}"),
    "seine": Component("seine", "SEINE", "python -m convert_weights seine seine.pt {dst}"),
    "qwen2-vl": Component("qwen2-vl", "Qwen2-VL (the describer)",
                          "python -m convert_weights qwen2-vl QWEN2_VL_2B_DIR {dst}"),
    # CMVC TT2V (decode.mode=tt2v): AnimateDiff = the plain SD 1.5 UNet + motion modules.
    "sd-unet": Component("sd-unet", "the Stable Diffusion 1.5 UNet (AnimateDiff's spatial layers, TT2V)",
                         "python -m convert_weights sd-unet SD15_DIR/unet {dst}"),
    "motion-module": Component("animatediff", "AnimateDiff's motion modules (TT2V)",
                               "python -m convert_weights animatediff mm_sd_v15_v2.ckpt {dst}"),
}
DECODER_COMPONENTS = ("sd-vae", "post-encoder", "keyframe-unet", "clip", "seine")
# What a text-only (tt2v) stream decodes with: no keyframe codec, no SEINE.
T2V_DECODER_COMPONENTS = ("sd-vae", "sd-unet", "motion-module", "clip")
MOTION_KEY = "motion_modules"  # UNetMotionModel parameters under this path part are the motion module's
FLOW_PRESETS = {"raft_small": "small", "raft_large": "large", "tiny": "tiny"}


# ------------------------------------------------------------------------------------- weight sources


class RandomSource:
    """Deterministic random weights; nothing on disk."""

    kind = "random"

    def check(self, components) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """Converted checkpoints in `directory` (None: the config's `weights` field, which must be set)."""

    directory: str | None = None
    kind = "folder"

    def root(self, config) -> str:
        root = self.directory or config.weights
        if not root:
            raise WeightsError(f"preset {config.preset!r} needs converted weights: pass --weights DIR "
                               f"(one sub-folder per component: {', '.join(COMPONENTS)})")
        if not os.path.isdir(root):
            raise WeightsError(f"weights folder {root} does not exist")
        return root


# The demo preset's weights, trained by scripts/train_demo.sh (docs/demo.md).
DEMO_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo")
WEIGHT_SOURCES: dict[str, Any] = {"tiny": RandomSource(), "paper": FolderSource(), "demo": FolderSource(DEMO_WEIGHTS)}


def module_fingerprint(module) -> str:
    return fingerprint(flat_params(module))


def combine_fingerprints(parts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(f"{name}:{parts[name]}\n".encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------- the model set


class ModelStore:
    """Built modules by component: (identity, module) of the latest build of each. A `Codec` owns one and
    hands it to the codecs it derives (other rate points, the decoder of its own streams), which then
    share weights (and the jit caches keyed on them) instead of rebuilding; a new build of a component
    releases the old one first."""

    def __init__(self):
        self._built: dict[str, tuple[Any, Any]] = {}

    def get(self, name: str, key, build: Callable[[], Any]):
        hit = self._built.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        self._built.pop(name, None)
        value = build()
        self._built[name] = (key, value)
        return value


def _strip(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------- keyframe codec parts
# The one assembly of the keyframe codec from its checkpoints, shared with train/decoder_finetune.py.


def widen_conv_in(unet_config: UNetConfig) -> Callable[[dict], dict]:
    """`load_module` adapt: a plain SD UNet's `conv_in` widened by the index condition's zero channels."""

    def adapt(params: dict) -> dict:
        kernel = extend_conv_in(params["conv_in.kernel"], unet_config.in_channels, unet_config.extra_in_channels)
        return {**params, "conv_in.kernel": np.asarray(kernel)}

    return adapt


def assign_vq(post_encoder, codebook, params: dict, source: str) -> None:
    """The VQ export of train.vq_pretrain (`post_encoder.*`, `codebook.*`) into its two modules."""
    assign_params(post_encoder, _strip(params, "post_encoder."), source=source)
    assign_params(codebook, _strip(params, "codebook."), source=source)


class Models:
    """The models of one config, built on first use. `config`: a frozen `pipelines/presets.py` tree."""

    def __init__(self, config, source=None, *, store: ModelStore | None = None):
        """store: share modules with other `Models` of the same weights (modules are mutable: the default,
        a private store, gives private copies, e.g. to train them)."""
        self.config = config
        self.store = ModelStore() if store is None else store
        if source is None:
            if config.preset not in WEIGHT_SOURCES:
                raise ConfigError(f"unknown preset {config.preset!r}; one of {', '.join(WEIGHT_SOURCES)}")
            source = WEIGHT_SOURCES[config.preset]
        if config.weights and not (source.kind == "folder" and source.directory is None):
            # Silently ignoring the folder would let a user believe their weights were used.
            has = "random weights drawn from the seed" if source.kind == "random" else "its own bundled weights"
            raise ConfigError(f"--weights {config.weights}: preset {config.preset!r} uses {has}; --weights "
                              f"applies to preset paper")
        self.source = source
        self.root = source.root(config) if source.kind == "folder" else None
        # Compute dtype of every network built here; parameters stay float32 (their fingerprints and
        # checkpoints do not depend on it).
        self.dtype = jnp.dtype(config.dtype)
        self._meta: dict[str, dict] = {}

    # -- folders

    def component_dir(self, name: str) -> str:
        """The sub-folder of `name`; a missing one raises WeightsError naming it and how to make it."""
        path = os.path.join(self.root, name)
        if not os.path.isfile(os.path.join(path, "config.json")):
            c = COMPONENTS[name]
            raise WeightsError(f"missing {c.what}: no converted checkpoint in {path}; make it with: "
                               f"{c.command.format(dst=path)}")
        return path

    def require(self, names) -> None:
        """Fail early (before any work) if a folder source lacks one of `names`."""
        if self.root is not None:
            for name in names:
                self.meta(name)

    def meta(self, name: str) -> dict:
        if name not in self._meta:
            meta = read_config(self.component_dir(name))
            family = COMPONENTS[name].family
            if meta.get("family") != family:
                raise WeightsError(f"{os.path.join(self.root, name)} holds {meta.get('family')!r} weights, "
                                   f"expected {family!r}")
            self._meta[name] = meta
        return self._meta[name]

    def _load(self, name: str) -> dict:
        return load_checkpoint(self.component_dir(name), family=COMPONENTS[name].family)[1]

    # -- configs

    def _model_config(self, name: str, build, settings: dict | None = None):
        """`build(settings)` (default: the component's config.json "config"); a malformed one (unknown
        fields, wrong types) is a fault of the weights folder, reported as such."""
        settings = dict(self.meta(name)["config"]) if settings is None else settings
        try:
            return build(settings)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            where = os.path.join(self.component_dir(name), "config.json")
            raise WeightsError(f"{where}: invalid model settings ({type(e).__name__}: {e})") from None

    @functools.cached_property
    def clip_config(self):
        name = self.config.keyframes.clip_model
        if name not in CLIP_PRESETS:
            raise ConfigError(f"keyframes.clip_model: unknown CLIP preset {name!r}; one of {', '.join(CLIP_PRESETS)}")
        if self.root is None:
            return CLIP_PRESETS[name]
        cfg = dict(self.meta("clip")["config"])
        if cfg.pop("kind", "full") != "full":
            raise WeightsError(f"{self.component_dir('clip')}: a text-only CLIP checkpoint; the codec needs both "
                               f"towers (convert without --text-only)")
        return self._model_config("clip", CLIPConfig.from_dict, cfg)

    @functools.cached_property
    def codec_config(self):
        """`KeyframeCodecConfig` for the frame size and grid of the config (a weights folder: its own)."""
        c = self.config
        kc = c.keyframe_codec
        common = dict(width=c.video.width, height=c.video.height)
        if self.root is None:
            cfg = KeyframeCodecConfig.preset(kc.preset, pixels_per_index=kc.pixels_per_index, **common)
            return dataclasses.replace(cfg, text=self.clip_config.text)
        pe = self._model_config("post-encoder", lambda d: PostEncoderConfig(**d))
        vae = self._model_config("sd-vae", VAEConfig.from_dict)
        ppi = vae.downsample_factor * 2**pe.num_stages
        if ppi != kc.pixels_per_index:
            raise WeightsError(f"the post-encoder in {self.root} codes {ppi} pixels per index but "
                               f"keyframe_codec.pixels_per_index={kc.pixels_per_index}")
        unet = self._model_config("keyframe-unet", UNetConfig.from_dict)
        unet = dataclasses.replace(unet, extra_in_channels=pe.codebook_dim)
        return KeyframeCodecConfig(vae=vae, unet=unet, text=self.clip_config.text, post_encoder=pe,
                                   pixels_per_index=ppi, **common)

    @functools.cached_property
    def seine_config(self):
        if self.root is None:
            name = self.config.video_model.preset
            if name not in VIDEO_UNET_PRESETS:
                raise ConfigError(f"video_model.preset: unknown {name!r}; one of {', '.join(VIDEO_UNET_PRESETS)}")
            cfg = VIDEO_UNET_PRESETS[name]()
        else:
            cfg = self._model_config("seine", lambda d: VideoUNetConfig(**d))
        if cfg.cross_attention_dim != self.clip_config.text.hidden_size:
            raise ConfigError(f"SEINE attends to {cfg.cross_attention_dim}-d text but the CLIP text tower is "
                              f"{self.clip_config.text.hidden_size}-d")
        return cfg

    @functools.cached_property
    def vae_config(self) -> VAEConfig:
        if self.root is None:
            return self.codec_config.vae
        return self._model_config("sd-vae", VAEConfig.from_dict)

    @functools.cached_property
    def t2v_config(self) -> tuple[UNetConfig, MotionAdapterConfig]:
        """(SD UNet, motion adapter) configs of AnimateDiff (random weights: the tiny ones)."""
        if self.root is None:
            unet, motion = UNetConfig.preset("tiny"), MotionAdapterConfig.preset("tiny")
        else:
            unet = self._model_config("sd-unet", UNetConfig.from_dict)
            motion = self._model_config("motion-module", MotionAdapterConfig.from_dict)
            if unet.extra_in_channels or unet.in_channels != self.vae_config.latent_channels:
                raise WeightsError(f"{self.component_dir('sd-unet')}: AnimateDiff needs a plain SD UNet on "
                                   f"{self.vae_config.latent_channels} latent channels (convert without "
                                   f"--extra-in-channels)")
        text = self.clip_config.text.hidden_size
        if unet.cross_attention_dim != text:
            raise ConfigError(f"the TT2V UNet attends to {unet.cross_attention_dim}-d text but the CLIP text tower "
                              f"is {text}-d")
        try:
            check_compatible(unet, motion)
        except ConfigError as e:
            raise WeightsError(f"the motion module does not fit the SD UNet: {e}") from None
        return unet, motion

    @functools.cached_property
    def raft_config(self):
        name = self.config.keyframes.flow_model
        if name not in FLOW_PRESETS:
            raise ConfigError(f"keyframes.flow_model: unknown {name!r}; one of {', '.join(FLOW_PRESETS)}")
        if self.root is None:
            return RAFT_PRESETS[FLOW_PRESETS[name]]
        cfg = dict(self.meta("raft")["config"])
        cfg.pop("preset", None)
        return self._model_config("raft", RAFTConfig.from_dict, cfg)

    # -- modules

    def _identity(self, name: str, model_config) -> tuple:
        """What determines a built component: its source, seed (random), model config and compute dtype."""
        source = ("random", int(self.config.seed)) if self.root is None else ("folder", os.path.abspath(self.root))
        return (name, source, model_config, self.dtype.name)

    def _get(self, name: str, model_config, build: Callable[[], Any]):
        return self.store.get(name, self._identity(name, model_config), build)

    def _module(self, name: str, model_config, build: Callable[[Any], Any]):
        def make():
            if self.root is None:
                return random_module(build, self.config.seed, name)
            return load_module(self.component_dir(name), family=COMPONENTS[name].family,
                               build=lambda _, rngs: build(rngs))

        return self._get(name, model_config, make)

    @functools.cached_property
    def clip(self):
        """CLIPModel: image features for the keyframe decision, text hidden states for conditioning."""
        return self._module("clip", self.clip_config, lambda rngs: CLIPModel(self.clip_config, dtype=self.dtype, rngs=rngs))

    @functools.cached_property
    def raft(self):
        return self._module("raft", self.raft_config, lambda rngs: RAFT(self.raft_config, dtype=self.dtype, rngs=rngs))

    @functools.cached_property
    def seine(self):
        return self._module("seine", self.seine_config, lambda rngs: VideoUNet(self.seine_config, dtype=self.dtype, rngs=rngs))

    @functools.cached_property
    def vae(self):
        """The SD VAE alone (TT2V); random weights are the keyframe codec's (same stream, same keys)."""
        return self._module("sd-vae", self.vae_config, lambda rngs: AutoencoderKL(self.vae_config, dtype=self.dtype, rngs=rngs))

    @functools.cached_property
    def t2v_unet(self):
        """AnimateDiff's `UNetMotionModel`: the `sd-unet` and `motion-module` checkpoints joined."""
        unet_cfg, motion_cfg = self.t2v_config
        build = lambda rngs: UNetMotionModel(unet_cfg, motion_cfg, dtype=self.dtype, rngs=rngs)  # noqa: E731

        def make():
            if self.root is None:
                return random_module(build, self.config.seed, "t2v-unet")
            model = abstract_module(build)
            params = merge_params(self._load("sd-unet"), self._load("motion-module"))
            source = f"{self.component_dir('sd-unet')} + {self.component_dir('motion-module')}"
            assign_params(model, params, source=source)
            return model

        return self._get("t2v-unet", self.t2v_config, make)

    @functools.cached_property
    def codec(self):
        """KeyframeCodec (VAE, post-encoder, codebook, UNet); random weights per sub-module name."""
        return self._get("codec", self.codec_config, self._build_codec)

    def _build_codec(self):
        cfg = self.codec_config
        codec = abstract_module(lambda rngs: KeyframeCodec(cfg, dtype=self.dtype, rngs=rngs))
        if self.root is None:
            # One stream per component, under the keys its checkpoint would hold.
            seed = self.config.seed
            fill_random({"": codec.vae}, seed, "sd-vae")
            fill_random({"": codec.unet}, seed, "keyframe-unet")
            fill_random({"post_encoder.": codec.post_encoder, "codebook.": codec.codebook}, seed, "post-encoder")
            return codec
        assign_params(codec.vae, self._load("sd-vae"), source=self.component_dir("sd-vae"))
        assign_params(codec.unet, widen_conv_in(cfg.unet)(self._load("keyframe-unet")),
                      source=self.component_dir("keyframe-unet"))
        assign_vq(codec.post_encoder, codebook=codec.codebook, params=self._load("post-encoder"),
                  source=self.component_dir("post-encoder"))
        return codec

    def describer(self, seed: int | None = None):
        """A fresh describer (they keep per-stream state): `dialogue.describer` of the config."""
        d = self.config.dialogue
        weights_dir = None
        if d.describer == "qwen2-vl" and self.root is not None:
            weights_dir = self.component_dir("qwen2-vl")
        return make_describer(
            d.describer, weights_dir=weights_dir, preset=d.model, fixed_texts=d.texts or None,
            templates=d.templates or None, keyframe_turns=d.turns, clip_turns=d.clip_turns,
            sampling=SamplingConfig(max_new_tokens=d.max_new_tokens, temperature=d.temperature),
            seed=self.config.seed if seed is None else seed, value_range=(0.0, 255.0), dtype=self.dtype,
        )

    # -- identity

    @property
    def text_only(self) -> bool:
        return self.config.decode.mode == "tt2v"

    def decoder_components(self) -> tuple[str, ...]:
        """What this config's streams decode with (the mode decides)."""
        return T2V_DECODER_COMPONENTS if self.text_only else DECODER_COMPONENTS

    def fingerprint(self) -> str:
        """Combined fingerprint of `decoder_components()` (16 hex digits)."""
        return combine_fingerprints(self.fingerprints())

    def fingerprints(self) -> dict[str, str]:
        if self.root is not None:
            return {name: str(self.meta(name).get("fingerprint", "")) for name in self.decoder_components()}
        if self.text_only:
            key = (self.vae_config, self.clip_config, self.t2v_config)
            return self._get("t2v-fingerprints", key, self._random_t2v_fingerprints)
        key = (self.codec_config, self.clip_config, self.seine_config)
        return self._get("fingerprints", key, self._random_fingerprints)

    def _random_t2v_fingerprints(self) -> dict[str, str]:
        params = flat_params(self.t2v_unet)
        motion = {k: v for k, v in params.items() if MOTION_KEY in k.split(".")}
        spatial = {k: v for k, v in params.items() if k not in motion}
        return {"sd-vae": module_fingerprint(self.vae), "sd-unet": fingerprint(spatial),
                "motion-module": fingerprint(motion), "clip": module_fingerprint(self.clip)}

    def _random_fingerprints(self) -> dict[str, str]:
        codec = self.codec
        pe_params = {**{f"post_encoder.{k}": v for k, v in flat_params(codec.post_encoder).items()},
                     **{f"codebook.{k}": v for k, v in flat_params(codec.codebook).items()}}
        return {"sd-vae": module_fingerprint(codec.vae), "post-encoder": fingerprint(pe_params),
                "keyframe-unet": module_fingerprint(codec.unet), "clip": module_fingerprint(self.clip),
                "seine": module_fingerprint(self.seine)}
