"""The `m3cvc` command (also `python -m m3cvc_jax`).

Subcommands are the modules `m3cvc_jax.commands.<name>` of `COMMANDS`; each exposes
`register(subparsers)`.

Error policy: user errors (M3CVCError, OSError such as a missing or unreadable file, bad options) exit 2
with one line on stderr starting `m3cvc: error:`; anything else is a bug and exits 1 with one line. A
traceback is printed only with `--debug` (accepted anywhere on the command line).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from m3cvc_jax import __version__
from m3cvc_jax.commands import decode, encode, inspect
from m3cvc_jax.commands import eval as eval_command
from m3cvc_jax.errors import InputWarning, M3CVCError

COMMANDS = {"encode": encode, "decode": decode, "inspect": inspect, "eval": eval_command}
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


class UsageError(M3CVCError):
    """A bad command line (argparse's complaint, turned into our one-line error)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage plus the message over several lines
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="m3cvc",
        description="Generative ultra-low-bitrate video compression (M3-CVC, CMVC) in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"m3cvc {__version__}")
    parser.add_argument("--debug", action="store_true", help="print tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for command in COMMANDS.values():
        command.register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(text.split()) if text else ""


def _report(message: str) -> None:
    print(f"m3cvc: error: {_one_line(message)}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    if issubclass(category, InputWarning):
        print(f"m3cvc: warning: {_one_line(str(message))}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `m3cvc inspect f | head`: the reader went away; say nothing more on a closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INTERNAL_ERROR
    except KeyboardInterrupt:
        _report("interrupted")
        return 130
    except M3CVCError as e:
        if debug:
            traceback.print_exc()
        _report(str(e) or type(e).__name__)
        return EXIT_USER_ERROR
    except OSError as e:
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        _report(f"{where}{e.strerror or e}")
        return EXIT_USER_ERROR
    except Exception as e:
        if debug:
            traceback.print_exc()
        _report(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        return EXIT_INTERNAL_ERROR
