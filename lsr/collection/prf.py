"""Pseudo-relevance feedback (PRF) for collection searches, a per-request option.

A first round retrieves; the top ``m`` documents are taken as relevant; their stored vectors
reshape the query; a second round retrieves with the new query (Li et al., "To Interpolate or
not to Interpolate: PRF, Dense and Sparse Retrievers", SIGIR 2022):

- sparse (Rocchio): ``q' = alpha * q + beta * mean(feedback sparse vectors)``, keeping every
  query term and at most ``expansion_terms`` new terms (highest weight, ties by term id);
- dense (Vector-PRF): ``q' = alpha * q + beta * mean(feedback dense rows)``.

In hybrid mode, ``interpolation`` says where the two legs meet: "after" (each leg's feedback
comes from its own first-round list; the legs are fused after PRF), "before" (feedback from the
fused first-round list; the answer is the second round of the one leg that carries PRF) or
"both" (feedback from the fused list; the legs are fused again after PRF). A leg without PRF
keeps its first-round list. Semantics and defaults: docs/collections.md.

Everything runs over the collection's public API (``search``, ``vectors``, ``query_vector``,
``dense_query``), so each round is exact over the snapshot it reads; a write that lands between
the rounds is seen by the second (a feedback document deleted in between is left out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lsr.collection.queries import in_term_order
from lsr.errors import InputError
from lsr.sparse import TermWeights
from lsr.types import Hit, check_k

if TYPE_CHECKING:
    from lsr.collection.collection import Collection
    from lsr.retrieval import FusionConfig

INTERPOLATIONS: tuple[str, ...] = ("after", "before", "both")
_F32_MAX = float(np.finfo(np.float32).max)


def _weight(value: object, name: str) -> float:
    """``value`` as a finite float >= 0, else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _check_mix(what: str, m: object, alpha: object, beta: object) -> None:
    check_k(m, f"{what} m (feedback documents)")
    alpha, beta = _weight(alpha, f"{what} alpha"), _weight(beta, f"{what} beta")
    if alpha == 0 and beta == 0:
        raise InputError(f"{what}: alpha and beta cannot both be 0 (the query would be empty)")


@dataclass(frozen=True)
class SparsePrf:
    """Rocchio feedback on the sparse leg: ``alpha * q + beta * mean(top-m doc vectors)``,
    the query's terms plus at most ``expansion_terms`` new ones."""

    m: int = 3
    alpha: float = 1.0
    beta: float = 0.1  # SciFact study (eval/results/prf_scifact.md): more feedback weight hurt
    expansion_terms: int = 10

    def __post_init__(self) -> None:
        _check_mix("sparse PRF", self.m, self.alpha, self.beta)
        n = self.expansion_terms
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InputError(f"sparse PRF expansion_terms must be an integer >= 0, got {n!r}")


@dataclass(frozen=True)
class DensePrf:
    """Vector-PRF on the dense leg: ``alpha * q + beta * mean(top-m doc embeddings)``."""

    m: int = 3
    alpha: float = 1.0
    beta: float = 0.25

    def __post_init__(self) -> None:
        _check_mix("dense PRF", self.m, self.alpha, self.beta)


