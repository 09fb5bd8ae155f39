"""Best-first block-max search: score doc-id blocks in descending order of their upper bound.

Each block's bound is the sum, over the query terms with postings in the block, of ``weight x``
the term's largest weight in the block (``entry_max``). Blocks are visited best bound first and
scored exactly with a block-local accumulator; the search stops at the first block whose bound
(times ``heap_factor``) falls below the k-th score held. With ``heap_factor = 1`` the hits and
their bit-exact scores equal :mod:`lsr.index.kernels.exhaustive`'s; below 1 the search stops
earlier and may miss hits (every hit returned still carries its exact score).

Pays off when few blocks can reach the final threshold (real text: a few percent of blocks);
on collections where nearly every block can, it does the exhaustive work plus the bounds.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lsr.index.kernels.layout import OPTS, decode, entry_len
from lsr.index.kernels.topk import heap_push, heap_sorted


@njit(inline="always", **OPTS)
def _sift_down(ub, blocks, i, n):
    """Restore the max-heap (by bound, ties by lower block) below position ``i``."""
    u = ub[i]
    b = blocks[i]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        right = child + 1
        if right < n and (
            ub[right] > ub[child] or (ub[right] == ub[child] and blocks[right] < blocks[child])
        ):
            child = right
        if ub[child] > u or (ub[child] == u and blocks[child] < b):
            ub[i] = ub[child]
            blocks[i] = blocks[child]
            i = child
        else:
            break
    ub[i] = u
    blocks[i] = b


@njit(**OPTS)
def block_bounds(q_terms, q_weights, ix, lut):
    """Per-block upper bounds and where each query term's postings in each block are.

    Returns (``ub`` float32[n_blocks], ``start_of`` int64[n_blocks, m], ``len_of``
    int32[n_blocks, m]): query term i's postings in block b are ``start_of[b, i]`` and the
    ``len_of[b, i]`` after it (0: none).

    ``ub[b]`` adds ``w_i x decode(entry_max)`` over the query terms with an entry in block b, in
    float32 and in query order: the order in which a document's score adds ``w_i x decode(code)``
    over its subset of those terms. Each product is at most its bound (rounding is monotonic),
    float addition of non-negative numbers is monotonic in each operand, and adding a term the
    document lacks never lowers the sum, so every document's exact score is <= its block's bound
    with no slack needed.
    """
    m = q_terms.shape[0]
    ub = np.zeros(ix.n_blocks, dtype=np.float32)
    start_of = np.empty((ix.n_blocks, m), dtype=np.int64)
    len_of = np.zeros((ix.n_blocks, m), dtype=np.int32)
    term_entry_ptr, entry_block, entry_max = ix.term_entry_ptr, ix.entry_block, ix.entry_max
    for i in range(m):
        t = q_terms[i]
        w = q_weights[i]
        p = ix.term_post_ptr[t]
        for e in range(term_entry_ptr[t], term_entry_ptr[t + 1]):
            b = np.int64(entry_block[e])
            ub[b] += w * decode(entry_max, lut, e)
            start_of[b, i] = p
            n = entry_len(ix, e)
            len_of[b, i] = n
            p += n
    return ub, start_of, len_of


@njit(**OPTS)
def blockmax_one(q_terms, q_weights, k, ix, lut, heap_factor, allowed, out_docs, out_scores):
    """Top-k by best-first block-max search (exact when ``heap_factor`` is 1).

    ``allowed``: uint8 per document, 0 = never returned (deletes, filters); an empty array
    allows every document. Bounds still count the documents left out: they stay upper bounds.

    Blocks with a positive bound go into a max-heap by bound; each popped block is scored
    exactly (per document, the query terms in query order: bit-identical to the exhaustive
    scorer) and its positive scores offered to the hit heap. With k hits held and θ the k-th
    score, the search stops at the first block with ``bound x heap_factor < θ``: no later block
    has a larger bound. A block whose bound equals θ can only hold a document that ties θ, which
    enters only with a lower position than the worst hit held, so such a block is skipped when
    its first document comes after that hit.
    """
    m = q_terms.shape[0]
    if m == 0:
        return 0
    block_size = ix.block_size
    post_offsets, post_codes = ix.post_offsets, ix.post_codes
    ub, start_of, len_of = block_bounds(q_terms, q_weights, ix, lut)
    # max-heap of the blocks with a positive bound (heapify: linear; only visited blocks pop)
    n = 0
    for b in range(ix.n_blocks):
        if ub[b] > 0.0:
            n += 1
    h_ub = np.empty(n, dtype=np.float32)
    h_block = np.empty(n, dtype=np.int32)
    n = 0
    for b in range(ix.n_blocks):
        if ub[b] > 0.0:
            h_ub[n] = ub[b]
            h_block[n] = b
            n += 1
    for i in range((n >> 1) - 1, -1, -1):
        _sift_down(h_ub, h_block, i, n)
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    acc = np.zeros(block_size, dtype=np.float32)
    least = np.float32(np.nextafter(np.float32(0.0), np.float32(1.0)))  # smallest positive
    factor = np.float32(heap_factor)
    masked = allowed.shape[0] > 0
    while n > 0:
        bound = h_ub[0]
        b = np.int64(h_block[0])
        n -= 1
        if n > 0:
            h_ub[0] = h_ub[n]
            h_block[0] = h_block[n]
            _sift_down(h_ub, h_block, 0, n)
        doc0 = b * block_size
        if size == k:
            reach = bound * factor
            if reach < heap_s[0]:
                break
            if reach == heap_s[0] and doc0 > heap_d[0]:
                continue
        for i in range(m):
            w = q_weights[i]
            start = start_of[b, i]
            for p in range(start, start + len_of[b, i]):
                acc[post_offsets[p]] += w * decode(post_codes, lut, p)
        # one well-predicted branch per document (see exhaustive_one): any positive score
        # until k hits are held, then scores reaching the k-th (heap_push settles ties)
        for o in range(block_size):
            s = acc[o]
            acc[o] = 0.0
            if s >= least and (not masked or allowed[doc0 + o] != 0):
                size = heap_push(heap_s, heap_d, size, k, s, np.int32(doc0 + o))
                if size == k:
                    least = heap_s[0]
    heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


@njit(parallel=True, **OPTS)
def blockmax_batch(q_ptr, q_terms, q_weights, k, ix, lut, heap_factor, out_docs, out_scores):
    """All queries in parallel, one query per thread at a time (every document allowed)."""
    n_queries = q_ptr.shape[0] - 1
    counts = np.zeros(n_queries, dtype=np.int64)
    everyone = np.zeros(0, dtype=np.uint8)
    for qi in prange(n_queries):
        a, b = q_ptr[qi], q_ptr[qi + 1]
        counts[qi] = blockmax_one(
            q_terms[a:b], q_weights[a:b], k, ix, lut, heap_factor, everyone, out_docs[qi],
            out_scores[qi],
        )  # fmt: skip
    return counts
