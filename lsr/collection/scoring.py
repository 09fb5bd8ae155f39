"""Exact top-k over one part of a collection (a segment, or a table of buffered documents).

A part offers forward rows (each document's terms ascending with weight codes) and, when it is
big enough to pay for them, postings in the index layout. The plan: with every document allowed,
term-at-a-time over the postings; with an allowed mask (deletes, filters), term-at-a-time with the
mask applied in the top-k scan, or — when the allowed documents' rows hold fewer entries than the
query's postings — the allowed documents scored directly from their forward rows. All plans sum in
ascending term order, so they return the same hits with the same bits. Asked for, "blockmax"
searches a part with postings best block first (:mod:`lsr.index.kernels.blockmax`): the same hits
at ``heap_factor`` 1, faster and approximate below it; "approximate" is blockmax at the measured
default (:func:`lsr.index.sparse_index.approximate_heap_factor` of the query's length).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from lsr.errors import InputError
from lsr.index import kernels

PLANS = ("auto", "taat", "forward", "blockmax", "approximate")
_EVERYONE = np.zeros(0, dtype=np.uint8)  # blockmax's "no allowed mask"
_SCRATCH = threading.local()  # per thread: a zeroed accumulator and a zeroed dense query


class Scorable(NamedTuple):
    """What the kernels need of a part: postings (None: forward rows only) and forward rows."""

    ix: kernels.IndexArrays | None
    fwd_ptr: np.ndarray
    fwd_terms: np.ndarray
    fwd_codes: np.ndarray
    num_docs: int
    avg_length: float


class SearchPlan(NamedTuple):
    """How each part is searched: ``name`` (one of PLANS) and blockmax's ``heap_factor``."""

    name: str = "auto"
    heap_factor: float = 1.0


def make_plan(plan: str | SearchPlan, heap_factor: float = 1.0) -> SearchPlan:
    """A checked :class:`SearchPlan` (InputError on an unknown name or a bad heap_factor)."""
    from lsr.index.sparse_index import check_heap_factor

    if isinstance(plan, SearchPlan):
        plan, heap_factor = plan.name, plan.heap_factor if heap_factor == 1.0 else heap_factor
    if plan not in PLANS:
        raise InputError(f"plan must be one of {', '.join(PLANS)}, got {plan!r}")
    return SearchPlan(plan, check_heap_factor(heap_factor, plan))


def _scratch(n_docs: int, n_terms: int) -> tuple[np.ndarray, np.ndarray]:
    acc = getattr(_SCRATCH, "acc", None)
    if acc is None or acc.shape[0] < n_docs:
        acc = _SCRATCH.acc = np.zeros(max(n_docs, 1024), dtype=np.float32)
    q_dense = getattr(_SCRATCH, "q_dense", None)
    if q_dense is None or q_dense.shape[0] != n_terms:
        q_dense = _SCRATCH.q_dense = np.zeros(n_terms, dtype=np.float32)
    return acc, q_dense


def choose_plan(
    part: Scorable, allowed: np.ndarray | None, n_allowed: int, terms: np.ndarray
) -> str:
    """The cheaper exact plan: "taat" or "forward" (by entries touched)."""
    if part.ix is None:
        return "forward"
    if allowed is None:
        return "taat"
    taat = kernels.postings_of(terms, part.ix.term_post_ptr) + part.num_docs // 4
    return "forward" if n_allowed * (part.avg_length + 4) < taat else "taat"


def top_k(
    part: Scorable,
    lut: np.ndarray | None,
    n_terms: int,
    allowed: np.ndarray | None,
    terms: np.ndarray,
    weights: np.ndarray,
    k: int,
    plan: str | SearchPlan = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(positions, scores in score units) of the top k allowed documents, best first.

    ``allowed``: uint8 per document (None: all); ``terms`` int32 ascending, ``weights`` > 0.
    """
    plan, heap_factor = plan if isinstance(plan, SearchPlan) else make_plan(plan)
    if plan == "approximate":
        from lsr.index.sparse_index import approximate_heap_factor

        plan, heap_factor = "blockmax", approximate_heap_factor(int(terms.size))
    if plan == "blockmax":
        if part.ix is not None:
            return _blockmax(part, lut, allowed, terms, weights, k, heap_factor)
        plan = "auto"  # a buffered part without postings: scored exactly
    if allowed is None:  # the common case first: no deletes, no filter
        if part.ix is not None and plan != "forward" and terms.size and part.num_docs:
            kk = min(k, part.num_docs)
            docs = np.empty(kk, dtype=np.int64)
            scores = np.empty(kk, dtype=np.float32)
            acc, _ = _scratch(part.num_docs, n_terms)
            count = kernels.exhaustive_one(terms, weights, kk, part.ix, lut, acc, docs, scores)
            return docs[:count], scores[:count]
        n_allowed = part.num_docs
    else:
        n_allowed = int(np.count_nonzero(allowed))
    if n_allowed == 0 or terms.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if plan == "auto":
        plan = choose_plan(part, allowed, n_allowed, terms)
    elif plan == "taat" and part.ix is None:
        plan = "forward"
    kk = min(k, n_allowed)
    docs = np.empty(kk, dtype=np.int64)
    scores = np.empty(kk, dtype=np.float32)
    acc, q_dense = _scratch(part.num_docs, n_terms)
    if plan == "forward":
        candidates = (
            np.arange(part.num_docs, dtype=np.int64) if allowed is None else np.flatnonzero(allowed)
        )
        q_dense[terms] = weights
        try:
            count = kernels.allowed_forward(
                part.fwd_ptr, part.fwd_terms, part.fwd_codes, lut, q_dense, candidates, kk,
                docs, scores,
            )  # fmt: skip
        finally:
            q_dense[terms] = 0.0
    elif allowed is None:
        count = kernels.exhaustive_one(terms, weights, kk, part.ix, lut, acc, docs, scores)
    else:
        count = kernels.allowed_taat(terms, weights, kk, part.ix, lut, allowed, acc, docs, scores)
    return docs[:count], scores[:count]


def _blockmax(
    part: Scorable,
    lut: np.ndarray | None,
    allowed: np.ndarray | None,
    terms: np.ndarray,
    weights: np.ndarray,
    k: int,
    heap_factor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Best-first block-max over a part's postings (``allowed`` applied as hits are offered)."""
    n_allowed = part.num_docs if allowed is None else int(np.count_nonzero(allowed))
    if n_allowed == 0 or terms.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    kk = min(k, n_allowed)
    docs = np.empty(kk, dtype=np.int64)
    scores = np.empty(kk, dtype=np.float32)
    mask = _EVERYONE if allowed is None else allowed
    count = kernels.blockmax_one(
        terms, weights, kk, part.ix, lut, float(heap_factor), mask, docs, scores
    )
    return docs[:count], scores[:count]
