"""Best-first block-max search: score doc-id blocks in descending order of their upper bound.

Each block's bound is the sum, over the query terms with postings in the block, of ``weight x``
the term's largest weight in the block (``entry_max``). Blocks are visited best bound first and
scored exactly with a block-local accumulator; the search stops at the first block whose bound
(times ``heap_factor``) falls below the k-th score held. With ``heap_factor = 1`` the hits and
their bit-exact scores equal :mod:`lsr.index.kernels.exhaustive`'s; below 1 the search stops
earlier and may miss hits (every hit returned still carries its exact score).

Pays off most when few blocks can reach the final threshold (real text: a few percent of
blocks). Where nearly every block can (SciFact, synthetic collections) it still costs no more
than exhaustive search, because most visited blocks are dropped after their first terms'
postings, at a few bookkeeping steps each (see docs/benchmarks.md).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from lsr.index.kernels.block_rows import prefetch_2d, row_start
from lsr.index.kernels.layout import OPTS, decode, entry_len
from lsr.index.kernels.topk import heap_push, heap_sorted, merge_parts


@njit(inline="always", **OPTS)
def block_key(bound, block):
    """A block's place in the visiting order as one uint64: a larger key comes first (higher
    bound, then lower block). A non-negative float32's bits order like its value."""
    bits = np.uint64(np.float32(bound).view(np.uint32))
    return (bits << np.uint64(32)) | np.uint64(0xFFFFFFFF - block)


@njit(inline="always", **OPTS)
def key_bound(key):
    """The bound a :func:`block_key` holds."""
    return np.uint32(key >> np.uint64(32)).view(np.float32)


@njit(inline="always", **OPTS)
def key_block(key):
    """The block a :func:`block_key` holds."""
    return np.int64(0xFFFFFFFF - (key & np.uint64(0xFFFFFFFF)))


@njit(inline="always", **OPTS)
def _sift_down(keys, i, n):
    """Restore the max-heap of block keys below position ``i`` (one comparison per step: a
    (bound, block) pair compared field by field mispredicts far more often)."""
    key = keys[i]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        right = child + 1
        if right < n and keys[right] > keys[child]:
            child = right
        if keys[child] > key:
            keys[i] = keys[child]
            i = child
        else:
            break
    keys[i] = key


# Blocks scored first, before any heap of blocks is built: their k-th score usually leaves
# only a few percent of the blocks worth a place in it.
N_FIRST_BLOCKS = 16

# Below this many query terms, the k-th score is first bounded from below by the first term's
# block maxima alone (see _entry_floor), and every block that can reach that floor goes into
# the heap in one scan. Longer queries reach a far higher score in their first blocks: measured
# on real text, the floor made siamese queries 1.3x slower and inference-free ones 1.15x faster.
SHORT_QUERY_TERMS = 8

_LAST_KEY = np.uint64(0xFFFFFFFFFFFFFFFF)  # after it in visiting order: every block


class BlockTable(NamedTuple):
    """The query's view of a run of doc-id blocks (column c is the run's c-th block)."""

    ub: np.ndarray  # float32[n]: upper bound of any document's score in the block
    slot: np.ndarray  # int64[m]: query term i's row in start / length; -1 - r: block row r
    start: np.ndarray  # int32[rows, n]: first posting of the row's term in the block
    length: np.ndarray  # int16[rows, n]: its postings in the block (0: none)


