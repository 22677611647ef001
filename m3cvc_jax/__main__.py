"""`python -m m3cvc_jax` is the `m3cvc` command."""

from m3cvc_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
