"""The M3-CVC codec settings as a `get_config(preset)` file (`base_config` of configs/ablations/).

The table itself is part of the bitstream format (a decoder rebuilds its settings from the preset name in
the header), so it lives in the library: `m3cvc_jax/pipelines/presets.py`, where every field is explained.
"""

from m3cvc_jax.pipelines.presets import get_config

__all__ = ["get_config"]
