"""One search over a *view*: sparse, dense or hybrid (fused), the same for every kind of view.

A view answers ``search_sparse(terms, weights, k, flt, plan=)`` and ``search_dense(vector, k,
flt)`` with exact (id, score) lists, best first, ties by smaller id: a collection's
:class:`~lsr.collection.snapshot.Snapshot`, or a sharded collection's fan-out over its shards
(:mod:`lsr.shards.collection`). Query encoding happens once, here, through the owner (the
collection or the router), so every part of a view scores the same query bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from lsr.collection.queries import in_term_order
from lsr.collection.scoring import make_plan
from lsr.errors import InputError
from lsr.types import Hit, check_k

MODES = ("sparse", "dense", "hybrid")


class View(Protocol):
    def search_sparse(
        self, terms: np.ndarray, weights: np.ndarray, k: int, flt: Any = None, *, plan: Any = ...
    ) -> list[tuple[str, float]]: ...

    def search_dense(
        self, vector: np.ndarray, k: int, flt: Any = None
    ) -> list[tuple[str, float]]: ...


def sparse_hits(
    owner: Any, view: View, query: Any, k: int, flt: Any, plan: Any
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
    plan: Any,
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


def run_search(
    owner: Any,
    view: View,
    schema: Any,
    fetch: Callable[[list[str]], dict[str, Any]],
    query: Any,
    k: int,
    *,
    filter: Any,
    mode: str,
    dense: Any,
    fusion: Any,
    with_payload: bool,
    plan: Any,
    prf: Any,
    heap_factor: float = 1.0,
) -> list[Any]:
    """A collection's ``search`` (arguments as :meth:`lsr.collection.Collection.search`) over
    ``view``, filters parsed against ``schema``, payloads from ``fetch(ids)``; the same for a
    collection and a sharded collection's router."""
    from lsr.collection.collection import Match
    from lsr.collection.filters import parse_filter
    from lsr.collection.prf import prf_search

    k = check_k(k)
    plan = make_plan(plan, heap_factor)
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    flt = None if filter is None else parse_filter(filter, schema)
    if prf is not None:
        hits = prf_search(
            owner, query, k, prf, filter=filter, mode=mode, dense=dense, fusion=fusion, plan=plan
        )
    else:
        hits = search_view(owner, view, query, k, flt, mode, dense, fusion, plan)
    if not with_payload:
        return [Hit(i, s) for i, s in hits]
    payload = fetch([i for i, _ in hits])
    return [Match(i, s, *payload.get(i, (None, None))) for i, s in hits]
