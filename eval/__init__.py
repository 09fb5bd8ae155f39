"""Evaluation and benchmark tooling (not part of the installed package)."""
