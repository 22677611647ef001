"""`python -m convert_weights sd-lora SRC DST [--config C] [--alpha A] [--skip-text-encoder]`: an SD UNet
LoRA -> our LoRA checkpoint (family `sd-lora`).

SRC: a `.safetensors` file (or a `.bin/.pt` state dict) in any of the layouts SD LoRAs ship in:
  diffusers/PEFT   `unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`, `lora_B`
                   (also without `unet.`, with PEFT's `base_model.model.` or `.default` adapter names);
                   alpha from the file's `lora_adapter_metadata` (diffusers writes it), else alpha = rank
  diffusers attention processors (<= 0.24, DiffMorpher's files)
                   `...attn1.processor.to_q_lora.down.weight`, `.up.weight`, `to_out_lora` = `to_out.0`
  kohya            `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight`,
                   `.lora_up.weight`, `.alpha` (diffusers module names, or the LDM ones `lora_unet_input_blocks_1_1_...`)
Every LoRA must sit on a Linear of our UNet (attention projections, proj_in/proj_out, feed-forward; SD1's
1x1-conv proj_in/proj_out factors are reshaped); LoRAs on 3x3 convolutions (LoCon) are refused.

The UNet the LoRA belongs to comes from `--config` (preset `tiny`/`sd15`/`sd21` or a diffusers
config.json; default `sd15`). DST holds the factors as flat keys `PATH.lora_A.kernel` `(in, rank)` /
`PATH.lora_B.kernel` `(rank, out)` and, in config.json, the UNet config and `layers`
{path: {rank, alpha}}. Load it with
`nn.lora.add_lora_layers(unet, meta["config"]["layers"]); nn.lora.set_lora(unet, params)`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np
from flax import nnx

from convert_weights.core import map_onto, read_state_dict
from convert_weights.sd_source import config_dict
from convert_weights.sd_unet import ldm_rename
from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.nn import lora
from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
from m3cvc_jax.weights import abstract_module, path_key, save_checkpoint

TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.", "lora_te_", "lora_te1_", "lora_te2_")
_KOHYA = re.compile(r"lora_unet_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)")
_PEFT = re.compile(r"(.+)\.(lora_A|lora_B)(?:\.default)?\.weight")
_PROCESSOR = re.compile(r"(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight")


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="sd15",
                        help="the UNet the LoRA adapts: preset (tiny, sd15, sd21) or a diffusers config.json")
    parser.add_argument("--alpha", type=float, default=None,
                        help="LoRA alpha for every layer (overrides the file's alphas; default: the file's, else rank)")
    parser.add_argument("--skip-text-encoder", action="store_true",
                        help="drop text-encoder LoRA factors instead of refusing the file")


def unet_config(option: str) -> UNetConfig:
    found = config_dict(option, None)
    if isinstance(found, str):
        return UNetConfig.preset(found)
    if found is None:
        raise ConfigError("sd-lora needs --config (a preset or a diffusers UNet config.json)")
    return UNetConfig.from_diffusers(found)


def read_metadata_alphas(src: str) -> tuple[float | None, dict[str, float]]:
    """(lora_alpha, alpha_pattern) from diffusers' `lora_adapter_metadata` safetensors header, if any."""
    if not src.endswith(".safetensors"):
        return None, {}
    from safetensors import safe_open

    try:
        with safe_open(src, framework="numpy") as f:
            raw = (f.metadata() or {}).get("lora_adapter_metadata")
        meta = json.loads(raw) if raw else {}
    except Exception as e:  # a corrupt header: read_state_dict reports the file itself
        raise WeightsError(f"{src}: unreadable LoRA metadata ({e})") from None
    meta = {k.removeprefix("unet."): v for k, v in meta.items()}
    alpha = meta.get("lora_alpha")
    return (None if alpha is None else float(alpha)), {k: float(v) for k, v in (meta.get("alpha_pattern") or {}).items()}


def _linear_lookup(cfg: UNetConfig) -> dict[str, str]:
    """Flattened kohya module names (diffusers and LDM naming) -> our Linear paths."""
    model = abstract_module(lambda rngs: UNet2DConditionModel(cfg, rngs=rngs))
    to_ldm = ldm_rename(cfg, to_ldm=True)
    out = {}
    for path in lora.linear_paths(model, lambda p: True):
        out[path.replace(".", "_")] = path
        out[to_ldm(path + ".weight")[: -len(".weight")].replace(".", "_")] = path
    return out


