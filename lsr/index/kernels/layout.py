"""The posting layout as the query kernels take it: one named tuple of arrays, plus its readers.

Documents are cut into doc-id blocks of ``block_size`` (<= 256) consecutive ids. For each term,
its postings are grouped by block into *entries*: ``term_entry_ptr[t]:term_entry_ptr[t+1]`` are
term t's entries, in block order; entry e covers block ``entry_block[e]`` (uint16 when the index
has at most 65,536 blocks), holds the maximum code of its postings in ``entry_max[e]`` and the
number of its postings minus one in ``entry_count[e]`` (uint8: a block holds at most 256
documents). A term's postings are its entries' postings back to back from ``term_post_ptr[t]``,
so a kernel finds an entry's postings by adding up the counts before it while it walks the term's
entries (every kernel walks them in order). A posting stores the document's offset inside its
block (uint8) and a weight code. ``lut[code]`` decodes a code to a float32 weight (in score
units); ``lut is None`` means codes are already float32 weights. See docs/index-format.md.
"""

from __future__ import annotations

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
    entry_block: np.ndarray  # uint16 | int32[n_entries]
    entry_max: np.ndarray  # code[n_entries]
    entry_count: np.ndarray  # uint8[n_entries]: postings in the entry - 1
    post_offsets: np.ndarray  # uint8[n_postings]
    post_codes: np.ndarray  # code[n_postings]


@njit(inline="always", **OPTS)
def entry_len(ix, e):
    """How many postings entry ``e`` holds (1 to ``block_size``)."""
    return np.int64(ix.entry_count[e]) + 1


@njit(inline="always", **OPTS)
def decode(codes, lut, p):
    """The weight of code ``codes[p]`` in score units."""
    if lut is None:
        return np.float32(codes[p])
    return lut[codes[p]]
