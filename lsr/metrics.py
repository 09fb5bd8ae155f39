"""Retrieval quality (nDCG, recall, MRR via pytrec_eval), FLOPS and latency statistics.

Metric names follow pytrec_eval: ``ndcg_cut_K``, ``recall_K``, ``P_K``, ``map_cut_K``, plus
``mrr_K``. Each is computed per query by pytrec_eval (``trec_eval`` semantics: a document is
relevant when its grade is >= 1; ties in score are ranked by docid *descending*, whatever order
the run lists them in). ``mrr_K`` is pytrec_eval's ``recip_rank`` on the run cut to its top K in
that same order, so it is 1/rank of the first relevant document in the top K, else 0; this equals
BEIR's ``mrr`` (``beir.retrieval.custom_metrics``) except that BEIR breaks score ties by list
order.

Means. ``evaluate`` averages over every query in the qrels that has at least one relevant
document; such a query with no results in the run scores 0 on every metric, and queries in the
run without judgements are ignored. (BEIR divides nDCG/recall by the number of queries present
in *both* run and qrels, which rewards returning nothing for hard queries, and MRR by all qrels
queries; for a run covering every query all three definitions agree.) Queries whose judgements
are all 0 are left out of the mean and of ``per_query``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError
from lsr.runs import run_to_dicts
from lsr.sparse import SparseBatch
from lsr.types import RunLike

DEFAULT_METRICS = ("ndcg_cut_10", "recall_100", "mrr_10")
_NAME = re.compile(r"^(ndcg_cut|recall|P|map_cut|mrr)_(\d+)$")


@dataclass
class Evaluation:
    """Mean and per-query values of each metric, over ``n_queries`` judged queries."""

    mean: dict[str, float]
    per_query: dict[str, dict[str, float]]
    n_queries: int


def _parse(metrics: Iterable[str]) -> list[tuple[str, str, int]]:
    parsed = []
    for name in metrics:
        match = _NAME.match(name)
        if not match or int(match.group(2)) < 1:
            raise InputError(
                f"unknown metric {name!r}: use ndcg_cut_K, recall_K, P_K, map_cut_K or mrr_K"
            )
        parsed.append((name, match.group(1), int(match.group(2))))
    return parsed


def _top(hits: Mapping[str, float], k: int) -> dict[str, float]:
    """The first k hits in trec_eval's order: score descending, then docid descending."""
    if len(hits) <= k:
        return dict(hits)
    ranked = sorted(hits.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(ranked[:k])


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: RunLike,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> Evaluation:
    """Evaluate ``run`` against ``qrels`` (see the module docstring for definitions and means)."""
    import pytrec_eval

    parsed = _parse(metrics)
    judged = {
        str(q): {str(d): int(r) for d, r in rels.items()}
        for q, rels in qrels.items()
        if any(int(r) > 0 for r in rels.values())
    }
    scores = {q: h for q, h in run_to_dicts(run).items() if q in judged}
    per_query = {q: dict.fromkeys(metrics, 0.0) for q in judged}
    trec = sorted({f"{kind}.{k}" for _, kind, k in parsed if kind != "mrr"})
    if trec and scores:
        values = pytrec_eval.RelevanceEvaluator(judged, set(trec)).evaluate(scores)
        for q, row in values.items():
            for name, kind, k in parsed:
                if kind != "mrr":
                    per_query[q][name] = float(row[f"{kind}_{k}"])
    for name, _, k in (p for p in parsed if p[1] == "mrr"):
        if not scores:
            break
        cut = {q: _top(h, k) for q, h in scores.items()}
        values = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(cut)
        for q, row in values.items():
            per_query[q][name] = float(row["recip_rank"])
    n = len(judged)
    mean = {name: (sum(v[name] for v in per_query.values()) / n if n else 0.0) for name in metrics}
    return Evaluation(mean, per_query, n)


# -- FLOPS ---------------------------------------------------------------------------------------
def _matrix(x: SparseBatch | sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    return x.matrix if isinstance(x, SparseBatch) else sp.csr_matrix(x)


def _nonzero_fraction(m: sp.csr_matrix) -> np.ndarray:
    """Per column, the fraction of rows with a nonzero entry (explicit zeros do not count)."""
    m = sp.csr_matrix(m)
    nz = m.data != 0
    counts = np.bincount(m.indices[nz], minlength=m.shape[1]).astype(np.float64)
    return counts / max(m.shape[0], 1)


def flops(
    queries: SparseBatch | sp.spmatrix | sp.sparray, docs: SparseBatch | sp.spmatrix | sp.sparray
) -> float:
    """Expected multiplications per query-document pair (Formal et al., 2021):
    ``sum_j p_q(j) * p_d(j)``, with ``p_q(j)``/``p_d(j)`` the fraction of queries/documents in
    which term ``j`` is nonzero. Both inputs must use the same term ids (columns)."""
    both = isinstance(queries, SparseBatch) and isinstance(docs, SparseBatch)
    if both and queries.vocab != docs.vocab:
        raise InputError("queries and documents use different vocabularies")
    q, d = _matrix(queries), _matrix(docs)
    if q.shape[1] != d.shape[1]:
        raise InputError(f"queries have {q.shape[1]} term columns, documents {d.shape[1]}")
    return float(_nonzero_fraction(q) @ _nonzero_fraction(d))


def flops_from_df(
    queries: SparseBatch | sp.spmatrix | sp.sparray, df: np.ndarray, n_docs: int
) -> float:
    """:func:`flops` from per-term document frequencies (an index's posting counts, e.g.
    ``np.diff(term_post_ptr)``) instead of the document matrix. ``df`` may be shorter than the
    query vocabulary (missing terms have df 0), never longer."""
    q = _matrix(queries)
    df = np.asarray(df, dtype=np.float64).ravel()
    if n_docs <= 0:
        raise InputError(f"n_docs must be positive, got {n_docs}")
    if df.size > q.shape[1]:
        raise InputError(f"df has {df.size} terms, the queries only {q.shape[1]} columns")
    if df.size and (df.min() < 0 or df.max() > n_docs):
        raise InputError(f"document frequencies must lie in [0, {n_docs}]")
    p_q = _nonzero_fraction(q)[: df.size]
    return float(p_q @ (df / n_docs))


# -- latency -------------------------------------------------------------------------------------
def latency_stats(seconds: Iterable[float]) -> dict[str, float]:
    """Mean, median, 95th and 99th percentile (linear interpolation) and max, in milliseconds."""
    ms = np.asarray(list(seconds), dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise InputError("no latencies to summarise")
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "n": float(ms.size),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
    }