@njit(**OPTS)
def block_table(q_terms, q_weights, ix, lut, b0, b1):
    """Per-block upper bounds, and where each query term's postings in each block are, for the
    doc-id blocks ``b0 <= b < b1`` (column ``b - b0``).

    ``ub[b]`` adds ``w_i x decode(entry_max)`` over the query terms with an entry in block b, in
    float32 and in query order: the order in which a document's score adds ``w_i x decode(code)``
    over its subset of those terms. Each product is at most its bound (rounding is monotonic),
    float addition of non-negative numbers is monotonic in each operand, and adding a term the
    document lacks never lowers the sum, so every document's exact score is <= its block's bound
    with no slack needed. Rows are term-major: each term's entries are written in block order.
    A term's entries before ``b0`` are walked without writes (their postings still count).
    A term with a block row (:mod:`~lsr.index.kernels.block_rows`) adds ``w_i x`` its row's
    maxima instead, 0 where it has no posting (adding 0 changes no bound), and leaves its
    table row empty: its postings are found from the block row.
    """
    m = q_terms.shape[0]
    n = b1 - b0
    slot = np.empty(m, dtype=np.int64)
    n_table = 0
    for i in range(m):
        r = ix.term_row[q_terms[i]] if ix.term_row.shape[0] > 0 else -1
        if r >= 0:
            slot[i] = -1 - np.int64(r)
        else:
            slot[i] = n_table
            n_table += 1
    ub = np.zeros(n, dtype=np.float32)
    start = np.empty((n_table, n), dtype=np.int32)
    length = np.zeros((n_table, n), dtype=np.int16)
    term_entry_ptr, entry_max = ix.term_entry_ptr, ix.entry_max
    entry_gap, far_gap = ix.entry_gap, ix.far_gap
    for i in range(m):
        t = q_terms[i]
        w = q_weights[i]
        if slot[i] < 0:
            row = ix.row_max[-1 - slot[i]]
            for c in range(n):
                ub[c] += w * decode(row, lut, b0 + c)
            continue
        start_i, length_i = start[slot[i]], length[slot[i]]
        p = 0
        b = np.int64(-1)
        far = ix.term_far_ptr[t]
        e, e_end = term_entry_ptr[t], term_entry_ptr[t + 1]
        if b0 == 0 and b1 == ix.n_blocks:  # every block: the plain walk (ranged: 3-7 % slower)
            for f in range(e, e_end):
                gap = np.int64(entry_gap[f])  # written out, as in exhaustive.accumulate
                if gap == 0:
                    gap = np.int64(far_gap[far])
                    far += 1
                b += gap
                ub[b] += w * decode(entry_max, lut, f)
                start_i[b] = p
                n_e = entry_len(ix, f)
                length_i[b] = n_e
                p += n_e
            continue
        while e < e_end:  # the entries before b0: only their postings are counted
            gap = np.int64(entry_gap[e])
            if gap == 0:
                gap = np.int64(far_gap[far])
                far += 1
            b += gap
            if b >= b0:
                break
            p += entry_len(ix, e)
            e += 1
        if e < e_end and b < b1:  # entry e is the first at or after b0
            while True:
                c = b - b0
                ub[c] += w * decode(entry_max, lut, e)
                start_i[c] = p
                n_e = entry_len(ix, e)
                length_i[c] = n_e
                p += n_e
                e += 1
                if e == e_end:
                    break
                gap = np.int64(entry_gap[e])  # written out, as in exhaustive.accumulate
                if gap == 0:
                    gap = np.int64(far_gap[far])
                    far += 1
                b += gap
                if b >= b1:
                    break
    return BlockTable(ub, slot, start, length)


@njit(**OPTS)
def _first_blocks(ub, n_first, keys):
    """The keys of the ``n_first`` first blocks in visiting order with a positive bound,
    written best first into ``keys`` (sorted: a valid max-heap); returns how many."""
    s_ub = np.empty(n_first, dtype=np.float32)
    s_block = np.empty(n_first, dtype=np.int32)
    size = 0
    for b in range(ub.shape[0]):
        if ub[b] > 0.0 and (size < n_first or ub[b] >= s_ub[0]):
            # (bound, block) ranks like (score, doc): the hit heap keeps the first n_first
            size = heap_push(s_ub, s_block, size, n_first, ub[b], np.int32(b))
    h_ub = np.empty(size, dtype=np.float32)
    h_block = np.empty(size, dtype=np.int32)
    heap_sorted(s_ub, s_block, size, h_block, h_ub)
    for i in range(size):
        keys[i] = block_key(h_ub[i], h_block[i])
    return size


@njit(**OPTS)
def _entry_floor(term, weight, k, ix, lut):
    """A floor under the k-th best score of any query whose terms include ``term``: the k-th
    largest ``weight x decode(entry_max)`` over the term's blocks, 0 when it has fewer than k.

    Each entry's maximum is the weight of one document of its block, whose exact score starts
    with that product and only grows (non-negative terms), and the k entries are k blocks, so k
    distinct documents score at least the floor. Holds only when every document may be returned.
    """
    s = np.empty(k, dtype=np.float32)
    e_of = np.empty(k, dtype=np.int32)
    size = 0
    for e in range(ix.term_entry_ptr[term], ix.term_entry_ptr[term + 1]):
        v = weight * decode(ix.entry_max, lut, e)
        if size < k or v > s[0]:
            size = heap_push(s, e_of, size, k, v, np.int32(e))
    return s[0] if size == k else np.float32(0.0)


