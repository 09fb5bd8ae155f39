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

Scores are float32 sums taken in query-term order in every kernel, so the exhaustive scorer and
the pruned search produce bit-identical scores, and a block bound (the same sum over block
maxima) is never below any score in its block: rounding is monotone.

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
def _score_all(q_terms, q_weights, n_docs, block_size, term_entry_ptr, entry_block,
               term_post_ptr, entry_post_rel, post_offsets, post_codes, lut):
    acc = np.zeros(n_docs, dtype=np.float32)
    for i in range(q_terms.shape[0]):
        t = q_terms[i]
        w = q_weights[i]
        for e in range(term_entry_ptr[t], term_entry_ptr[t + 1]):
            base = np.int64(entry_block[e]) * block_size
            start = term_post_ptr[t] + entry_post_rel[e]
            for p in range(start, _entry_end(e, t, term_entry_ptr, term_post_ptr, entry_post_rel)):
                doc = base + post_offsets[p]
                acc[doc] += w * _decode(post_codes, lut, p)
    return acc


@njit(**_OPTS)
def exhaustive_one(q_terms, q_weights, k, n_docs, block_size, term_entry_ptr, entry_block,
                   term_post_ptr, entry_post_rel, post_offsets, post_codes, lut, out_docs, out_scores):
    """Score every posting of every query term into a dense accumulator, then select top-k."""
    acc = _score_all(q_terms, q_weights, n_docs, block_size, term_entry_ptr, entry_block,
                     term_post_ptr, entry_post_rel, post_offsets, post_codes, lut)
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    for d in range(n_docs):
        s = acc[d]
        if s > 0.0 and (size < k or s > heap_s[0]):
            size = _heap_push(heap_s, heap_d, size, k, s, d)
    _heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


# -- block-max pruned exact search ----------------------------------------------------------------
@njit(**_OPTS)
def _find_entry(entry_block, lo, hi, blk):
    """Index of the entry for block ``blk`` in entry_block[lo:hi] (sorted), or -1."""
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if entry_block[mid] < blk:
            lo = mid + 1
        else:
            hi = mid
    if lo < end and entry_block[lo] == blk:
        return lo
    return -1


@njit(**_OPTS)
def _max_heap_sift_down(keys, vals, i, size):
    while True:
        left = 2 * i + 1
        if left >= size:
            return
        child = left
        if left + 1 < size and keys[left + 1] > keys[left]:
            child = left + 1
        if keys[child] > keys[i]:
            keys[i], keys[child] = keys[child], keys[i]
            vals[i], vals[child] = vals[child], vals[i]
            i = child
        else:
            return


@njit(**_OPTS)
def pruned_one(q_terms, q_weights, k, n_blocks, block_size, term_entry_ptr, entry_block, entry_max,
               term_post_ptr, entry_post_rel, post_offsets, post_codes, lut, out_docs, out_scores):
    """Exact top-k by block-max pruning over doc-id blocks.

    1. Upper bound of every block: sum over query terms of weight × the term's block maximum.
    2. Visit blocks from the highest bound down, scoring their documents exactly, until the next
       bound is below the k-th best score found: no unvisited document can then enter the top k.
    """
    ub = np.zeros(n_blocks, dtype=np.float32)
    m = q_terms.shape[0]
    for i in range(m):
        t = q_terms[i]
        w = q_weights[i]
        for e in range(term_entry_ptr[t], term_entry_ptr[t + 1]):
            ub[entry_block[e]] += w * _decode(entry_max, lut, e)
    # max-heap of candidate blocks keyed by bound
    n_cand = 0
    for b in range(n_blocks):
        if ub[b] > 0.0:
            n_cand += 1
    keys = np.empty(n_cand, dtype=np.float32)
    blocks = np.empty(n_cand, dtype=np.int32)
    j = 0
    for b in range(n_blocks):
        if ub[b] > 0.0:
            keys[j] = ub[b]
            blocks[j] = b
            j += 1
    for i in range(n_cand // 2 - 1, -1, -1):
        _max_heap_sift_down(keys, blocks, i, n_cand)

    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    acc = np.zeros(block_size, dtype=np.float32)
    remaining = n_cand
    while remaining > 0:
        bound = keys[0]
        blk = blocks[0]
        if size == k and bound < heap_s[0]:
            break
        remaining -= 1
        keys[0] = keys[remaining]
        blocks[0] = blocks[remaining]
        _max_heap_sift_down(keys, blocks, 0, remaining)

        base = np.int64(blk) * block_size
        for i in range(m):
            t = q_terms[i]
            e = _find_entry(entry_block, term_entry_ptr[t], term_entry_ptr[t + 1], blk)
            if e < 0:
                continue
            w = q_weights[i]
            start = term_post_ptr[t] + entry_post_rel[e]
            for p in range(start, _entry_end(e, t, term_entry_ptr, term_post_ptr, entry_post_rel)):
                acc[post_offsets[p]] += w * _decode(post_codes, lut, p)
        for o in range(block_size):
            s = acc[o]
            if s > 0.0:
                acc[o] = 0.0
                size = _heap_push(heap_s, heap_d, size, k, s, np.int32(base + o))
    _heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


# -- batches (all cores) --------------------------------------------------------------------------
@njit(parallel=True, **_OPTS)
def pruned_batch(q_ptr, q_terms, q_weights, k, n_blocks, block_size, term_entry_ptr, entry_block,
                 entry_max, term_post_ptr, entry_post_rel, post_offsets, post_codes, lut, out_docs, out_scores):
    n_queries = q_ptr.shape[0] - 1
    counts = np.zeros(n_queries, dtype=np.int64)
    for qi in prange(n_queries):
        a, b = q_ptr[qi], q_ptr[qi + 1]
        counts[qi] = pruned_one(q_terms[a:b], q_weights[a:b], k, n_blocks, block_size,
                                term_entry_ptr, entry_block, entry_max, term_post_ptr, entry_post_rel,
                                post_offsets, post_codes, lut, out_docs[qi], out_scores[qi])
    return counts


@njit(parallel=True, **_OPTS)
def exhaustive_batch(q_ptr, q_terms, q_weights, k, n_docs, block_size, term_entry_ptr, entry_block,
                     term_post_ptr, entry_post_rel, post_offsets, post_codes, lut, out_docs, out_scores):
    n_queries = q_ptr.shape[0] - 1
    counts = np.zeros(n_queries, dtype=np.int64)
    for qi in prange(n_queries):
        a, b = q_ptr[qi], q_ptr[qi + 1]
        counts[qi] = exhaustive_one(q_terms[a:b], q_weights[a:b], k, n_docs, block_size,
                                    term_entry_ptr, entry_block, term_post_ptr, entry_post_rel, post_offsets,
                                    post_codes, lut, out_docs[qi], out_scores[qi])
    return counts
