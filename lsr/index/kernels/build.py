"""Build kernels: doc-major CSR to term-major postings, static pruning, doc-id block entries."""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.kernels.layout import OPTS


@njit(**OPTS)
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


@njit(**OPTS)
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


@njit(**OPTS)
def encode_blocks(term_ptr, post_docs, post_codes, block_size):
    """Group each term's postings by doc-id block: entries with one-byte block gaps (and the far
    gaps above 255), maxima and counts. See :mod:`lsr.index.kernels.layout`."""
    n_terms = term_ptr.shape[0] - 1
    term_entry_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    term_far_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        last = -1
        count = 0
        far = 0
        for p in range(term_ptr[t], term_ptr[t + 1]):
            blk = post_docs[p] // block_size
            if blk != last:
                count += 1
                far += blk - last > 255
                last = blk
        term_entry_ptr[t + 1] = term_entry_ptr[t] + count
        term_far_ptr[t + 1] = term_far_ptr[t] + far
    n_entries = term_entry_ptr[n_terms]
    entry_gap = np.zeros(n_entries, dtype=np.uint8)
    far_gap = np.empty(term_far_ptr[n_terms], dtype=np.uint32)
    entry_max = np.zeros(n_entries, dtype=post_codes.dtype)
    entry_count = np.zeros(n_entries, dtype=np.uint8)
    post_offsets = np.empty(post_docs.shape[0], dtype=np.uint8)
    e = -1
    f = 0
    for t in range(n_terms):
        last = -1
        for p in range(term_ptr[t], term_ptr[t + 1]):
            doc = post_docs[p]
            blk = doc // block_size
            if blk != last:
                e += 1
                gap = blk - last
                if gap > 255:
                    far_gap[f] = gap
                    f += 1
                else:
                    entry_gap[e] = gap
                last = blk
            else:
                entry_count[e] += 1  # postings - 1: a block holds at most 256 documents
            post_offsets[p] = doc - blk * block_size
            if post_codes[p] > entry_max[e]:
                entry_max[e] = post_codes[p]
    return term_entry_ptr, term_far_ptr, entry_gap, far_gap, entry_max, entry_count, post_offsets


@njit(**OPTS)
def gaps_from_blocks(term_entry_ptr, entry_block):
    """An older index's absolute entry blocks as one-byte gaps and far gaps (same layout)."""
    n_terms = term_entry_ptr.shape[0] - 1
    term_far_ptr = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        last = np.int64(-1)
        far = 0
        for e in range(term_entry_ptr[t], term_entry_ptr[t + 1]):
            far += np.int64(entry_block[e]) - last > 255
            last = np.int64(entry_block[e])
        term_far_ptr[t + 1] = term_far_ptr[t] + far
    entry_gap = np.zeros(entry_block.shape[0], dtype=np.uint8)
    far_gap = np.empty(term_far_ptr[n_terms], dtype=np.uint32)
    f = 0
    for t in range(n_terms):
        last = np.int64(-1)
        for e in range(term_entry_ptr[t], term_entry_ptr[t + 1]):
            gap = np.int64(entry_block[e]) - last
            if gap > 255:
                far_gap[f] = gap
                f += 1
            else:
                entry_gap[e] = gap
            last = np.int64(entry_block[e])
    return term_far_ptr, entry_gap, far_gap


@njit(**OPTS)
def blocks_from_gaps(term_entry_ptr, term_far_ptr, entry_gap, far_gap):
    """Every entry's block (int64), added up from the gaps: for tools and analyses; the search
    kernels add them up as they walk."""
    blocks = np.empty(entry_gap.shape[0], dtype=np.int64)
    for t in range(term_entry_ptr.shape[0] - 1):
        block = np.int64(-1)
        far = term_far_ptr[t]
        for e in range(term_entry_ptr[t], term_entry_ptr[t + 1]):
            gap = np.int64(entry_gap[e])
            if gap == 0:
                gap = np.int64(far_gap[far])
                far += 1
            block += gap
            blocks[e] = block
    return blocks
