"""The project's user-facing errors.

Everything a user can cause (a missing file, a corrupt bitstream, a bad option, missing weights) raises a
subclass of `M3CVCError` with a one-line message; the CLI prints it as `m3cvc: error: ...` and exits 2.
"""


class M3CVCError(Exception):
    """A failure the user can act on; its message is one line."""


class BitstreamError(M3CVCError):
    """The bytes are not a valid m3cvc bitstream (corrupt, truncated, foreign or of another version)."""


class VideoError(M3CVCError):
    """A video cannot be read or written, or does not meet the request (too short, no frames)."""


class WeightsError(M3CVCError):
    """Weights are missing, mis-shaped, or do not belong to the configuration asked for."""


class ConfigError(M3CVCError):
    """An option or configuration value is unknown or invalid."""


class OutputError(M3CVCError):
    """An output path cannot or must not be written (unwritable, the input itself, a non-empty folder)."""


class InputWarning(UserWarning):
    """Something about an input the user should know that does not stop the command (a truncated video).
    The CLI prints it as one line `m3cvc: warning: ...`."""
