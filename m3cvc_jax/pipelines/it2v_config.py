"""The settings of CMVC's IT2V model (`pipelines/it2v.py`), apart from its JAX code: the presets and the
command line read them without importing JAX.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from m3cvc_jax.errors import ConfigError

# The names `nn.lora.INITS` and `diffusion.morph.METHODS` implement (tests/test_it2v.py checks they agree).
LORA_INITS = ("gaussian", "kaiming")
INTERPOLATIONS = ("linear", "diffmorpher")


@dataclasses.dataclass(frozen=True)
class IT2VConfig:
    """CMVC's final setting by default: 100 LoRA steps, 50 sampling steps; DiffMorpher's rank 16, lr 2e-4.

    lora_alpha None = rank (update scale 1, as diffusers' LoRAAttnProcessor that DiffMorpher trains).
    opt_steps/opt_lr: the encoder's w optimisation (CMVC: lr 1e-3; its step count is not published).
    remat: `jax.checkpoint` each UNet call of the differentiated sampler (bounded memory, ~1 more forward).
    """

    lora_rank: int = 16
    lora_alpha: float | None = None
    lora_steps: int = 100
    lora_lr: float = 2e-4
    lora_weight_decay: float = 1e-2
    lora_init: str = "gaussian"
    sampling_steps: int = 50
    interpolation: str = "linear"
    opt_steps: int = 20
    opt_lr: float = 1e-3
    remat: bool = True
    w_bits: int = 8

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise ConfigError(f"IT2V setting {what}")

        for name in ("lora_rank", "lora_steps", "sampling_steps", "opt_steps", "w_bits"):
            v = getattr(self, name)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{name} must be an integer, got {v!r}")
        need(1 <= self.lora_rank <= 1024, f"lora_rank must be in [1, 1024], got {self.lora_rank}")
        need(0 <= self.lora_steps <= 100_000, f"lora_steps must be in [0, 100000], got {self.lora_steps}")
        need(1 <= self.sampling_steps <= 1000, f"sampling_steps must be in [1, 1000], got {self.sampling_steps}")
        need(0 <= self.opt_steps <= 100_000, f"opt_steps must be in [0, 100000], got {self.opt_steps}")
        need(1 <= self.w_bits <= 16, f"w_bits must be in [1, 16], got {self.w_bits}")
        for name in ("lora_lr", "opt_lr"):
            v = getattr(self, name)
            need(math.isfinite(v) and 0 < v <= 1, f"{name} must be in (0, 1], got {v}")
        need(math.isfinite(self.lora_weight_decay) and 0 <= self.lora_weight_decay <= 1,
             f"lora_weight_decay must be in [0, 1], got {self.lora_weight_decay}")
        need(self.lora_alpha is None or (math.isfinite(self.lora_alpha) and self.lora_alpha > 0),
             f"lora_alpha must be positive and finite, got {self.lora_alpha}")
        need(self.lora_init in LORA_INITS, f"lora_init must be one of {', '.join(LORA_INITS)}, got {self.lora_init!r}")
        need(self.interpolation in INTERPOLATIONS,
             f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
