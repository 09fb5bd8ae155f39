"""``python -m lsr``: the lsr command line."""

from lsr.cli import app

app(prog_name="lsr")
