"""Document-id reordering by recursive graph bisection (BP, Dhulipala et al., KDD 2016).

Documents that share terms are moved next to each other, so each term's postings fall into fewer
doc-id blocks: fewer block entries (a smaller index) and tighter block maxima (more skipping).

The doc range is halved recursively. For each split, a few rounds of: count each term's documents
in the left and right halves, give every document the drop in the log-gap cost that moving it to
the other half would bring (the cost of a term with degree d in a half of n documents is
d * log2(n / (d + 1))), sort each half by that gain and swap pairs while their summed gain is
positive. The halves are then split in turn until they reach ``min_partition`` documents.

Deterministic: every partition is worked on its own, in a fixed order of documents, so the
result does not depend on the thread count or timing.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from tqdm.auto import tqdm

OPTS = {"nogil": True, "cache": True}
_BIG = 1 << 14  # partitions at least this large use the doc-parallel gain kernel


@njit(inline="always", **OPTS)
def _cost(deg, n):
    """Log-gap cost of a term with ``deg`` documents in a partition of ``n``."""
    return deg * np.log2(n / (deg + 1.0))


@njit(**OPTS)
def _term_gains(fwd_ptr, fwd_terms, perm, a, b, n_l, n_r, deg_l, deg_r, g_l, g_r):
    """Degrees of the split [a, a+n_l) | [a+n_l, b) and each touched term's move gains."""
    m = a + n_l
    for i in range(a, b):
        d = perm[i]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            if i < m:
                deg_l[fwd_terms[p]] += 1
            else:
                deg_r[fwd_terms[p]] += 1
    for i in range(a, b):
        d = perm[i]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            t = fwd_terms[p]
            if g_l[t] == np.inf:  # not yet computed this round
                dl, dr = deg_l[t], deg_r[t]
                before = _cost(dl, n_l) + _cost(dr, n_r)
                # left -> right: dl - 1 on the left, dr + 1 on the right (and the reverse)
                g_l[t] = before - _cost(dl - 1, n_l) - _cost(dr + 1, n_r) if dl > 0 else 0.0
                g_r[t] = before - _cost(dl + 1, n_l) - _cost(dr - 1, n_r) if dr > 0 else 0.0


@njit(**OPTS)
def _reset(fwd_ptr, fwd_terms, perm, a, b, deg_l, deg_r, g_l, g_r):
    """Zero the scratch entries of the terms of perm[a:b]."""
    for i in range(a, b):
        d = perm[i]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            t = fwd_terms[p]
            deg_l[t] = 0
            deg_r[t] = 0
            g_l[t] = np.inf
            g_r[t] = np.inf


@njit(inline="always", **OPTS)
def _doc_gain(fwd_ptr, fwd_terms, perm, i, m, g_l, g_r):
    """The gain of moving the document at position i to the other half of the split at m."""
    d = perm[i]
    g = 0.0
    table = g_l if i < m else g_r
    for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
        g += table[fwd_terms[p]]
    return g


@njit(**OPTS)
def _doc_gains_serial(fwd_ptr, fwd_terms, perm, a, m, b, g_l, g_r, gains):
    for i in range(a, b):
        gains[i - a] = _doc_gain(fwd_ptr, fwd_terms, perm, i, m, g_l, g_r)


@njit(parallel=True, **OPTS)
def _doc_gains_parallel(fwd_ptr, fwd_terms, perm, a, m, b, g_l, g_r, gains):
    for i in prange(a, b):
        gains[i - a] = _doc_gain(fwd_ptr, fwd_terms, perm, i, m, g_l, g_r)


@njit(**OPTS)
def _swap_round(perm, a, m, b, gains):
    """Swap the best-gain pairs across the split while their summed gain is positive."""
    n_l = m - a
    # stable sorts keep ties in position order: deterministic
    left = np.argsort(-gains[:n_l], kind="mergesort")
    right = np.argsort(-gains[n_l : b - a], kind="mergesort")
    lsave = perm[a:m].copy()
    rsave = perm[m:b].copy()
    swaps = 0
    for k in range(min(n_l, b - m)):
        if gains[left[k]] + gains[n_l + right[k]] <= 0.0:
            break
        perm[a + left[k]] = rsave[right[k]]
        perm[m + right[k]] = lsave[left[k]]
        swaps += 1
    return swaps


@njit(**OPTS)
def _bisect(fwd_ptr, fwd_terms, perm, a, m, b, iterations, deg_l, deg_r, g_l, g_r, parallel):
    """Improve the split of perm[a:b] at m in place; scratch comes back clean."""
    n_l = m - a
    n_r = b - m
    gains = np.empty(b - a, dtype=np.float64)
    for _ in range(iterations):
        _term_gains(fwd_ptr, fwd_terms, perm, a, b, n_l, n_r, deg_l, deg_r, g_l, g_r)
        if parallel:
            _doc_gains_parallel(fwd_ptr, fwd_terms, perm, a, m, b, g_l, g_r, gains)
        else:
            _doc_gains_serial(fwd_ptr, fwd_terms, perm, a, m, b, g_l, g_r, gains)
        _reset(fwd_ptr, fwd_terms, perm, a, b, deg_l, deg_r, g_l, g_r)
        if _swap_round(perm, a, m, b, gains) == 0:
            break


