"""SEINE (`seine.pt`, the `ema` weights) -> our VideoUNet checkpoint.

    python -m convert_weights seine pretrained/seine.pt weights/seine [--preset seine]

SEINE's names are ours already (diffusers-0.15 layout). The only reference-side extra is the rotary
embedding's `freqs`, which SEINE stores (one shared module, listed under every temporal attention): the
port recomputes them, so here they are checked against the recomputed values and dropped.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from convert_weights.core import abstract_shapes, map_onto, read_state_dict
from m3cvc_jax.errors import ConfigError, WeightsError

FAMILY = "seine"


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="seine", help="model config preset: seine (default), reduced, tiny")
    parser.add_argument("--subkey", default="ema", help="entry of the pickled dict holding the weights (default: ema)")


def build_config(preset: str):
    from m3cvc_jax.nn.video_unet import PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"unknown SEINE preset {preset!r}; one of {', '.join(PRESETS)}")
    return PRESETS[preset]()


def check_rotary(state_dict: dict[str, np.ndarray], rotary_dim: int, *, source: str) -> int:
    """Compare every stored rotary `freqs` with the recomputed table; returns how many were checked."""
    expected = (1.0 / 10000.0 ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)).astype(np.float32)
    bad = []
    keys = [k for k in state_dict if k.endswith("rotary_emb.freqs")]
    for k in keys:
        v = np.asarray(state_dict[k], dtype=np.float32)
        if v.shape != expected.shape or not np.allclose(v, expected, rtol=1e-6, atol=0):
            bad.append(k)
    if bad:
        raise WeightsError(f"{source}: {len(bad)} rotary freqs differ from 1/10000^(2i/{rotary_dim}) "
                           f"(e.g. {bad[0]}); the port cannot represent them")
    return len(keys)


@functools.lru_cache(maxsize=4)
def model_shapes(config) -> dict[str, tuple[int, ...]]:
    """Flat key -> shape of our VideoUNet for a config (traced once per config)."""
    from flax import nnx

    from m3cvc_jax.nn.video_unet import VideoUNet

    return abstract_shapes(lambda: VideoUNet(config, rngs=nnx.Rngs(0)))


def _rename(key: str) -> str | None:
    return None if key.endswith("rotary_emb.freqs") else key


def convert_state_dict(state_dict: dict[str, np.ndarray], config, *, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """Reference state dict -> our flat params (float32), strictly."""
    check_rotary(state_dict, config.rotary_dim, source=source)
    params = map_onto(model_shapes(config), state_dict, rename=_rename, source=source)
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}


def convert(src: str, dst: str, *, preset: str = "seine", subkey: str = "ema", overwrite: bool = False) -> str:
    from m3cvc_jax.weights import save_checkpoint

    config = build_config(preset)
    state_dict = read_state_dict(src, subkey=subkey)
    params = convert_state_dict(state_dict, config, source=src)
    return save_checkpoint(dst, family=FAMILY, config=dataclasses.asdict(config), params=params, overwrite=overwrite)
