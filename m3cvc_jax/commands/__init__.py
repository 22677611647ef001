"""Subcommands of `m3cvc`: one module per command, each exposing `register(subparsers)`.

`register` adds its parser with `subparsers.add_parser(NAME, ...)` and sets `func=run`, where
`run(args) -> int | None` does the work. Import heavy libraries (jax, av) inside `run`, not at module level,
so `m3cvc --help` and `m3cvc inspect` stay fast. The list of commands lives in `m3cvc_jax/cli.py`.
"""
