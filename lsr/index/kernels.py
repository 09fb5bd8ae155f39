"""Numba kernels over plain arrays: building postings and answering top-k queries.

Posting layout (see docs/index-format.md). Documents are cut into doc-id blocks of ``block_size``
(<= 256) consecutive ids. For each term, its postings are grouped by block into *entries*:
``term_entry_ptr[t]:term_entry_ptr[t+1]`` are term t's entries, in block order; entry e covers
block ``entry_block[e]`` (uint16 when the index has at most 65,536 blocks), holds the maximum
code of its postings in ``entry_max[e]``, and its postings start at
``term_post_ptr[t] + entry_post_rel[e]`` (uint32, relative to the term) and run to the next
entry's start or the term's end. A posting stores the document's offset inside its block (uint8)
and a weight code. ``lut[code]`` decodes a code to a float32 weight;
``lut is None`` means codes are already float32 weights.

Scores are float32 sums taken in the query's term order in every kernel (the searcher puts terms
in descending order of their upper bound), so the exhaustive scorer and the pruned search produce
bit-identical scores.

Kernels receive the index as one tuple ``ix`` (built once by ``SparseIndex``): (n_docs,
n_blocks, block_size, term_entry_ptr, term_post_ptr, term_max, entry_block, entry_max,
entry_post_rel, post_offsets, post_codes).

Ranking: higher score first; equal scores rank the lower document id first. Only documents with a
positive score are returned.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = {"nogil": True, "cache": True}


@njit(inline="always", **_OPTS)
def _entry_end(e, t, term_entry_ptr, term_post_ptr, entry_post_rel):
    if e + 1 < term_entry_ptr[t + 1]:
        return term_post_ptr[t] + entry_post_rel[e + 1]
    return term_post_ptr[t + 1]


@njit(inline="always", **_OPTS)
def _decode(codes, lut, p):
    if lut is None:
        return np.float32(codes[p])
    return lut[codes[p]]


# -- top-k heap: the root is the worst kept hit ---------------------------------------------------
@njit(inline="always", **_OPTS)
def _worse(s1, d1, s2, d2):
    """True when hit (s1, d1) ranks below hit (s2, d2)."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(**_OPTS)
def _heap_push(scores, docs, size, k, s, d):
    """Offer hit (s, d) to a min-heap of at most k hits; returns the new size."""
    if size < k:
        i = size
        size += 1
        while i > 0:
            parent = (i - 1) >> 1
            if _worse(s, d, scores[parent], docs[parent]):
                scores[i] = scores[parent]
                docs[i] = docs[parent]
                i = parent
            else:
                break
        scores[i] = s
        docs[i] = d
        return size
    if not _worse(scores[0], docs[0], s, d):
        return size
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and _worse(scores[right], docs[right], scores[left], docs[left]):
            child = right
        if _worse(scores[child], docs[child], s, d):
            scores[i] = scores[child]
            docs[i] = docs[child]
            i = child
        else:
            break
    scores[i] = s
    docs[i] = d
    return size


@njit(**_OPTS)
def _heap_sorted(scores, docs, size, out_docs, out_scores):
    """Write the heap's hits best first into the output rows (padding stays as given)."""
    order = np.argsort(docs[:size], kind="mergesort")
    order = order[np.argsort(-scores[:size][order], kind="mergesort")]
    for i in range(size):
        out_docs[i] = docs[order[i]]
        out_scores[i] = scores[order[i]]


# -- building -------------------------------------------------------------------------------------
@njit(**_OPTS)
def transpose_to_term_major(indptr, terms, codes, n_terms):
    """Doc-major CSR (doc -> terms) to term-major postings (term -> docs, ascending)."""
    n_docs = indptr.shape[0] - 1
    term_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    for p in range(terms.shape[0]):
        term_ptr[terms[p] + 1] += 1
    for t in range(n_terms):
        term_ptr[t + 1] += term_ptr[t]
    cursor = term_ptr[:-1].copy()
    post_docs = np.empty(terms.shape[0], dtype=np.int32)
    post_codes = np.empty(terms.shape[0], dtype=codes.dtype)
    for d in range(n_docs):
        for p in range(indptr[d], indptr[d + 1]):
            t = terms[p]
            q = cursor[t]
            post_docs[q] = d
            post_codes[q] = codes[p]
            cursor[t] = q + 1
    return term_ptr, post_docs, post_codes


