"""The small types every layer shares: a hit, a run, and the one check of ``k``.

This module imports nothing heavy (no Numba, no torch), so result types cost nothing to use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from lsr.errors import InputError


class Hit(NamedTuple):
    """One result: the document's external id and its score."""

    doc_id: str
    score: float


Ranked = dict[str, list[tuple[str, float]]]
"""A run as lsr produces it: ``{query_id: [(doc_id, score), ...]}``, best first."""

Hits = Sequence[tuple[str, float]] | Mapping[str, float]
RunLike = Mapping[str, Hits]
"""A run as lsr accepts it: ranked pairs or ``{doc_id: score}`` per query."""


def hits_to_run(qids: Sequence[str], hits: Sequence[Sequence[Hit]]) -> Ranked:
    """``{qid: [(doc_id, score), ...]}`` from one hit list per query id."""
    return {
        str(q): [(h.doc_id, float(h.score)) for h in hs] for q, hs in zip(qids, hits, strict=True)
    }


def check_k(k: object, name: str = "k") -> int:
    """``k`` as an int, or an InputError when it is not a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputError(f"{name} must be a positive integer, got {k!r}")
    return int(k)
