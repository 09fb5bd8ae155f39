"""One query, from its term ids to its top k, in a single compiled call.

A search on real text takes a few tens of microseconds, so the calls around it count: every call
into Numba checks its arguments' types, which costs microseconds, and a named tuple costs twice
what a plain tuple does (measured: about 3 vs 1.5 us for :class:`IndexArrays`).
:func:`search_one` takes the index arrays as a plain tuple and does the query check, the
canonical order and the search in the one call that two calls made before.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.kernels.blockmax import blockmax_one
from lsr.index.kernels.exhaustive import exhaustive_one
from lsr.index.kernels.layout import OPTS, IndexArrays
from lsr.index.kernels.maxscore import maxscore_one
from lsr.index.kernels.query import OK, canonical_query

EXHAUSTIVE, MAXSCORE, BLOCKMAX = 0, 1, 2  # the ``algorithm`` codes


@njit(**OPTS)
def search_one(
    terms, weights, term_bound, min_weight, max_terms, k, fields, lut, algorithm, heap_factor,
    exact_below, acc, per_window, out_docs, out_scores,
):  # fmt: skip
    """Top-k of one query given as raw term ids and weights: the hit count, or ``-status``
    (a :data:`lsr.index.kernels.query.PROBLEMS` key) when the query is refused.

    ``terms``, ``weights``, ``term_bound``, ``min_weight``, ``max_terms``: as
    :func:`canonical_query` takes them. ``fields``: ``tuple(IndexArrays)``. ``algorithm``: one
    of the codes above. ``heap_factor`` (blockmax) applies to queries of at least
    ``exact_below`` terms after the check; shorter ones are searched exactly. ``acc`` is
    exhaustive's zeroed accumulator, ``per_window`` maxscore's window in blocks.
    """
    status, q_terms, q_weights = canonical_query(terms, weights, term_bound, min_weight, max_terms)
    if status != OK:
        return -status
    ix = IndexArrays(*fields)
    if algorithm == EXHAUSTIVE:
        return exhaustive_one(q_terms, q_weights, k, ix, lut, acc, out_docs, out_scores)
    if algorithm == MAXSCORE:
        return maxscore_one(q_terms, q_weights, k, ix, lut, per_window, out_docs, out_scores)
    factor = heap_factor if q_terms.shape[0] >= exact_below else 1.0
    everyone = np.zeros(0, dtype=np.uint8)
    return blockmax_one(q_terms, q_weights, k, ix, lut, factor, everyone, out_docs, out_scores)
