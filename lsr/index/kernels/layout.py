"""The posting layout as the query kernels take it: one named tuple of arrays, plus its readers.

Documents are cut into doc-id blocks of ``block_size`` (<= 256) consecutive ids. For each term,
its postings are grouped by block into *entries*: ``term_entry_ptr[t]:term_entry_ptr[t+1]`` are
term t's entries, in block order. Entry e holds the maximum code of its postings in
``entry_max[e]`` and the number of its postings minus one in ``entry_count[e]`` (uint8: a block
holds at most 256 documents). Its block is stored as the gap from the term's previous entry
(the first entry's gap is its block + 1) in one byte, ``entry_gap[e]``; a gap above 255 is
stored as 0 and taken from ``far_gap``, whose values for term t are
``far_gap[term_far_ptr[t]:term_far_ptr[t+1]]`` in entry order. A term's postings are its
entries' postings back to back from ``term_post_ptr[t]``. So a kernel finds an entry's block and
postings by adding up gaps and counts while it walks the term's entries, in order (every kernel
does; :func:`next_block` takes one step). A posting stores the document's offset inside its
block (uint8) and a weight code. ``lut[code]`` decodes a code to a float32 weight (in score
units); ``lut is None`` means codes are already float32 weights. See docs/index-format.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numba import njit

OPTS = {"nogil": True, "cache": True}


class IndexArrays(NamedTuple):
    """A sparse index as the kernels read it (Numba passes it as one typed tuple)."""

    n_docs: int
    n_blocks: int
    block_size: int
    term_entry_ptr: np.ndarray  # int64[n_terms + 1]
    term_post_ptr: np.ndarray  # int64[n_terms + 1]
    term_max: np.ndarray  # code[n_terms]: each term's largest weight code
    term_far_ptr: np.ndarray  # int64[n_terms + 1]: each term's gaps in far_gap
    entry_gap: np.ndarray  # uint8[n_entries]: block - previous entry's block; 0: in far_gap
    far_gap: np.ndarray  # uint32[n_far]: the gaps above 255, in entry order
    entry_max: np.ndarray  # code[n_entries]
    entry_count: np.ndarray  # uint8[n_entries]: postings in the entry - 1
    post_offsets: np.ndarray  # uint8[n_postings]
    post_codes: np.ndarray  # code[n_postings]
    # optional block rows (lsr.index.kernels.block_rows; empty when the index has none)
    term_row: np.ndarray  # int32[n_terms] (or [0]): the term's row, -1 for none
    row_max: np.ndarray  # code[n_rows, n_blocks]: the row's block maxima (0: no posting)
    row_offset: np.ndarray  # uint16[n_rows, n_blocks + 1]: posting starts within the group
    row_base: np.ndarray  # uint32[n_rows, n_groups]: posting starts of the groups


OPTIONAL_ARRAYS = ("term_row", "row_max", "row_offset", "row_base")


def index_arrays(
    n_docs: int, n_blocks: int, block_size: int, arrays: Mapping[str, np.ndarray]
) -> IndexArrays:
    """The kernels' tuple from arrays named as the fields are; block rows absent from
    ``arrays`` become empty ones (an index without rows)."""
    code = arrays["entry_max"].dtype
    no_rows = {
        "term_row": np.zeros(0, dtype=np.int32),
        "row_max": np.zeros((0, 0), dtype=code),
        "row_offset": np.zeros((0, 0), dtype=np.uint16),
        "row_base": np.zeros((0, 0), dtype=np.uint32),
    }
    stored = IndexArrays._fields[3:]
    return IndexArrays(
        n_docs, n_blocks, block_size, *(arrays[n] if n in arrays else no_rows[n] for n in stored)
    )


@njit(inline="always", **OPTS)
def entry_len(ix, e):
    """How many postings entry ``e`` holds (1 to ``block_size``)."""
    return np.int64(ix.entry_count[e]) + 1


@njit(inline="always", **OPTS)
def first_block(ix, t):
    """The state of a walk over term ``t``'s entries before its first: (block -1, its first
    far gap)."""
    return np.int64(-1), ix.term_far_ptr[t]


@njit(inline="always", **OPTS)
def next_block(ix, e, block, far):
    """One step of an in-order walk over a term's entries: the block of entry ``e`` from the
    previous entry's ``block``, and the walk's next far gap."""
    gap = ix.entry_gap[e]
    if gap == 0:  # rare: a gap above 255 blocks
        return block + np.int64(ix.far_gap[far]), far + 1
    return block + np.int64(gap), far


@njit(inline="always", **OPTS)
def decode(codes, lut, p):
    """The weight of code ``codes[p]`` in score units."""
    if lut is None:
        return np.float32(codes[p])
    return lut[codes[p]]