@dataclass(frozen=True)
class PrfConfig:
    """Which legs take feedback and, in hybrid mode, where the legs are interpolated."""

    sparse: SparsePrf | None = None
    dense: DensePrf | None = None
    interpolation: Literal["after", "before", "both"] = "after"

    def __post_init__(self) -> None:
        if self.sparse is not None and not isinstance(self.sparse, SparsePrf):
            raise InputError(f"PrfConfig.sparse must be a SparsePrf, got {self.sparse!r}")
        if self.dense is not None and not isinstance(self.dense, DensePrf):
            raise InputError(f"PrfConfig.dense must be a DensePrf, got {self.dense!r}")
        if self.sparse is None and self.dense is None:
            raise InputError("a PrfConfig needs sparse=SparsePrf(...), dense=DensePrf(...) or both")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(
                f"PRF interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )

    def check_mode(self, mode: str) -> None:
        """InputError unless this config can run in a search of ``mode``."""
        if mode == "sparse" and self.dense is not None:
            raise InputError("dense PRF needs mode 'dense' or 'hybrid' (this search is 'sparse')")
        if mode == "dense" and self.sparse is not None:
            raise InputError("sparse PRF needs mode 'sparse' or 'hybrid' (this search is 'dense')")
        both = self.sparse is not None and self.dense is not None
        if mode == "hybrid" and self.interpolation == "before" and both:
            raise InputError(
                "PRF interpolation 'before' answers with the one leg that carries PRF: "
                "give sparse= or dense=, not both"
            )


# -- query updates ------------------------------------------------------------------------------
def rocchio_sparse(query: TermWeights, feedback: Sequence[Any], prf: SparsePrf) -> TermWeights:
    """Rocchio over sparse vectors: ``query`` with distinct terms, ``feedback`` the documents'
    ``DocVector``s best first. Returns the new query, terms ascending (zero weights possible).

    Sums run in float64 in feedback order, so the result depends on nothing else.
    """
    q_terms = np.asarray(query.terms, dtype=np.int64)
    q_weights = np.asarray(query.weights, dtype=np.float64)
    if not feedback:
        return TermWeights(q_terms, _as_float32(prf.alpha * q_weights, "sparse"))
    fb_terms = np.concatenate([np.asarray(d.terms, dtype=np.int64) for d in feedback])
    fb_weights = np.concatenate([np.asarray(d.weights, dtype=np.float64) for d in feedback])
    uniq, inverse = np.unique(fb_terms, return_inverse=True)
    # bincount adds in input order: feedback order, then term order within a document
    mean = np.bincount(inverse, weights=fb_weights, minlength=uniq.size) / len(feedback)
    expansion = prf.beta * mean
    in_query = np.isin(uniq, q_terms)
    new_terms, new_weights = uniq[~in_query], expansion[~in_query]
    keep = new_weights > 0
    new_terms, new_weights = new_terms[keep], new_weights[keep]
    if new_terms.size > prf.expansion_terms:
        order = np.lexsort((new_terms, -new_weights))[: prf.expansion_terms]
        new_terms, new_weights = new_terms[order], new_weights[order]
    old = prf.alpha * q_weights
    at = np.searchsorted(uniq, q_terms)
    found = at < uniq.size
    found[found] = uniq[at[found]] == q_terms[found]
    old[found] += expansion[at[found]]
    out_terms = np.concatenate([q_terms, new_terms])
    out_weights = np.concatenate([old, new_weights])
    order = np.argsort(out_terms, kind="stable")
    return TermWeights(out_terms[order], _as_float32(out_weights[order], "sparse"))


def vector_prf(query: np.ndarray, feedback: Sequence[np.ndarray], prf: DensePrf) -> np.ndarray:
    """Vector-PRF: ``alpha * query + beta * mean(feedback rows)`` (rows best first; float64 sums
    in that order), as float32."""
    out = prf.alpha * np.asarray(query, dtype=np.float64)
    if feedback:
        total = np.zeros_like(out)
        for row in feedback:
            total += np.asarray(row, dtype=np.float64)
        out = out + prf.beta * (total / len(feedback))
    return _as_float32(out, "dense")


def _as_float32(values: np.ndarray, leg: str) -> np.ndarray:
    if not np.all(np.isfinite(values)) or np.any(np.abs(values) > _F32_MAX):
        raise InputError(f"{leg} PRF: the new query's weights overflow float32")
    return values.astype(np.float32)


# -- the search ---------------------------------------------------------------------------------
def prf_search(
    collection: Collection,
    query: Any,
    k: int,
    prf: PrfConfig,
    *,
    filter: Any = None,
    mode: str = "sparse",
    dense: Any = None,
    fusion: FusionConfig | None = None,
    plan: str = "auto",
) -> list[Hit]:
    """A search with pseudo-relevance feedback (see the module docstring); ``filter`` applies to
    both rounds. Arguments as :meth:`Collection.search`."""
    if not isinstance(prf, PrfConfig):
        raise InputError(f"prf must be a PrfConfig, got {type(prf).__name__}")
    k = check_k(k)
    prf.check_mode(mode)
    if mode == "sparse":
        assert prf.sparse is not None
        depth = max(k, prf.sparse.m)
        q = _sparse_query(collection, query)
        first = _sparse_hits(collection, q, depth, filter, plan)
        return _sparse_round(collection, q, first, prf.sparse, k, filter, plan)
    if mode == "dense":
        assert prf.dense is not None
        depth = max(k, prf.dense.m)
        vec = collection.dense_query(query, dense)
        first = _dense_hits(collection, vec, depth, filter)
        return _dense_round(collection, vec, first, prf.dense, k, filter)
    if mode != "hybrid":
        raise InputError(f"mode must be one of sparse, dense, hybrid, got {mode!r}")
    return _hybrid(collection, query, k, prf, filter, dense, fusion, plan)


def _hybrid(
    collection: Collection,
    query: Any,
    k: int,
    prf: PrfConfig,
    filter: Any,
    dense: Any,
    fusion: FusionConfig | None,
    plan: str,
) -> list[Hit]:
    from lsr.fusion import fuse_hits
    from lsr.retrieval import FusionConfig

    fusion = fusion or FusionConfig()
    ms = [p.m for p in (prf.sparse, prf.dense) if p is not None]
    depth = max(k, fusion.depth, *ms)
    vec = collection.dense_query(query, dense)
    q = _sparse_query(collection, query)
    sparse_first = _sparse_hits(collection, q, depth, filter, plan)
    dense_first = _dense_hits(collection, vec, depth, filter)
    if prf.interpolation == "after":
        sparse_fb, dense_fb = sparse_first, dense_first
    else:
        fused_first = fuse_hits(sparse_first, dense_first, depth, fusion)
        sparse_fb = dense_fb = fused_first
    sparse_final, dense_final = sparse_first, dense_first
    if prf.sparse is not None:
        sparse_final = _sparse_round(collection, q, sparse_fb, prf.sparse, depth, filter, plan)
    if prf.dense is not None:
        dense_final = _dense_round(collection, vec, dense_fb, prf.dense, depth, filter)
    if prf.interpolation == "before":
        return (sparse_final if prf.sparse is not None else dense_final)[:k]
    return fuse_hits(sparse_final, dense_final, k, fusion)


def _sparse_query(collection: Collection, query: Any) -> TermWeights:
    """The query checked, zero weights dropped, terms ascending."""
    if query is None:
        raise InputError("a sparse search needs a query")
    return TermWeights(*in_term_order(collection.query_vector(query), len(collection.vocab)))


def _sparse_hits(
    collection: Collection, q: TermWeights, k: int, filter: Any, plan: str
) -> list[Hit]:
    hits = collection.search(q, k, filter=filter, mode="sparse", plan=plan)
    return [Hit(*h) for h in hits]


def _dense_hits(collection: Collection, vec: np.ndarray, k: int, filter: Any) -> list[Hit]:
    hits = collection.search(None, k, filter=filter, mode="dense", dense=vec)
    return [Hit(*h) for h in hits]


def _sparse_round(
    collection: Collection,
    q: TermWeights,
    ranked: Sequence[Hit],
    prf: SparsePrf,
    k: int,
    filter: Any,
    plan: str,
) -> list[Hit]:
    ids = [h.doc_id for h in ranked[: prf.m]]
    stored = collection.vectors(ids)
    feedback = [stored[i] for i in ids if i in stored]
    return _sparse_hits(collection, rocchio_sparse(q, feedback, prf), k, filter, plan)


def _dense_round(
    collection: Collection,
    vec: np.ndarray,
    ranked: Sequence[Hit],
    prf: DensePrf,
    k: int,
    filter: Any,
) -> list[Hit]:
    ids = [h.doc_id for h in ranked[: prf.m]]
    stored = collection.vectors(ids)
    rows = [stored[i].dense for i in ids if i in stored and stored[i].dense is not None]
    return _dense_hits(collection, vector_prf(vec, rows, prf), k, filter)
