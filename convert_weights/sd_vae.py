"""`python -m convert_weights sd-vae SRC DST [--config C]`: SD AutoencoderKL -> our checkpoint.

SRC: a diffusers `vae/` folder (or the pipeline folder holding it), a weights file, or a single-file SD
checkpoint with original LDM names (`first_stage_model.encoder.down...`, or a standalone LDM VAE file).
A standalone LDM autoencoder checkpoint still carries its training loss (`loss.logvar`, the LPIPS and
discriminator weights under `loss.*`); those tensors are not part of the model and are skipped (and
reported), as diffusers' own conversion does.
The config comes from `--config` (preset `tiny`/`sd` or a config.json), else the folder's config.json,
else it is inferred from LDM weights (norm groups 32, scaling factor 0.18215: SD's values).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto, to_device_arrays
from convert_weights.lazy import LazyStateDict
from convert_weights.ldm_names import VAE_PREFIX, old_diffusers_vae_rename, renamer, vae_table
from convert_weights.sd_source import check_inferred_groups, read_component, resolve_config
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
from m3cvc_jax.weights import save_checkpoint

TRAINING_LOSS_PREFIX = "loss."


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=None,
                        help="preset (tiny, sd) or a diffusers config.json; default: the source's own")


def is_ldm(state_dict) -> bool:
    return any(k.startswith("encoder.down.") for k in state_dict)


def infer_config(sd: dict[str, np.ndarray]) -> VAEConfig:
    """Shapes of an LDM-named VAE state dict -> config (what shapes cannot tell takes SD's values)."""
    try:
        n = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
        layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
        cfg = VAEConfig(
            in_channels=sd["encoder.conv_in.weight"].shape[1], out_channels=sd["decoder.conv_out.weight"].shape[0],
            block_out_channels=tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in range(n)),
            layers_per_block=layers, latent_channels=sd["decoder.conv_in.weight"].shape[1],
            use_quant_conv="quant_conv.weight" in sd, use_post_quant_conv="post_quant_conv.weight" in sd)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"cannot infer the VAE config from the weights ({e}); pass --config") from None
    check_inferred_groups(cfg)
    return cfg


def split_training_loss(sd: LazyStateDict) -> tuple[LazyStateDict, list[str]]:
    """(the model's tensors, the sorted keys of the training loss's own ones)."""
    ignored = sorted(k for k in sd if k.startswith(TRAINING_LOSS_PREFIX))
    return sd.drop(ignored), ignored


def load_reference(src: str, config: str | None = None) -> tuple[VAEConfig, dict[str, np.ndarray], Callable]:
    """(config, reference state dict, key renaming onto our names)."""
    sd, found = read_component(src, "vae", VAE_PREFIX)
    sd, ignored = split_training_loss(sd)
    if ignored:
        print(f"sd-vae: ignoring {len(ignored)} training-loss tensors: {', '.join(ignored[:6])}"
              f"{' ...' if len(ignored) > 6 else ''}")
    cfg = resolve_config(src, config, found, sd, ldm=is_ldm(sd), infer=infer_config, cls=VAEConfig)
    if is_ldm(sd):
        rename = renamer(vae_table(len(cfg.block_out_channels), cfg.layers_per_block))
    else:
        rename = lambda k: old_diffusers_vae_rename(k).replace("Conv2d_0.", "conv.")  # noqa: E731
    return cfg, sd, rename


def convert_params(cfg: VAEConfig, sd, rename, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    shapes = abstract_shapes(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)))
    return map_onto(shapes, sd, rename=rename, source=source)


def convert(src: str, dst: str, config: str | None = None, *, overwrite: bool = False) -> str:
    cfg, sd, rename = load_reference(src, config)
    params = to_device_arrays(convert_params(cfg, sd.with_progress("sd-vae"), rename, source=src))
    return save_checkpoint(dst, family="sd-vae", config=dataclasses.asdict(cfg), params=params, overwrite=overwrite, compress=False)