@njit(**_OPTS)
def prune_terms_top_n(term_ptr, post_docs, post_codes, top_n):
    """Keep each term's ``top_n`` highest codes (ties: lower doc id kept); returns new arrays."""
    n_terms = term_ptr.shape[0] - 1
    keep = np.ones(post_docs.shape[0], dtype=np.bool_)
    new_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        a, b = term_ptr[t], term_ptr[t + 1]
        n = b - a
        if n > top_n:
            # rank by code descending, doc ascending (postings are already doc-ascending)
            order = np.argsort(-post_codes[a:b].astype(np.float64), kind="mergesort")
            for j in range(top_n, n):
                keep[a + order[j]] = False
            n = top_n
        new_ptr[t + 1] = new_ptr[t] + n
    total = new_ptr[n_terms]
    docs = np.empty(total, dtype=post_docs.dtype)
    codes = np.empty(total, dtype=post_codes.dtype)
    q = 0
    for p in range(post_docs.shape[0]):
        if keep[p]:
            docs[q] = post_docs[p]
            codes[q] = post_codes[p]
            q += 1
    return new_ptr, docs, codes


@njit(**_OPTS)
def encode_blocks(term_ptr, post_docs, post_codes, block_size, block_dtype):
    """Group each term's postings by doc-id block: entries with block ids, maxima and offsets."""
    n_terms = term_ptr.shape[0] - 1
    term_entry_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        last = -1
        count = 0
        for p in range(term_ptr[t], term_ptr[t + 1]):
            blk = post_docs[p] // block_size
            if blk != last:
                count += 1
                last = blk
        term_entry_ptr[t + 1] = term_entry_ptr[t] + count
    n_entries = term_entry_ptr[n_terms]
    entry_block = np.empty(n_entries, dtype=block_dtype)
    entry_max = np.zeros(n_entries, dtype=post_codes.dtype)
    entry_post_rel = np.empty(n_entries, dtype=np.uint32)
    post_offsets = np.empty(post_docs.shape[0], dtype=np.uint8)
    e = -1
    for t in range(n_terms):
        last = -1
        for p in range(term_ptr[t], term_ptr[t + 1]):
            doc = post_docs[p]
            blk = doc // block_size
            if blk != last:
                e += 1
                entry_block[e] = blk
                entry_post_rel[e] = p - term_ptr[t]
                last = blk
            post_offsets[p] = doc - blk * block_size
            if post_codes[p] > entry_max[e]:
                entry_max[e] = post_codes[p]
    return term_entry_ptr, entry_block, entry_max, entry_post_rel, post_offsets


# -- exhaustive term-at-a-time (the reference scorer) ---------------------------------------------
@njit(**_OPTS)
def exhaustive_one(q_terms, q_weights, k, ix, lut, acc, out_docs, out_scores):
    """Score every posting of every query term into ``acc``, then select the top k.

    ``acc`` is a float32 accumulator over all documents that must be all zeros on entry; the
    selection scan leaves it all zeros again, so a caller can keep one per thread (a fresh 4 MB
    array per query costs a quarter of the query at a million documents).
    """
    (
        n_docs,
        _n_blocks,
        block_size,
        term_entry_ptr,
        term_post_ptr,
        _term_max,
        entry_block,
        _entry_max,
        entry_post_rel,
        post_offsets,
        post_codes,
    ) = ix
    for i in range(q_terms.shape[0]):
        t = q_terms[i]
        w = q_weights[i]
        e_end = term_entry_ptr[t + 1]
        term_start = term_post_ptr[t]
        p = term_start
        for e in range(term_entry_ptr[t], e_end):
            end = term_start + entry_post_rel[e + 1] if e + 1 < e_end else term_post_ptr[t + 1]
            base = np.int64(entry_block[e]) * block_size
            while p < end:
                acc[base + post_offsets[p]] += w * _decode(post_codes, lut, p)
                p += 1
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    for d in range(n_docs):
        s = acc[d]
        if s > 0.0:
            acc[d] = 0.0
            if size < k or s > heap_s[0]:
                size = _heap_push(heap_s, heap_d, size, k, s, d)
    _heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


# -- exact dynamic pruning: MaxScore over doc-id blocks ------------------------------------------
# Bounds are compared with a relative slack so that float rounding (sums taken in another
# association than the score itself) can never prune a document that belongs in the top k.
_SLACK = np.float32(1.0 + 1e-4)
# documents per window of the MaxScore kernel: its accumulator (4 bytes each) stays in L1
_WINDOW_DOCS = 4096