def normalise(sd: dict[str, np.ndarray], cfg: UNetConfig, *, skip_text_encoder: bool = False
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Any supported layout -> ({`PATH.lora_A.weight` | `PATH.lora_B.weight`: torch-layout array},
    {PATH: alpha found in the file})."""
    text = sorted(k for k in sd if k.startswith(TEXT_ENCODER_PREFIXES))
    if text and not skip_text_encoder:
        raise WeightsError(f"the LoRA adapts the text encoder too ({len(text)} keys, e.g. {text[0]}); "
                           "only UNet LoRAs convert: pass --skip-text-encoder to drop them")
    lookup = None
    factors, alphas, unknown = {}, {}, []
    for key, value in sd.items():
        if key in text:
            continue
        if m := _KOHYA.fullmatch(key):
            lookup = lookup if lookup is not None else _linear_lookup(cfg)
            path = lookup.get(m.group(1))
            if path is None:
                unknown.append(key)
            elif m.group(2) == "alpha":
                alphas[path] = float(np.asarray(value).reshape(()))
            else:
                factors[f"{path}.{'lora_A' if m.group(2).startswith('lora_down') else 'lora_B'}.weight"] = value
        elif m := _PROCESSOR.fullmatch(key):
            proj = "to_out.0" if m.group(2) == "to_out" else m.group(2)
            factors[f"{m.group(1)}.{proj}.{'lora_A' if m.group(3) == 'down' else 'lora_B'}.weight"] = value
        elif m := _PEFT.fullmatch(key.removeprefix("unet.").removeprefix("base_model.model.")):
            factors[f"{m.group(1)}.{m.group(2)}.weight"] = value
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(f"{len(unknown)} keys are not UNet LoRA factors of this UNet: {', '.join(sorted(unknown)[:8])}")
    if not factors:
        raise WeightsError("no LoRA factors found")
    return factors, alphas


def layers_of(factors: dict[str, np.ndarray], file_alphas: dict[str, float], *, alpha: float | None,
              meta_alpha: float | None = None, alpha_pattern: dict[str, float] | None = None) -> dict[str, dict]:
    """{path: {rank, alpha}}: rank from lora_A's rows; alpha from --alpha, the file, metadata, else rank."""
    layers = {}
    for key, value in factors.items():
        path, _, rest = key.rpartition(".lora_")
        if rest != "A.weight":
            continue
        rank = int(np.shape(value)[0])
        if alpha is not None:
            a = alpha
        elif path in file_alphas:
            a = file_alphas[path]
        else:
            a = next((v for k, v in (alpha_pattern or {}).items() if path == k or path.endswith("." + k)),
                     meta_alpha if meta_alpha is not None else rank)
        if not math.isfinite(a) or a <= 0:
            raise WeightsError(f"{path}: LoRA alpha must be positive and finite, got {a}")
        layers[path] = {"rank": rank, "alpha": float(a)}
    orphans = sorted({k.rpartition(".lora_")[0] for k in factors} - set(layers))
    if orphans:
        raise WeightsError(f"LoRA layers without lora_A/down factors: {', '.join(orphans[:6])}")
    return layers


def convert_params(cfg: UNetConfig, factors: dict[str, np.ndarray], layers: dict[str, dict], *,
                   source: str = "LoRA") -> dict[str, np.ndarray]:
    def build(rngs):
        model = UNet2DConditionModel(cfg, rngs=rngs)
        lora.add_lora_layers(model, layers)
        return model

    try:
        model = abstract_module(build)  # shapes only; a real nnx.Rngs under the trace costs seconds
    except ConfigError as e:
        raise WeightsError(f"{source}: {e}") from None
    shapes = {path_key(p): tuple(v.get_value().shape) for p, v in nnx.to_flat_state(lora.lora_state(model))}
    return map_onto(shapes, factors, source=source)


def convert(src: str, dst: str, config: str = "sd15", alpha: float | None = None,
            skip_text_encoder: bool = False) -> str:
    if alpha is not None and (not math.isfinite(alpha) or alpha <= 0):
        raise ConfigError(f"--alpha must be positive and finite, got {alpha}")
    if os.path.isdir(src):
        raise WeightsError(f"{src}: give the LoRA weights file (.safetensors), not a folder")
    cfg = unet_config(config)
    sd = read_state_dict(src)
    factors, file_alphas = normalise(sd, cfg, skip_text_encoder=skip_text_encoder)
    meta_alpha, pattern = read_metadata_alphas(src)
    layers = layers_of(factors, file_alphas, alpha=alpha, meta_alpha=meta_alpha, alpha_pattern=pattern)
    params = convert_params(cfg, factors, layers, source=src)
    return save_checkpoint(dst, family="sd-lora", config={"unet": dataclasses.asdict(cfg), "layers": layers},
                           params=params)
