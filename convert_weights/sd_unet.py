"""`python -m convert_weights sd-unet SRC DST [--config C] [--extra-in-channels N]`: SD UNet -> ours.

SRC: a diffusers `unet/` folder (or the pipeline folder holding it), a weights file, or a single-file SD
checkpoint with original LDM names (`model.diffusion_model.input_blocks...`). The config comes from
`--config` (preset `tiny`/`sd15`/`sd21` or a config.json), else the folder's config.json, else it is
inferred from LDM weights with SD's head conventions (8 heads with conv projection as in SD 1.x; 64-dim
heads with linear projection as in SD 2.x).

`--extra-in-channels N` widens `conv_in` for M3-CVC's keyframe condition: the reference conv_in, which
has fewer input channels, is zero-padded with N new input channels, so the converted UNet computes what
the reference computes until fine-tuning. A reference conv_in that already has them is taken as is.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

import numpy as np

from convert_weights.core import abstract_shapes_rngs, map_onto, to_device_arrays
from convert_weights.lazy import LazyStateDict
from convert_weights.ldm_names import UNET_PREFIX, renamer, unet_table
from convert_weights.sd_source import check_inferred_groups, read_component, resolve_config
from m3cvc_jax.errors import ConfigError, WeightsError
from m3cvc_jax.nn.unet import CROSS_DOWN, CROSS_UP, PLAIN_DOWN, PLAIN_UP, UNet2DConditionModel, UNetConfig
from m3cvc_jax.weights import save_checkpoint


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=None,
                        help="preset (tiny, sd15, sd21) or a diffusers config.json; default: the source's own")
    parser.add_argument("--extra-in-channels", type=int, default=0,
                        help="zero-initialised input channels added to conv_in (keyframe condition)")


def is_ldm(state_dict) -> bool:
    return any(k.startswith("input_blocks.") for k in state_dict)


def ldm_rename(cfg: UNetConfig, *, to_ldm: bool = False) -> Callable[[str], str]:
    rows = unet_table(cfg.layers_per_block, tuple(t == CROSS_DOWN for t in cfg.down_block_types),
                      tuple(t == CROSS_UP for t in cfg.up_block_types))
    return renamer(rows, to_ldm=to_ldm)


def infer_config(sd: dict[str, np.ndarray]) -> UNetConfig:
    """Shapes of an LDM-named UNet state dict -> config, with SD's head-count conventions."""
    try:
        slots = sorted({int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.", k))})
        downs = [i for i in slots if f"input_blocks.{i}.0.op.weight" in sd]
        n = len(downs) + 1
        layers = downs[0] - 1
        first = [1 + b * (layers + 1) for b in range(n)]
        ch = tuple(sd[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] for i in first)
        attn = tuple(f"input_blocks.{i}.1.proj_in.weight" in sd for i in first)
        proj = next(sd[f"input_blocks.{i}.1.proj_in.weight"] for i, a in zip(first, attn) if a)
        linear = proj.ndim == 2
        to_k = sd[next(k for k in sd if k.endswith("attn2.to_k.weight"))]
        cfg = UNetConfig(
            in_channels=sd["input_blocks.0.0.weight"].shape[1], out_channels=sd["out.2.weight"].shape[0],
            block_out_channels=ch, layers_per_block=layers,
            down_block_types=tuple(CROSS_DOWN if a else PLAIN_DOWN for a in attn),
            up_block_types=tuple(CROSS_UP if a else PLAIN_UP for a in attn[::-1]),
            cross_attention_dim=to_k.shape[1], use_linear_projection=linear,
            num_attention_heads=tuple(c // 64 for c in ch) if linear else 8)
    except (KeyError, ValueError, IndexError, StopIteration) as e:
        raise WeightsError(f"cannot infer the UNet config from the weights ({e!r}); pass --config") from None
    check_inferred_groups(cfg)
    return cfg


def load_reference(src: str, config: str | None = None, extra_in_channels: int = 0
                   ) -> tuple[UNetConfig, dict[str, np.ndarray], Callable]:
    """(config, reference state dict, key renaming onto our names)."""
    sd, found = read_component(src, "unet", UNET_PREFIX)
    cfg = resolve_config(src, config, found, sd, ldm=is_ldm(sd), infer=infer_config, cls=UNetConfig)
    cfg = dataclasses.replace(cfg, extra_in_channels=extra_in_channels)
    rename = ldm_rename(cfg) if is_ldm(sd) else (lambda k: k.replace("Conv2d_0.", "conv."))
    return cfg, sd, rename


def pad_conv_in(cfg: UNetConfig, sd: Mapping[str, np.ndarray], rename: Callable) -> Mapping[str, np.ndarray]:
    """Zero-pad the reference conv_in (O, in_channels, 3, 3) to (O, in_channels + extra, 3, 3) (when read,
    for a lazy source)."""
    if not cfg.extra_in_channels:
        return sd

    def pad(value):
        if value.ndim == 4 and value.shape[1] == cfg.in_channels:
            zeros = np.zeros((value.shape[0], cfg.extra_in_channels, *value.shape[2:]), value.dtype)
            return np.concatenate([value, zeros], axis=1)
        return value

    keys = [k for k in sd if rename(k) == "conv_in.weight"]
    if isinstance(sd, LazyStateDict):
        for key in keys:
            sd = sd.transform(key, pad)
        return sd
    return {k: pad(v) if k in keys else v for k, v in sd.items()}


def convert_params(cfg: UNetConfig, sd, rename, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    shapes = abstract_shapes_rngs(lambda rngs: UNet2DConditionModel(cfg, rngs=rngs))
    return map_onto(shapes, pad_conv_in(cfg, sd, rename), rename=rename, source=source)


def convert(src: str, dst: str, config: str | None = None, extra_in_channels: int = 0, *,
            overwrite: bool = False) -> str:
    if extra_in_channels < 0:
        raise ConfigError(f"--extra-in-channels must be >= 0, got {extra_in_channels}")
    cfg, sd, rename = load_reference(src, config, extra_in_channels)
    # Streamed: each tensor is read, re-laid out and made a compact jax array before the next is read.
    params = to_device_arrays(convert_params(cfg, sd.with_progress("sd-unet"), rename, source=src))
    return save_checkpoint(dst, family="sd-unet", config=dataclasses.asdict(cfg), params=params, overwrite=overwrite, compress=False)
