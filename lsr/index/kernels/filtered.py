"""Exact top-k restricted to an allowed set of documents (deletes and metadata filters).

Two plans, bit-identical to each other and to :func:`exhaustive_one` when every document is
allowed, provided the query's terms come in ascending term-id order (a collection's canonical
order: a document's score is then the same float32 sum in whatever segment it lives):

- :func:`allowed_taat`: term-at-a-time over every posting of the query terms, then a top-k scan
  that skips documents whose ``allowed`` byte is 0. Cost: the query's postings + one pass.
- :func:`allowed_forward`: document-at-a-time over the allowed documents only, reading each one's
  forward row (its terms ascending, with weight codes) against a dense query vector. Cost: the
  allowed documents' lengths; the cheaper plan when few documents are allowed.

Ties rank the lower document position first, as everywhere in the index.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.kernels.exhaustive import accumulate
from lsr.index.kernels.layout import OPTS, decode
from lsr.index.kernels.topk import heap_push, heap_sorted


@njit(**OPTS)
def allowed_taat(q_terms, q_weights, k, ix, lut, allowed, acc, out_docs, out_scores):
    """Top k of the documents with ``allowed[d] != 0``; ``acc`` zeroed on entry and on exit.

    The scan is :func:`exhaustive_one`'s (no branch on ``s > 0``), the mask tested after the
    threshold: rarely reached once k hits are held, so both branches predict well."""
    accumulate(q_terms, q_weights, ix, lut, acc)
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    threshold = np.float32(0.0)
    for d in range(ix.n_docs):
        s = acc[d]
        acc[d] = 0.0
        if s > threshold and allowed[d] != 0:
            size = heap_push(heap_s, heap_d, size, k, s, d)
            if size == k:
                threshold = heap_s[0]
    heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


@njit(**OPTS)
def allowed_forward(
    fwd_ptr, fwd_terms, fwd_codes, lut, q_dense, candidates, k, out_docs, out_scores
):
    """Top k of ``candidates`` (ascending positions) scored from their forward rows.

    ``q_dense[t]`` is the query's weight of term t (0 when absent); rows hold terms ascending.
    """
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    for i in range(candidates.shape[0]):
        d = candidates[i]
        s = np.float32(0.0)
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            w = q_dense[fwd_terms[p]]
            if w != 0.0:
                s += w * decode(fwd_codes, lut, p)
        if s > 0.0 and (size < k or s > heap_s[0]):
            size = heap_push(heap_s, heap_d, size, k, s, d)
    heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


@njit(**OPTS)
def postings_of(q_terms, term_post_ptr):
    """How many postings the query's terms have (the term-at-a-time plan's cost)."""
    total = 0
    for i in range(q_terms.shape[0]):
        t = q_terms[i]
        total += term_post_ptr[t + 1] - term_post_ptr[t]
    return total
