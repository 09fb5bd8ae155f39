"""One search over a *view*: sparse, dense or hybrid (fused), the same for every kind of view.

A view answers ``search_sparse(terms, weights, k, flt, plan=)`` and ``search_dense(vector, k,
flt)`` with exact (id, score) lists, best first, ties by smaller id: a collection's
:class:`~lsr.collection.snapshot.Snapshot`, or a sharded collection's fan-out over its shards
(:mod:`lsr.shards.collection`). Query encoding happens once, here, through the owner (the
collection or the router), so every part of a view scores the same query bits.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lsr.collection.queries import in_term_order
from lsr.errors import InputError
from lsr.types import Hit

MODES = ("sparse", "dense", "hybrid")


class View(Protocol):
    def search_sparse(
        self, terms: np.ndarray, weights: np.ndarray, k: int, flt: Any = None, *, plan: str = ...
    ) -> list[tuple[str, float]]: ...

    def search_dense(
        self, vector: np.ndarray, k: int, flt: Any = None
    ) -> list[tuple[str, float]]: ...


def sparse_hits(
    owner: Any, view: View, query: Any, k: int, flt: Any, plan: str
) -> list[tuple[str, float]]:
    """The exact sparse top k of ``query`` (text, ``{token: weight}`` or TermWeights)."""
    if query is None:
        raise InputError("a sparse search needs a query")
    terms, weights = in_term_order(owner.query_vector(query), len(owner.vocab))
    return view.search_sparse(terms, weights, k, flt, plan=plan)


def search_view(
    owner: Any,
    view: View,
    query: Any,
    k: int,
    flt: Any,
    mode: str,
    dense: Any,
    fusion: Any,
    plan: str,
) -> list[tuple[str, float]]:
    """(id, score) of the top ``k`` (``k`` and ``mode`` already checked): sparse, dense, or
    both legs at ``max(k, fusion.depth)`` fused by ``fusion`` (a ``lsr.retrieval.FusionConfig``).
    """
    if mode == "sparse":
        return sparse_hits(owner, view, query, k, flt, plan)
    from lsr.retrieval import FusionConfig

    fusion = fusion or FusionConfig()
    depth = k if mode == "dense" else max(k, fusion.depth)
    dense_hits = view.search_dense(owner.dense_query(query, dense), depth, flt)
    if mode == "dense":
        return dense_hits
    from lsr.fusion import fuse_hits

    sparse = sparse_hits(owner, view, query, depth, flt, plan)
    fused = fuse_hits([Hit(*h) for h in sparse], [Hit(*h) for h in dense_hits], k, fusion)
    return [(h.doc_id, h.score) for h in fused]
