"""Exact dynamic pruning: MaxScore over windows of doc-id blocks (opt-in; see docs/benchmarks.md).

Returns the same hits with bit-identical scores as :mod:`lsr.index.kernels.exhaustive`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from lsr.index.kernels.layout import OPTS, decode, entry_len, first_block, next_block
from lsr.index.kernels.topk import heap_push, heap_sorted

# Bounds are compared with a relative slack so that float rounding (sums taken in another
# association than the score itself) can never prune a document that belongs in the top k.
_SLACK = np.float32(1.0 + 1e-4)
# documents per window of the MaxScore kernel: its accumulator (4 bytes each) stays in L1
_WINDOW_DOCS = 4096


def window_blocks(block_size: int) -> int:
    """Blocks per MaxScore window: about 4k documents, a 16 KB accumulator."""
    return max(1, _WINDOW_DOCS // block_size)


@njit(**OPTS)
def maxscore_one(q_terms, q_weights, k, ix, lut, per_window, out_docs, out_scores):
    """Exact top-k: MaxScore over windows of doc-id blocks.

    Query terms come in descending order of their upper bound (weight × term maximum): the
    canonical order, which is also the exhaustive scorer's summation order, so both give
    bit-identical scores. Documents are scored a window at a time (``per_window`` blocks; see
    :func:`window_blocks`), each term streaming its postings for the window. Once k hits
    are held with k-th score θ, the suffix of terms whose bounds sum below θ is *non-essential*:
    a document that none of the other (essential) terms match cannot enter the top k, so windows
    without essential postings are skipped, and inside a window the non-essential postings of a
    block are read only if some document there could still reach θ given its essential score
    plus the block maxima of the non-essential terms.
    """
    n_blocks, block_size = ix.n_blocks, ix.block_size
    term_entry_ptr, term_post_ptr, term_max = ix.term_entry_ptr, ix.term_post_ptr, ix.term_max
    entry_max = ix.entry_max
    post_offsets, post_codes = ix.post_offsets, ix.post_codes
    m = q_terms.shape[0]
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    if m == 0:
        return 0
    rest = np.zeros(m + 1, dtype=np.float32)  # rest[i]: summed bounds of terms i..m-1
    for i in range(m - 1, -1, -1):
        rest[i] = rest[i + 1] + q_weights[i] * decode(term_max, lut, q_terms[i])
    # each term's walk: its next entry, that entry's first posting, its block (n_blocks once
    # the term is exhausted) and the walk's next far gap
    cursor = np.empty(m, dtype=np.int64)
    post = np.empty(m, dtype=np.int64)
    blk = np.empty(m, dtype=np.int64)
    far = np.empty(m, dtype=np.int64)
    stop = np.empty(m, dtype=np.int64)
    for i in range(m):
        t = q_terms[i]
        cursor[i] = term_entry_ptr[t]
        post[i] = term_post_ptr[t]
        stop[i] = term_entry_ptr[t + 1]
        b, f = first_block(ix, t)
        if cursor[i] < stop[i]:
            b, f = next_block(ix, cursor[i], b, f)
        else:
            b = n_blocks
        blk[i] = b
        far[i] = f
    acc = np.zeros(per_window * block_size, dtype=np.float32)
    ne_bound = np.zeros(per_window, dtype=np.float32)
    live = np.zeros(per_window, dtype=np.bool_)
    n_ess = m
    theta = np.float32(0.0)
    b0 = 0
    while b0 < n_blocks:
        # jump to the next window holding an essential posting
        first = n_blocks
        for i in range(n_ess):
            first = min(first, blk[i])
        if first >= n_blocks:
            break
        b0 = (first // per_window) * per_window
        b1 = min(b0 + per_window, n_blocks)
        # The posting loop below is written out again for non-essential terms on purpose: a shared
        # inline="always" helper measured 1.5x slower at 1M documents.
        for i in range(n_ess):  # essential terms: every posting in the window
            w = q_weights[i]
            c, p, b, f = cursor[i], post[i], blk[i], far[i]
            while b < b1:
                base = (b - b0) * block_size
                end = p + entry_len(ix, c)
                while p < end:
                    acc[base + post_offsets[p]] += w * decode(post_codes, lut, p)
                    p += 1
                c += 1
                b, f = next_block(ix, c, b, f) if c < stop[i] else (n_blocks, f)
            cursor[i], post[i], blk[i], far[i] = c, p, b, f
        if n_ess < m:
            for j in range(b1 - b0):
                ne_bound[j] = 0.0
            for i in range(n_ess, m):  # non-essential block maxima in the window
                w = q_weights[i]
                c, p, b, f = cursor[i], post[i], blk[i], far[i]
                while b < b0:
                    p += entry_len(ix, c)
                    c += 1
                    b, f = next_block(ix, c, b, f) if c < stop[i] else (n_blocks, f)
                cursor[i], post[i], blk[i], far[i] = c, p, b, f
                while b < b1:  # a look ahead: the walk resumes from the stored state
                    ne_bound[b - b0] += w * decode(entry_max, lut, c)
                    c += 1
                    b, f = next_block(ix, c, b, f) if c < stop[i] else (n_blocks, f)
            for j in range(b1 - b0):
                live[j] = False
                for o in range(j * block_size, (j + 1) * block_size):
                    if acc[o] > 0.0 and (acc[o] + ne_bound[j]) * _SLACK >= theta:
                        live[j] = True
                        break
            for i in range(n_ess, m):  # non-essential terms: only blocks still in the race
                w = q_weights[i]
                c, p, b, f = cursor[i], post[i], blk[i], far[i]
                while b < b1:
                    j = b - b0
                    end = p + entry_len(ix, c)
                    if live[j]:
                        base = j * block_size
                        while p < end:
                            # unconditional: a document without essential terms stays below θ
                            acc[base + post_offsets[p]] += w * decode(post_codes, lut, p)
                            p += 1
                    p = end
                    c += 1
                    b, f = next_block(ix, c, b, f) if c < stop[i] else (n_blocks, f)
                cursor[i], post[i], blk[i], far[i] = c, p, b, f
        doc0 = np.int64(b0) * block_size
        for j in range(b1 - b0):
            complete = n_ess == m or live[j]  # scores of a dropped block are partial: never kept
            for o in range(j * block_size, (j + 1) * block_size):
                s = acc[o]
                if s > 0.0:
                    acc[o] = 0.0
                    if complete and (size < k or s >= heap_s[0]):
                        size = heap_push(heap_s, heap_d, size, k, s, np.int32(doc0 + o))
        if size == k:
            theta = heap_s[0]
            while n_ess > 0 and rest[n_ess - 1] * _SLACK < theta:
                n_ess -= 1
        b0 = b1
    heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


@njit(parallel=True, **OPTS)
def maxscore_batch(q_ptr, q_terms, q_weights, k, ix, lut, per_window, out_docs, out_scores):
    """All queries in parallel, one query per thread at a time."""
    n_queries = q_ptr.shape[0] - 1
    counts = np.zeros(n_queries, dtype=np.int64)
    for qi in prange(n_queries):
        a, b = q_ptr[qi], q_ptr[qi + 1]
        counts[qi] = maxscore_one(
            q_terms[a:b], q_weights[a:b], k, ix, lut, per_window, out_docs[qi], out_scores[qi]
        )
    return counts
