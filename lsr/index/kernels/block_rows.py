"""Block rows: for the terms found in most doc-id blocks, their block maxima and posting starts
as full rows over the blocks, read by position instead of walked entry by entry.

A term with row r (``term_row[t] = r``, -1 for none) stores ``row_max[r, b]``, its largest code
in block b (code 0 where it has no posting there; every code decodes to 0 there), and where its
postings in block b start: ``row_base[r, b >> ROW_GROUP_SHIFT] + row_offset[r, b]`` postings
after the term's first. ``row_offset`` (uint16) counts from the start of the block's group of
``1 << ROW_GROUP_SHIFT`` blocks, which holds at most 128 x 256 postings of one term; column
``n_blocks`` ends the last block. The term's entries stay in the index, so every other kernel
is unchanged; blockmax bounds blocks from the rows (one pass of additions over a row, no gap
walk, no per-block writes) and finds a visited block's postings in O(1).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from lsr.index.kernels.layout import OPTS, entry_len, first_block, next_block

ROW_GROUP_SHIFT = 7


@njit(**OPTS)
def block_rows(ix, min_entries):
    """(term_row, row_max, row_offset, row_base) of index ``ix`` for the terms with at least
    ``min_entries`` entries (``min_entries`` > 0), rows in term order."""
    n_terms = ix.term_entry_ptr.shape[0] - 1
    n_blocks = ix.n_blocks
    term_row = np.full(n_terms, -1, dtype=np.int32)
    n_rows = 0
    for t in range(n_terms):
        if ix.term_entry_ptr[t + 1] - ix.term_entry_ptr[t] >= min_entries:
            term_row[t] = n_rows
            n_rows += 1
    row_max = np.zeros((n_rows, n_blocks), dtype=ix.entry_max.dtype)
    row_offset = np.zeros((n_rows, n_blocks + 1), dtype=np.uint16)
    row_base = np.zeros((n_rows, (n_blocks >> ROW_GROUP_SHIFT) + 1), dtype=np.uint32)
    counts = np.zeros(n_blocks, dtype=np.int64)
    for t in range(n_terms):
        r = term_row[t]
        if r < 0:
            continue
        counts[:] = 0
        b, far = first_block(ix, t)
        for e in range(ix.term_entry_ptr[t], ix.term_entry_ptr[t + 1]):
            b, far = next_block(ix, e, b, far)
            row_max[r, b] = ix.entry_max[e]
            counts[b] = entry_len(ix, e)
        start = np.int64(0)
        for b in range(n_blocks + 1):
            g = b >> ROW_GROUP_SHIFT
            if b & ((1 << ROW_GROUP_SHIFT) - 1) == 0:
                row_base[r, g] = start
            row_offset[r, b] = start - np.int64(row_base[r, g])
            if b < n_blocks:
                start += counts[b]
    return term_row, row_max, row_offset, row_base


@njit(inline="always", **OPTS)
def row_start(ix, r, b):
    """Where row r's term has its postings of block b (``b == n_blocks``: its end), counted
    from the term's first posting."""
    return np.int64(ix.row_base[r, b >> ROW_GROUP_SHIFT]) + np.int64(ix.row_offset[r, b])


def _prefetch_codegen(context, builder, sig, args):
    array_type = sig.args[0]
    view = context.make_array(array_type)(context, builder, args[0])
    pointer = cgutils.get_item_pointer(
        context, builder, array_type, view, list(args[1:]), wraparound=False
    )
    i32 = ir.IntType(32)
    fn_type = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0")
    read, keep_everywhere, data = (ir.Constant(i32, v) for v in (0, 3, 1))
    builder.call(fn, [builder.bitcast(pointer, cgutils.voidptr_t), read, keep_everywhere, data])
    return context.get_dummy_value()


@intrinsic
def prefetch_2d(typingctx, array, i, j):
    """Hint the CPU to fetch ``array[i, j]`` into cache (LLVM's prefetch); no effect on
    results."""
    return types.void(array, i, j), _prefetch_codegen


def rows_entry_floor(n_blocks: int, share: float) -> int:
    """The entry count from which a term gets a row: ``share`` of the blocks, at least one."""
    return max(1, int(np.ceil(share * n_blocks)))