@njit(**OPTS)
def _blocks_after(ub, last_key, factor, theta, keys):
    """Heapify the keys of the blocks that come after ``last_key`` in visiting order and could
    still be visited: ``bound x factor >= theta`` (a block below it, once popped, would end the
    search; ``theta`` 0 while fewer than k hits are held). The selection writes every key and
    advances on the condition: a branch per block would mispredict on a tenth of them."""
    n = 0
    for b in range(ub.shape[0]):
        u = ub[b]
        key = block_key(u, b)
        keys[n] = key
        n += (u > 0.0) & (u * factor >= theta) & (key < last_key)
    for i in range((n >> 1) - 1, -1, -1):
        _sift_down(keys, i, n)
    return n


@njit(**OPTS)
def blockmax_one(q_terms, q_weights, k, ix, lut, heap_factor, allowed, out_docs, out_scores):
    """Top-k by best-first block-max search (exact when ``heap_factor`` is 1).

    ``allowed``: uint8 per document, 0 = never returned (deletes, filters); an empty array
    allows every document. Bounds still count the documents left out: they stay upper bounds.

    Blocks with a positive bound are visited by descending bound (ties: lower block first);
    each is scored exactly (per document, the query terms in query order: bit-identical to the
    exhaustive scorer) and its positive scores offered to the hit heap. With k hits held and θ
    the k-th score, the search stops at the first block with ``bound x heap_factor < θ``: no
    later block has a larger bound. A block whose bound equals θ can only hold a document that
    ties θ, which enters only with a lower position than the worst hit held, so such a block is
    skipped when its first document comes after that hit.

    The first :data:`N_FIRST_BLOCKS` blocks are picked by one scan; only the blocks after them
    whose bound can still reach θ then go into a heap. Inside a block, once the best partial
    score plus the bounds of the terms still to come (with a rounding margin) falls below θ,
    no document of the block can enter and the rest of its postings are not read: this never
    changes the hits, whatever ``heap_factor``.
    """
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = blockmax_range(
        q_terms, q_weights, k, ix, lut, heap_factor, allowed, 0, ix.n_blocks, heap_s, heap_d
    )
    heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size


@njit(parallel=True, **OPTS)
def blockmax_split(q_terms, q_weights, k, ix, lut, heap_factor, n_parts, out_docs, out_scores):
    """One query on ``n_parts`` threads: part j searches its run of doc-id blocks by
    :func:`blockmax_range` with its own hits, and the parts' hits are merged (every document
    allowed). Exact at ``heap_factor`` 1: each part's top k is exact and the merge keeps the
    lower document on ties, so hits and bits equal :func:`blockmax_one`'s. Below 1 each part
    stops on its own k-th score, which is lower than the whole query's: a part visits more
    blocks than it would alone and loses no more recall. No part reads another's threshold, so
    the hits do not depend on thread timing.
    """
    n_blocks = ix.n_blocks
    n_parts = max(1, min(n_parts, n_blocks))
    part_s = np.empty((n_parts, k), dtype=np.float32)
    part_d = np.empty((n_parts, k), dtype=np.int32)
    part_n = np.zeros(n_parts, dtype=np.int64)
    everyone = np.zeros(0, dtype=np.uint8)
    for j in prange(n_parts):
        b0 = n_blocks * j // n_parts
        b1 = n_blocks * (j + 1) // n_parts
        part_n[j] = blockmax_range(
            q_terms, q_weights, k, ix, lut, heap_factor, everyone, b0, b1, part_s[j], part_d[j]
        )
    return merge_parts(part_s, part_d, part_n, k, out_docs, out_scores)


