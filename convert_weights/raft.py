"""RAFT: torchvision state dicts (`raft_large_C_T_SKHT_V2-ff5fadd5.pth`, ...) or original RAFT checkpoints
(princeton-vl/RAFT `raft-things.pth`, `raft-sintel.pth`, `raft-small.pth`, ...: `module.fnet...`).

    python -m convert_weights raft raft_large_C_T_SKHT_V2-ff5fadd5.pth weights/raft --preset large
    python -m convert_weights raft raft-things.pth weights/raft            # naming and size detected

Our names are torchvision's. The original naming differs by module; `original_names(config)` is the full
table (original module path -> torchvision module path), built from the architecture so every key is
accounted for. The original stores each downsampling norm twice (`norm3`/`norm4` is also
`downsample.1`); the duplicate is dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto, read_state_dict
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.raft import PRESETS, RAFT, RAFTConfig
from m3cvc_jax.weights import save_checkpoint

_NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")


def add_arguments(parser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture (default: detected from the weights, large or small)")


def _encoder_table(orig: str, ours: str, block: str, norm_params: bool) -> dict[str, str]:
    convs = 2 if block == "residual" else 3
    table = {f"{orig}.conv1": f"{ours}.convnormrelu.0", f"{orig}.conv2": f"{ours}.conv"}
    if norm_params:
        table[f"{orig}.norm1"] = f"{ours}.convnormrelu.1"
    for layer in (1, 2, 3):
        for i in (0, 1):
            o, t = f"{orig}.layer{layer}.{i}", f"{ours}.layer{layer}.{i}"
            for k in range(1, convs + 1):
                table[f"{o}.conv{k}"] = f"{t}.convnormrelu{k}.0"
                if norm_params:
                    table[f"{o}.norm{k}"] = f"{t}.convnormrelu{k}.1"
            if layer > 1 and i == 0:  # strided first block of layers 2 and 3
                table[f"{o}.downsample.0"] = f"{t}.downsample.0"
                if norm_params:
                    table[f"{o}.downsample.1"] = f"{t}.downsample.1"
                    table[f"{o}.norm{convs + 1}"] = None  # the same tensor as downsample.1
    return table


def original_names(config: RAFTConfig) -> dict[str, str | None]:
    """Original RAFT module path (without `module.`) -> torchvision module path (None: a duplicate)."""
    table = {}
    table.update(_encoder_table("fnet", "feature_encoder", config.feature_encoder_block,
                                config.feature_encoder_norm == "batch"))
    table.update(_encoder_table("cnet", "context_encoder", config.context_encoder_block,
                                config.context_encoder_norm == "batch"))
    u, m = "update_block", "update_block.motion_encoder"
    table.update({f"{u}.encoder.convc1": f"{m}.convcorr1.0", f"{u}.encoder.convf1": f"{m}.convflow1.0",
                  f"{u}.encoder.convf2": f"{m}.convflow2.0", f"{u}.encoder.conv": f"{m}.conv.0",
                  f"{u}.flow_head.conv1": f"{u}.flow_head.conv1", f"{u}.flow_head.conv2": f"{u}.flow_head.conv2"})
    if len(config.motion_encoder_corr_layers) == 2:
        table[f"{u}.encoder.convc2"] = f"{m}.convcorr2.0"
    g = f"{u}.recurrent_block"
    if len(config.recurrent_block_kernel_size) == 2:  # SepConvGRU: convz1.. horizontal, convz2.. vertical
        for gate in "zrq":
            table[f"{u}.gru.conv{gate}1"] = f"{g}.convgru1.conv{gate}"
            table[f"{u}.gru.conv{gate}2"] = f"{g}.convgru2.conv{gate}"
    else:
        for gate in "zrq":
            table[f"{u}.gru.conv{gate}"] = f"{g}.convgru1.conv{gate}"
    if config.use_mask_predictor:
        table[f"{u}.mask.0"] = "mask_predictor.convrelu.0"
        table[f"{u}.mask.2"] = "mask_predictor.conv"
    return table


def is_original_naming(state_dict: Mapping[str, np.ndarray]) -> bool:
    return any(k.split(".")[0] in ("module", "fnet", "cnet") for k in state_dict)


def detect_preset(state_dict: Mapping[str, np.ndarray]) -> str:
    """large or small, from the width of the feature encoder's output conv."""
    for key, value in state_dict.items():
        if key.endswith(("fnet.conv2.weight", "feature_encoder.conv.weight")):
            return {256: "large", 128: "small"}.get(int(np.shape(value)[0]), "unknown")
    raise WeightsError("not a RAFT checkpoint: no feature encoder output conv (fnet.conv2 / feature_encoder.conv)")


def from_original(state_dict: Mapping[str, np.ndarray], config: RAFTConfig) -> dict[str, np.ndarray]:
    """Rename an original-RAFT state dict to torchvision names; unknown keys are kept (and reported later)."""
    table = original_names(config)
    out = {}
    for key, value in state_dict.items():
        k = key[len("module."):] if key.startswith("module.") else key
        module, _, leaf = k.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        if module in table:
            if table[module] is not None:
                out[f"{table[module]}.{leaf}"] = value
        else:
            out[key] = value
    return out


def _rename(key: str) -> str | None:
    return None if key.endswith("num_batches_tracked") else key


def convert_state_dict(state_dict: Mapping[str, np.ndarray], config: RAFTConfig,
                       *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """torchvision- or original-named tensors -> our flat params for `RAFT(config)`."""
    if is_original_naming(state_dict):
        state_dict = from_original(state_dict, config)
    return map_onto(abstract_shapes(lambda: RAFT(config, rngs=nnx.Rngs(0))), state_dict, rename=_rename,
                    source=source)


def convert(src: str, dst: str, *, preset: str | None = None, overwrite: bool = False) -> str:
    state_dict = read_state_dict(src)
    if preset is None:
        preset = detect_preset(state_dict)
        if preset not in PRESETS:
            raise WeightsError(f"{src}: cannot tell the RAFT size from the weights; pass --preset")
    config = PRESETS[preset]
    params = convert_state_dict(state_dict, config, source=src)
    return save_checkpoint(dst, family="raft", config={"preset": preset, **dataclasses.asdict(config)},
                           params=params, overwrite=overwrite)
