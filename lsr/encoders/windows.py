"""Cutting texts into windows (passes) and pooling window vectors back into text vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from lsr.encoders.config import SideConfig


@dataclass
class Windows:
    """Passes over the texts: token ids, which text, and the pooled position range [lo, hi)."""

    text: list[int] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    lo: list[int] = field(default_factory=list)
    hi: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def window_spans(
    n_tokens: int, width: int, stride: int | None, max_chunks: int | None
) -> tuple[list[tuple[int, int]], bool]:
    """Content spans [start, stop) of a text of ``n_tokens`` cut into windows of ``width``.

    Consecutive windows overlap by ``stride`` tokens (the last one may be shorter); ``stride``
    None keeps the first window only. Returns the spans and whether tokens were lost.
    """
    if n_tokens <= width:
        return [(0, n_tokens)], False
    if stride is None:
        return [(0, width)], True
    step = width - stride
    spans = []
    start = 0
    while True:
        spans.append((start, min(start + width, n_tokens)))
        if start + width >= n_tokens:
            break
        start += step
    if max_chunks is not None and len(spans) > max_chunks:
        return spans[:max_chunks], True
    return spans, False


def reduce_coo(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int], how: str = "max"
) -> sp.csr_matrix:
    """CSR from triplets, duplicates (row, col) combined by ``how`` (max or sum)."""
    if how == "sum" or rows.size == 0:
        out = sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float32)
        out.sum_duplicates()
        return out
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    best = np.maximum.reduceat(vals, starts)
    key = key[starts]
    return sp.csr_matrix(
        (best.astype(np.float32), (key // shape[1], key % shape[1])), shape=shape, dtype=np.float32
    )


def pool_windows(
    per_window: sp.csr_matrix, text_of: np.ndarray, n_texts: int, config: SideConfig
) -> sp.csr_matrix:
    """Window vectors -> text vectors: max or mean across a text's windows."""
    if per_window.shape[0] == n_texts and np.array_equal(text_of, np.arange(n_texts)):
        return per_window
    coo = per_window.tocoo()
    rows = text_of[coo.row]
    shape = (n_texts, per_window.shape[1])
    if config.chunk_pooling == "max":
        return reduce_coo(rows, coo.col, coo.data, shape, "max")
    summed = reduce_coo(rows, coo.col, coo.data, shape, "sum")
    counts = np.bincount(text_of, minlength=n_texts).astype(np.float32)
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(counts, 1)) @ summed, dtype=np.float32)
