"""Process-wide JAX settings the commands choose (never the library): the persistent compilation cache.

Most of a tiny-preset run is XLA compilation of programs whose shapes repeat from run to run (same
models, frame size, window), so the CLI keeps compiled programs on disk: `M3CVC_JAX_CACHE=DIR` sets the
folder (default `$XDG_CACHE_HOME/m3cvc-jax/xla`, i.e. `~/.cache/m3cvc-jax/xla`), `M3CVC_JAX_CACHE=off`
disables it. A cache entry is keyed by the program and the XLA version, so it never changes results.
"""

from __future__ import annotations

import os
import warnings


def cache_dir() -> str | None:
    value = os.environ.get("M3CVC_JAX_CACHE")
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "no", "false") else value
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "m3cvc-jax", "xla")


def setup() -> None:
    """Enable the compilation cache (if not disabled) and silence JAX's donation notice, which is about
    an optimisation the CPU backend skips, not about the user's files."""
    import jax  # loaded only by the commands that compute

    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    path = cache_dir()
    if path and not jax.config.jax_compilation_cache_dir:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            return  # an unwritable cache only costs time
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