def window_blocks(block_size: int) -> int:
    """Blocks per MaxScore window: about 4k documents, a 16 KB accumulator."""
    return max(1, _WINDOW_DOCS // block_size)


@njit(**_OPTS)
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
    (
        _n_docs,
        n_blocks,
        block_size,
        term_entry_ptr,
        term_post_ptr,
        term_max,
        entry_block,
        entry_max,
        entry_post_rel,
        post_offsets,
        post_codes,
    ) = ix
    m = q_terms.shape[0]
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    if m == 0:
        return 0
    rest = np.zeros(m + 1, dtype=np.float32)  # rest[i]: summed bounds of terms i..m-1
    for i in range(m - 1, -1, -1):
        rest[i] = rest[i + 1] + q_weights[i] * _decode(term_max, lut, q_terms[i])
    cursor = np.empty(m, dtype=np.int64)
    stop = np.empty(m, dtype=np.int64)
    for i in range(m):
        cursor[i] = term_entry_ptr[q_terms[i]]
        stop[i] = term_entry_ptr[q_terms[i] + 1]
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
            if cursor[i] < stop[i] and entry_block[cursor[i]] < first:
                first = entry_block[cursor[i]]
        if first >= n_blocks:
            break
        b0 = (first // per_window) * per_window
        b1 = min(b0 + per_window, n_blocks)
        # The posting loop below is written out again for non-essential terms on purpose: a shared
        # inline="always" helper measured 1.5x slower at 1M documents.
        for i in range(n_ess):  # essential terms: every posting in the window
            t = q_terms[i]
            w = q_weights[i]
            c = cursor[i]
            while c < stop[i] and entry_block[c] < b1:
                base = (np.int64(entry_block[c]) - b0) * block_size
                start = term_post_ptr[t] + entry_post_rel[c]
                for p in range(
                    start, _entry_end(c, t, term_entry_ptr, term_post_ptr, entry_post_rel)
                ):
                    acc[base + post_offsets[p]] += w * _decode(post_codes, lut, p)
                c += 1
            cursor[i] = c
        if n_ess < m:
            for j in range(b1 - b0):
                ne_bound[j] = 0.0
            for i in range(n_ess, m):  # non-essential block maxima in the window
                w = q_weights[i]
                c = cursor[i]
                while c < stop[i] and entry_block[c] < b0:
                    c += 1
                cursor[i] = c
                while c < stop[i] and entry_block[c] < b1:
                    ne_bound[entry_block[c] - b0] += w * _decode(entry_max, lut, c)
                    c += 1
            for j in range(b1 - b0):
                live[j] = False
                for o in range(j * block_size, (j + 1) * block_size):
                    if acc[o] > 0.0 and (acc[o] + ne_bound[j]) * _SLACK >= theta:
                        live[j] = True
                        break
            for i in range(n_ess, m):  # non-essential terms: only blocks still in the race
                t = q_terms[i]
                w = q_weights[i]
                c = cursor[i]
                while c < stop[i] and entry_block[c] < b1:
                    j = entry_block[c] - b0
                    if live[j]:
                        base = np.int64(j) * block_size
                        start = term_post_ptr[t] + entry_post_rel[c]
                        for p in range(
                            start, _entry_end(c, t, term_entry_ptr, term_post_ptr, entry_post_rel)
                        ):
                            # unconditional: a document without essential terms stays below θ
                            acc[base + post_offsets[p]] += w * _decode(post_codes, lut, p)
                    c += 1
                cursor[i] = c
        doc0 = np.int64(b0) * block_size
        for j in range(b1 - b0):
            complete = n_ess == m or live[j]  # scores of a dropped block are partial: never kept
            for o in range(j * block_size, (j + 1) * block_size):
                s = acc[o]
                if s > 0.0:
                    acc[o] = 0.0
                    if complete and (size < k or s >= heap_s[0]):
                        size = _heap_push(heap_s, heap_d, size, k, s, np.int32(doc0 + o))
        if size == k:
            theta = heap_s[0]
            while n_ess > 0 and rest[n_ess - 1] * _SLACK < theta:
                n_ess -= 1
        b0 = b1
    _heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


# -- batches (all cores) --------------------------------------------------------------------------
@njit(parallel=True, **_OPTS)
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


@njit(parallel=True, **_OPTS)
def exhaustive_batch(q_ptr, q_terms, q_weights, k, ix, lut, n_chunks, out_docs, out_scores):
    """All queries, ``n_chunks`` of them at a time (one per thread), each chunk one accumulator."""
    n_queries = q_ptr.shape[0] - 1
    counts = np.zeros(n_queries, dtype=np.int64)
    n_chunks = max(1, min(n_queries, n_chunks))
    for c in prange(n_chunks):
        acc = np.zeros(ix[0], dtype=np.float32)  # ix[0]: number of documents
        for qi in range(c, n_queries, n_chunks):
            a, b = q_ptr[qi], q_ptr[qi + 1]
            counts[qi] = exhaustive_one(
                q_terms[a:b], q_weights[a:b], k, ix, lut, acc, out_docs[qi], out_scores[qi]
            )
    return counts
