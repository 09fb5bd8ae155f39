"""Numba kernels over plain arrays, one job per module.

``layout``: the index as kernels take it (:class:`IndexArrays`); ``block_rows``: optional
full rows over the blocks for the commonest terms; ``topk``: the hit heap;
``build``: postings from CSR; ``query``: one query checked and put in canonical order;
``exhaustive`` and ``maxscore``: the two exact query algorithms; ``blockmax``: best-first
block-max search (exact by default, approximate with ``heap_factor`` < 1); ``one_query``: one
query checked, ordered and searched in a single call; ``filtered``: exact top-k over an allowed
set of documents (deletes, metadata filters); ``dense``: row-by-row inner products whose bits do
not depend on the batch.
"""

from lsr.index.kernels.block_rows import ROW_GROUP_SHIFT, block_rows, rows_entry_floor
from lsr.index.kernels.blockmax import blockmax_batch, blockmax_one, blockmax_split
from lsr.index.kernels.build import (
    blocks_from_gaps,
    encode_blocks,
    gaps_from_blocks,
    prune_terms_top_n,
    transpose_to_term_major,
)
from lsr.index.kernels.dense import row_dots
from lsr.index.kernels.exhaustive import exhaustive_batch, exhaustive_one, exhaustive_split
from lsr.index.kernels.filtered import allowed_forward, allowed_taat, postings_of
from lsr.index.kernels.layout import OPTIONAL_ARRAYS, IndexArrays, index_arrays
from lsr.index.kernels.maxscore import maxscore_batch, maxscore_one, window_blocks
from lsr.index.kernels.one_query import search_one
from lsr.index.kernels.query import canonical_query

__all__ = [
    "OPTIONAL_ARRAYS",
    "ROW_GROUP_SHIFT",
    "IndexArrays",
    "allowed_forward",
    "allowed_taat",
    "block_rows",
    "blockmax_batch",
    "blockmax_one",
    "blockmax_split",
    "blocks_from_gaps",
    "canonical_query",
    "encode_blocks",
    "exhaustive_batch",
    "exhaustive_one",
    "exhaustive_split",
    "gaps_from_blocks",
    "index_arrays",
    "maxscore_batch",
    "maxscore_one",
    "postings_of",
    "prune_terms_top_n",
    "row_dots",
    "rows_entry_floor",
    "search_one",
    "transpose_to_term_major",
    "window_blocks",
]