@njit(**OPTS)
def blockmax_range(
    q_terms, q_weights, k, ix, lut, heap_factor, allowed, b0, b1, heap_s, heap_d
):  # fmt: skip
    """:func:`blockmax_one`'s search over the doc-id blocks ``b0 <= b < b1`` only, into the
    empty hit heap ``heap_s`` / ``heap_d`` (k slots); returns the heap's size."""
    m = q_terms.shape[0]
    if m == 0:
        return 0
    block_size = ix.block_size
    post_offsets, post_codes = ix.post_offsets, ix.post_codes
    table = block_table(q_terms, q_weights, ix, lut, b0, b1)
    slot = table.slot
    base = np.empty(m, dtype=np.int64)
    n_rows = 0
    for i in range(m):
        base[i] = ix.term_post_ptr[q_terms[i]]
        n_rows += slot[i] < 0
    masked = allowed.shape[0] > 0
    keys = np.empty(b1 - b0, dtype=np.uint64)  # a max-heap of the blocks still to visit
    floor = np.float32(0.0)
    if m < SHORT_QUERY_TERMS and not masked and b0 == 0 and b1 == ix.n_blocks:
        floor = _entry_floor(q_terms[0], q_weights[0], k, ix, lut)
    if floor > 0.0:
        # the final k-th score is >= floor: a block below it never holds a hit, and the blocks
        # at or above it hold k documents, so the search never runs out of blocks before k hits
        n = _blocks_after(table.ub, _LAST_KEY, np.float32(1.0), floor, keys)
        more = False
        last_key = np.uint64(0)
    else:
        n = _first_blocks(table.ub, N_FIRST_BLOCKS, keys)
        more = n == N_FIRST_BLOCKS  # blocks after the first ones may still need a visit
        last_key = keys[n - 1] if n > 0 else np.uint64(0)
    size = 0
    acc = np.zeros(block_size, dtype=np.float32)
    least = np.float32(np.nextafter(np.float32(0.0), np.float32(1.0)))  # smallest positive
    factor = np.float32(heap_factor)
    # a float32 sum of m + 1 non-negative terms, in any order, is within (m + 1) units of
    # rounding of the exact sum; the margin covers two such sums with room to spare
    margin = np.float32(1.0 + 4.0 * (m + 2) * 2.0**-24)
    slack = np.float32(4.0 * (m + 2) * 2.0**-24)  # see the block loop
    while True:
        if n == 0:
            if not more:
                break
            more = False
            theta = heap_s[0] if size == k else np.float32(0.0)
            n = _blocks_after(table.ub, last_key, factor, theta, keys)
            continue
        bound = key_bound(keys[0])
        c = key_block(keys[0])  # the block's column in the table
        n -= 1
        if n > 0:
            keys[0] = keys[n]
            _sift_down(keys, 0, n)
            if n_rows > 0:  # the next block's row starts: measured 1.1x on real text
                after = b0 + key_block(keys[0])
                for i in range(m):
                    if slot[i] < 0:
                        prefetch_2d(ix.row_offset, -1 - slot[i], after)
        doc0 = (b0 + c) * block_size
        if size == k:
            reach = bound * factor
            if reach < heap_s[0]:
                break
            if reach == heap_s[0] and doc0 > heap_d[0]:
                continue
        # After term i, the terms still to come add at most bound - done to any document, where
        # done is the block bound's own float32 partial sum over terms 0..i (each term's block
        # maximum is the largest weight among its postings read here, and the bound added the
        # same products in the same order); `slack` covers the rounding of bound, done and
        # their difference. Reading no other term's table entry keeps a dropped block cheap.
        dropped = False
        best = np.float32(0.0)  # the block's best partial score so far (scores only grow)
        done = np.float32(0.0)
        extra = bound * slack
        for i in range(m):
            j = slot[i]
            if j < 0:
                start = row_start(ix, -1 - j, b0 + c)
                n_i = row_start(ix, -1 - j, b0 + c + 1) - start
                start += base[i]
            else:
                n_i = np.int64(table.length[j, c])
                start = base[i] + table.start[j, c]
            if n_i == 0:
                continue
            w = q_weights[i]
            top = np.float32(0.0)
            for p in range(start, start + n_i):
                o = post_offsets[p]
                x = decode(post_codes, lut, p)
                v = acc[o] + w * x
                acc[o] = v
                best = max(best, v)
                top = max(top, x)
            done += w * top
            if size == k and (best + (bound - done) + extra) * margin < heap_s[0]:
                dropped = True
                break
        if dropped:
            acc[:] = 0.0
            continue
        # one well-predicted branch per document (see exhaustive_one): any positive score
        # until k hits are held, then scores reaching the k-th (heap_push settles ties)
        for o in range(block_size):
            s = acc[o]
            acc[o] = 0.0
            if s >= least and (not masked or allowed[doc0 + o] != 0):
                size = heap_push(heap_s, heap_d, size, k, s, np.int32(doc0 + o))
                if size == k:
                    least = heap_s[0]
    return size


@njit(parallel=True, **OPTS)
def blockmax_batch(q_ptr, q_terms, q_weights, k, ix, lut, heap_factors, out_docs, out_scores):
    """All queries in parallel, one query per thread at a time (every document allowed); query
    i stops at ``heap_factors[i]``."""
    n_queries = q_ptr.shape[0] - 1
    counts = np.zeros(n_queries, dtype=np.int64)
    everyone = np.zeros(0, dtype=np.uint8)
    for qi in prange(n_queries):
        a, b = q_ptr[qi], q_ptr[qi + 1]
        counts[qi] = blockmax_one(
            q_terms[a:b], q_weights[a:b], k, ix, lut, heap_factors[qi], everyone, out_docs[qi],
            out_scores[qi],
        )  # fmt: skip
    return counts
