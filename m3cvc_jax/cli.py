"""The `m3cvc` command (placeholder until the foundation lands)."""


def main(argv=None):
    raise SystemExit("m3cvc: error: the command line is not built yet")
