"""One query in term ids made ready for the kernels: checked, pruned, in canonical term order.

The canonical order (descending upper bound ``weight x term maximum``, ties by term id) is the
order in which every kernel sums a document's score, so all algorithms agree to the bit. This is
the single-query twin of ``SparseIndex.prepare_queries`` (same rules), compiled so that the
glue between a query's text and its scoring costs a few microseconds.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.kernels.layout import OPTS

OK, BAD_TERM, BAD_WEIGHT, DUPLICATE_TERM = 0, 1, 2, 3
PROBLEMS = {  # status -> message ({n}: the vocabulary size)
    BAD_TERM: "query term ids must lie in [0, {n})",
    BAD_WEIGHT: "query weights must be finite and >= 0",
    DUPLICATE_TERM: "a query names a term id twice",
}


@njit(**OPTS)
def canonical_query(terms, weights, term_bound, min_weight, max_terms):
    """(status, terms int32, weights float32): status is OK or the first problem found.

    Drops weights that are 0 or below ``min_weight``; ``max_terms`` > 0 keeps the heaviest
    terms (ties: lower term id).
    """
    n = terms.shape[0]
    n_terms = term_bound.shape[0]
    by_term = np.argsort(terms, kind="mergesort")
    for i in range(n):
        t = terms[by_term[i]]
        w = weights[by_term[i]]
        if t < 0 or t >= n_terms:
            return BAD_TERM, np.empty(0, np.int32), np.empty(0, np.float32)
        if not np.isfinite(w) or w < 0:
            return BAD_WEIGHT, np.empty(0, np.int32), np.empty(0, np.float32)
        if i > 0 and t == terms[by_term[i - 1]]:
            return DUPLICATE_TERM, np.empty(0, np.int32), np.empty(0, np.float32)
    kept = np.empty(n, np.int64)  # positions into terms/weights, in term-id order
    m = 0
    for i in range(n):
        j = by_term[i]
        if weights[j] > 0 and weights[j] >= min_weight:
            kept[m] = j
            m += 1
    kept = kept[:m]
    if max_terms > 0 and m > max_terms:
        heaviest = np.argsort(-weights[kept].astype(np.float64), kind="mergesort")[:max_terms]
        kept = kept[heaviest]
        kept = kept[np.argsort(terms[kept], kind="mergesort")]  # term-id order again
        m = max_terms
    out_t = np.empty(m, np.int32)
    out_w = np.empty(m, np.float32)
    bound = np.empty(m, np.float64)
    for i in range(m):
        out_t[i] = terms[kept[i]]
        out_w[i] = weights[kept[i]]
        bound[i] = -(np.float64(out_w[i] * term_bound[out_t[i]]))
    order = np.argsort(bound, kind="mergesort")  # stable: ties keep term-id order
    return OK, out_t[order], out_w[order]
