"""Hybrid fusion of runs: score normalisation, convex (weighted) combination and RRF.

Runs are ``{qid: [(docid, score), ...]}`` or ``{qid: {docid: score}}``; every function returns
``{qid: [(docid, score), ...]}`` sorted by score descending, equal scores by docid ascending.

Normalisation is per query over the documents a run returned: ``minmax`` maps them onto [0, 1]
(``(s - min) / (max - min)``; all scores equal -> 1.0), ``zscore`` to ``(s - mean) / std``
(population std; all equal -> 0.0), ``None`` keeps raw scores.

Documents missing from a run. A document that one run returned for a query and another did not
gets, in the run that missed it, that run's lowest score for the query (after normalisation;
normalisation is affine per query, so this is the same as substituting the raw minimum first).
A run with no hits at all for a query contributes 0 to every document of that query. This is
Pyserini's ``HybridSearcher`` rule (``pyserini/search/hybrid/_searcher.py``): it gives a missing
document the minimum dense or sparse score among that searcher's hits, then optionally
normalises each score as ``(s - (min + max) / 2) / (max - min)`` (min-max shifted to
[-0.5, 0.5]; the shift changes no ranking under convex weights) and fuses as
``alpha * sparse + dense``, i.e. weights ``alpha : 1`` where we use ``alpha : 1 - alpha``. Its
fallbacks differ: no hits -> min 0 / max 1, and a division by zero when all scores are equal.

RRF (Cormack et al., 2009): ``sum over runs of 1 / (k + rank)``, ranks from 1 in each run's own
order (score descending, docid ascending); a run that misses a document adds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from lsr.errors import InputError
from lsr.runs import hits_to_dict, run_to_dicts, sort_hits
from lsr.types import Hit, Ranked, RunLike, hits_to_run

if TYPE_CHECKING:
    from lsr.retrieval import FusionConfig

NORMS = ("minmax", "zscore", None)


def _normalize_one(scores: Mapping[str, float], method: str | None) -> dict[str, float]:
    if method not in NORMS:
        raise InputError(f"unknown normalisation {method!r}: use 'minmax', 'zscore' or None")
    values = list(scores.values())
    if not values or method is None:
        return dict(scores)
    if not all(math.isfinite(v) for v in values):
        raise InputError("scores must be finite to be normalised")
    if method == "minmax":
        low, high = min(values), max(values)
        if high == low:
            return dict.fromkeys(scores, 1.0)
        return {d: (s - low) / (high - low) for d, s in scores.items()}
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if std == 0:
        return dict.fromkeys(scores, 0.0)
    return {d: (s - mean) / std for d, s in scores.items()}


def _ranked(fused: Mapping[str, Mapping[str, float]], top_k: int | None) -> Ranked:
    return {q: sort_hits(hits)[:top_k] for q, hits in fused.items()}


def normalize(run: RunLike, method: str | None = "minmax") -> Ranked:
    """Each query's scores normalised on their own (see the module docstring)."""
    return _ranked({q: _normalize_one(h, method) for q, h in run_to_dicts(run).items()}, None)


def combine(
    runs: Sequence[RunLike],
    weights: Sequence[float],
    norm: str | None = "minmax",
    top_k: int | None = None,
) -> Ranked:
    """``sum_i weights[i] * normalised score in run i``; a missing document takes the run's
    lowest score for the query (0 when the run has no hits for it). Queries: the union."""
    if len(runs) != len(weights) or not runs:
        raise InputError(f"{len(runs)} runs for {len(weights)} weights")
    dicts = [run_to_dicts(r) for r in runs]
    qids = list(dict.fromkeys(q for d in dicts for q in d))
    fused: dict[str, dict[str, float]] = {}
    for q in qids:
        parts = [_normalize_one(d.get(q, {}), norm) for d in dicts]
        floors = [min(p.values()) if p else 0.0 for p in parts]
        docs = dict.fromkeys(doc for p in parts for doc in p)
        fused[q] = {
            doc: math.fsum(
                w * p.get(doc, floor) for w, p, floor in zip(weights, parts, floors, strict=True)
            )
            for doc in docs
        }
    return _ranked(fused, top_k)


def convex(
    run_a: RunLike,
    run_b: RunLike,
    alpha: float,
    norm: str | None = "minmax",
    top_k: int | None = None,
) -> Ranked:
    """``alpha * a + (1 - alpha) * b`` on normalised scores, ``0 <= alpha <= 1``."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    return combine([run_a, run_b], [alpha, 1.0 - alpha], norm, top_k)


def rrf(
    runs: Sequence[RunLike],
    k: float = 60,
    top_k: int | None = None,
    weights: Sequence[float] | None = None,
) -> Ranked:
    """Reciprocal rank fusion: ``sum_i w_i / (k + rank_i)`` with ranks from 1 in each run
    (``weights`` default to 1 each, the original formulation)."""
    if k < 0:
        raise InputError(f"the RRF constant k must be >= 0, got {k}")
    weights = [1.0] * len(runs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(runs) or any(not math.isfinite(w) or w < 0 for w in weights):
        raise InputError(f"RRF needs one finite weight >= 0 per run, got {weights}")
    fused: dict[str, dict[str, float]] = {}
    for run, weight in zip(runs, weights, strict=True):
        for q, hits in run.items():
            scores = fused.setdefault(str(q), {})
            for rank, (doc, _) in enumerate(sort_hits(hits_to_dict(hits, str(q))), start=1):
                scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return _ranked(fused, top_k)


def tune_alpha(
    qrels_train: Mapping[str, Mapping[str, int]],
    run_a_train: RunLike,
    run_b_train: RunLike,
    grid: Sequence[float] = tuple(i / 20 for i in range(21)),
    norm: str | None = "minmax",
    metric: str = "ndcg_cut_10",
) -> tuple[float, list[tuple[float, float]]]:
    """Choose ``alpha`` for :func:`convex` on *train* queries only.

    Runs are restricted to the queries in ``qrels_train`` before fusing, so test queries in the
    runs cannot influence the choice. Returns the best alpha (the first in ``grid`` order among
    equal scores) and the table ``[(alpha, mean metric), ...]`` in grid order.
    """
    from lsr.metrics import evaluate

    if not grid:
        raise InputError("empty alpha grid")
    # normalise once: the floor rule gives the same fused scores on pre-normalised runs
    a = normalize({q: h for q, h in run_a_train.items() if str(q) in qrels_train}, norm)
    b = normalize({q: h for q, h in run_b_train.items() if str(q) in qrels_train}, norm)
    table = [
        (float(alpha), evaluate(qrels_train, convex(a, b, alpha, None), [metric]).mean[metric])
        for alpha in grid
    ]
    best = max(table, key=lambda row: row[1])  # max keeps the first of equal values
    return best[0], table


def fuse_hits(sparse: list[Hit], dense: list[Hit], k: int, fusion: FusionConfig) -> list[Hit]:
    """One query's sparse and dense hits fused as ``fusion`` says, best ``k`` first."""
    runs = [
        hits_to_run(["q"], [sparse]),
        hits_to_run(["q"], [dense]),
    ]
    if fusion.method == "rrf":
        fused = rrf(runs, k=fusion.rrf_k, weights=list(fusion.rrf_weights))
    else:
        fused = convex(*runs, alpha=fusion.alpha, norm=fusion.method)
    return [Hit(doc, float(score)) for doc, score in fused.get("q", [])[:k]]