@njit(**OPTS)
def _scratch(n_terms):
    g_l = np.full(n_terms, np.inf)
    return np.zeros(n_terms, np.int32), np.zeros(n_terms, np.int32), g_l, g_l.copy()


@njit(**OPTS)
def _bisect_big(fwd_ptr, fwd_terms, perm, starts, mids, ends, iterations, n_terms):
    """One level of large partitions, one after the other (documents in parallel)."""
    deg_l, deg_r, g_l, g_r = _scratch(n_terms)
    for k in range(starts.shape[0]):
        _bisect(fwd_ptr, fwd_terms, perm, starts[k], mids[k], ends[k], iterations,
                deg_l, deg_r, g_l, g_r, True)  # fmt: skip


@njit(parallel=True, **OPTS)
def _bisect_many(fwd_ptr, fwd_terms, perm, starts, mids, ends, iterations, n_terms, n_chunks):
    """One level of small partitions, spread over ``n_chunks`` workers with their own scratch."""
    for c in prange(n_chunks):
        deg_l, deg_r, g_l, g_r = _scratch(n_terms)
        for k in range(c, starts.shape[0], n_chunks):
            _bisect(fwd_ptr, fwd_terms, perm, starts[k], mids[k], ends[k], iterations,
                    deg_l, deg_r, g_l, g_r, False)  # fmt: skip


def _middle(a: int, b: int, align: int) -> int:
    """Where to split [a, b): the middle, moved to the nearest multiple of ``align`` inside."""
    m = a + (b - a) // 2
    if align > 1:
        snapped = (m + align // 2) // align * align
        if a < snapped < b:
            return snapped
    return m


def bp_order(
    indptr: np.ndarray,
    terms: np.ndarray,
    n_terms: int,
    *,
    depth: int | None = None,
    iterations: int = 20,
    min_partition: int = 16,
    align: int = 1,
    progress: bool = False,
) -> np.ndarray:
    """BP order of a doc-major CSR: ``order[new_position] = old_doc`` (int64 permutation).

    ``depth`` caps the number of halvings (default: until partitions have ``min_partition``
    documents or fewer); ``iterations`` caps the swap rounds per split. ``align``: split at the
    multiple of ``align`` nearest the middle where one lies inside the range (pass the index's
    block size, so partitions coincide with doc-id blocks). The starting order is the input
    order, so the result is fixed by the input.
    """
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    terms = np.ascontiguousarray(terms)
    n_docs = len(indptr) - 1
    perm = np.arange(n_docs, dtype=np.int64)
    if n_docs <= max(1, min_partition) or iterations <= 0:
        return perm
    estimate = int(np.ceil(np.log2(n_docs / max(1, min_partition))))
    depth = n_docs if depth is None else depth
    n_chunks = max(1, 4 * numba.get_num_threads())
    bounds = [(0, n_docs)]
    bar = tqdm(total=min(estimate, depth), desc="bp reorder", unit="level", disable=not progress)
    for _ in range(depth):
        split = [(a, b) for a, b in bounds if b - a > max(1, min_partition)]
        if not split:
            break
        parts = np.array([(a, _middle(a, b, align), b) for a, b in split], dtype=np.int64)
        big = np.ascontiguousarray(parts[parts[:, 2] - parts[:, 0] >= _BIG].T)
        small = np.ascontiguousarray(parts[parts[:, 2] - parts[:, 0] < _BIG].T)
        if big.shape[1]:
            _bisect_big(indptr, terms, perm, big[0], big[1], big[2], iterations, n_terms)
        if small.shape[1]:
            _bisect_many(indptr, terms, perm, small[0], small[1], small[2], iterations,
                         n_terms, n_chunks)  # fmt: skip
        bounds = [(a, m) for a, m, _ in parts] + [(m, b) for _, m, b in parts]
        bar.update()
    bar.close()
    return perm


@njit(**OPTS)
def _gather_rows(indptr, terms, codes, order, new_ptr, new_terms, new_codes):
    for i in range(order.shape[0]):
        a, b = indptr[order[i]], indptr[order[i] + 1]
        q = new_ptr[i]
        new_terms[q : q + b - a] = terms[a:b]
        new_codes[q : q + b - a] = codes[a:b]


def permute_rows(
    indptr: np.ndarray, terms: np.ndarray, codes: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The doc-major CSR with its rows in ``order`` (row i of the result is row order[i])."""
    new_ptr = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(np.diff(indptr)[order], out=new_ptr[1:])
    new_terms, new_codes = np.empty_like(terms), np.empty_like(codes)
    _gather_rows(indptr, terms, codes, order, new_ptr, new_terms, new_codes)
    return new_ptr, new_terms, new_codes
