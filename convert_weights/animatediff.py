"""`python -m convert_weights animatediff SRC DST [--config C]`: AnimateDiff motion modules -> ours.

SRC: a diffusers `MotionAdapter` folder (`save_pretrained` layout, or a pipeline folder holding
`motion_adapter/`), or an original AnimateDiff motion-module checkpoint (`mm_sd_v15_v2.ckpt`,
`v3_sd15_mm.ckpt`, ...: names under `temporal_transformer`, `attention_blocks.N`, `norms.N`, `ff_norm`).
The SD 1.5 UNet is converted separately (`python -m convert_weights sd-unet`); `nn.animatediff.merge_params`
joins the two. For the codec's TT2V mode (preset paper) they are the weights folder's `motion-module` and
`sd-unet` sub-folders (docs/cmvc.md, "TT2V"):

    python -m convert_weights sd-unet     SD15_DIR/unet      weights/sd-unet
    python -m convert_weights animatediff mm_sd_v15_v2.ckpt  weights/motion-module

Config: `--config` (preset `tiny`/`v1`/`v2`/`v3` or a MotionAdapter config.json), else the folder's
config.json, else (original checkpoints) inferred from the shapes with AnimateDiff's conventions: 8 heads
and 32 norm groups (neither is visible in the weights), the position count from the stored tables.

Every stored position table (`pos_embed.pe`, the original's `pos_encoder.pe` of each attention) is checked
against the sinusoidal table the port recomputes, then dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto
from convert_weights.sd_source import read_component, resolve_config
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.nn.animatediff import MotionAdapter, MotionAdapterConfig, sinusoidal_table
from m3cvc_jax.weights import save_checkpoint

FAMILY = "animatediff"
# Original AnimateDiff name -> diffusers name (diffusers' convert_animatediff_checkpoint_to_diffusers).
ORIGINAL_TO_DIFFUSERS = ((".norms.0.", ".norm1."), (".norms.1.", ".norm2."), (".ff_norm.", ".norm3."),
                         (".attention_blocks.0.", ".attn1."), (".attention_blocks.1.", ".attn2."),
                         (".temporal_transformer.", "."))


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=None,
                        help="preset (tiny, v1, v2, v3) or a MotionAdapter config.json; default: the source's own")


def is_original(sd) -> bool:
    return any(".temporal_transformer." in k for k in sd)


def to_diffusers_name(key: str) -> str:
    for old, new in ORIGINAL_TO_DIFFUSERS:
        key = key.replace(old, new)
    return key


def _position_tables(sd) -> dict[str, np.ndarray]:
    return {k: v for k, v in sd.items() if k.endswith(".pos_embed.pe") or k.endswith(".pos_encoder.pe")}


def check_positions(sd, cfg: MotionAdapterConfig, *, source: str) -> int:
    """Every stored table must be the sinusoid of `motion_max_seq_length` positions; returns the count."""
    bad = []
    tables = _position_tables(sd)
    for k, v in tables.items():
        v = np.asarray(v, np.float32)
        want = sinusoidal_table(cfg.motion_max_seq_length, v.shape[-1])
        if v.shape != (1, *want.shape) or not np.allclose(v[0], want, rtol=0, atol=1e-5):
            bad.append(f"{k} {tuple(v.shape)}")
    if bad:
        raise WeightsError(f"{source}: {len(bad)} position tables are not the {cfg.motion_max_seq_length}-position "
                           f"sinusoid the port computes (e.g. {bad[0]})")
    return len(tables)


def infer_config(sd) -> MotionAdapterConfig:
    """Shapes of an original motion-module state dict -> config (8 heads, 32 groups assumed)."""
    def count(pattern):
        return len({m.group(1) for k in sd if (m := re.match(pattern, k))})

    try:
        n = count(r"down_blocks\.(\d+)\.motion_modules\.")
        ch = tuple(sd[f"down_blocks.{i}.motion_modules.0.temporal_transformer.norm.weight"].shape[0] for i in range(n))
        layers = tuple(count(rf"down_blocks\.{i}\.motion_modules\.(\d+)\.") for i in range(n))
        tlayers = tuple(count(rf"down_blocks\.{i}\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\.")
                        for i in range(n))
        mid = count(r"mid_block\.motion_modules\.(\d+)\.")
        mid_t = count(r"mid_block\.motion_modules\.0\.temporal_transformer\.transformer_blocks\.(\d+)\.")
        pe = next(v for k, v in sd.items() if k.endswith(".pos_encoder.pe"))
        cfg = MotionAdapterConfig(
            block_out_channels=ch, motion_layers_per_block=layers[0] if len(set(layers)) == 1 else layers,
            motion_transformer_layers_per_block=tlayers[0] if len(set(tlayers)) == 1 else tlayers,
            motion_mid_block_layers_per_block=max(mid, 1), motion_transformer_layers_per_mid_block=max(mid_t, 1),
            motion_max_seq_length=int(pe.shape[1]), use_motion_mid_block=mid > 0)
    except (KeyError, ValueError, IndexError, StopIteration) as e:
        raise WeightsError(f"cannot infer the motion adapter config from the weights ({e!r}); pass --config") from None
    return cfg


@functools.lru_cache(maxsize=4)
def model_shapes(cfg: MotionAdapterConfig) -> dict[str, tuple[int, ...]]:
    return abstract_shapes(lambda: MotionAdapter(cfg, rngs=nnx.Rngs(0)))


def convert_state_dict(sd, cfg: MotionAdapterConfig, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Reference state dict (either naming) -> our flat adapter params (float32), strictly."""
    check_positions(sd, cfg, source=source)
    sd = {k: v for k, v in sd.items() if k not in _position_tables(sd)}
    rename = to_diffusers_name if is_original(sd) else (lambda k: k)
    params = map_onto(model_shapes(cfg), sd, rename=rename, source=source)
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}


def convert(src: str, dst: str, config: str | None = None, *, overwrite: bool = False) -> str:
    sd, found = read_component(src, "motion_adapter", "")
    cfg = resolve_config(src, config, found, sd, ldm=is_original(sd), infer=infer_config, cls=MotionAdapterConfig)
    params = convert_state_dict(sd, cfg, source=src)
    return save_checkpoint(dst, family=FAMILY, config=dataclasses.asdict(cfg), params=params, overwrite=overwrite)
