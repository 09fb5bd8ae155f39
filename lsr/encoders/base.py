"""What every text encoder shares: its configuration, its statistics, and output pruning.

An :class:`Encoder` has two sides, ``query`` and ``document``, each a :class:`SideEncoder` that
turns texts into a :class:`~lsr.sparse.SparseBatch` over the tokenizer's vocabulary. The sides
are configured independently (:class:`SideConfig`): a SPLADE document side can pair with a
SPLADE query side (siamese) or with an IDF lookup (inference-free, no model at query time).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.sparse import SparseBatch, TermWeights
from lsr.vocab import Vocabulary


@dataclass
class EncodeStats:
    """Running totals of one side's work; ``truncated`` counts texts that lost tokens."""

    texts: int = 0
    tokens: int = 0
    chunks: int = 0
    truncated: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    def summary(self, noun: str = "texts") -> str:
        line = (
            f"{self.texts:,} {noun} in {self.seconds:.1f} s "
            f"({self.texts_per_second:,.1f} {noun}/s), {self.tokens:,} tokens"
        )
        if self.chunks > self.texts:
            line += f", {self.chunks:,} chunks"
        if self.truncated:
            line += f", {self.truncated:,} truncated"
        return line


def prune_rows(matrix: sp.csr_matrix, *, top_k: int | None, min_weight: float) -> sp.csr_matrix:
    """Keep weights above ``min_weight`` and, per row, only the ``top_k`` largest.

    Ties at the k-th weight keep the lower term ids, so the result does not depend on how the
    backend ordered its output.
    """
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    matrix.sum_duplicates()
    if min_weight > 0:
        matrix.data[matrix.data <= min_weight] = 0
    matrix.eliminate_zeros()
    if top_k is None:
        return matrix
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    keep = np.ones(data.size, dtype=bool)
    for row in range(matrix.shape[0]):
        lo, hi = indptr[row], indptr[row + 1]
        if hi - lo > top_k:
            order = np.lexsort((indices[lo:hi], -data[lo:hi]))
            keep[lo + order[top_k:]] = False
    if keep.all():
        return matrix
    data = np.where(keep, data, 0).astype(np.float32)
    pruned = sp.csr_matrix((data, indices, indptr), shape=matrix.shape)
    pruned.eliminate_zeros()
    return pruned


def prune_terms(
    terms: np.ndarray, weights: np.ndarray, *, top_k: int | None, min_weight: float
) -> TermWeights:
    """:func:`prune_rows` for one vector given as distinct term ids and weights (same rule)."""
    keep = weights > max(min_weight, 0.0)
    terms, weights = terms[keep], weights[keep]
    if top_k is not None and terms.size > top_k:
        order = np.lexsort((terms, -weights))[:top_k]
        order.sort()
        terms, weights = terms[order], weights[order]
    return TermWeights(terms, weights)


class SideEncoder(ABC):
    """One side of an encoder: texts in, a SparseBatch over ``vocab`` out."""

    vocab: Vocabulary
    config: SideConfig

    def __init__(self, vocab: Vocabulary, config: SideConfig) -> None:
        self.vocab = vocab
        self.config = config
        self.stats = EncodeStats()

    @abstractmethod
    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        """Raw weights, one row per text, before output pruning; updates ``self.stats``."""

    def encode(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        *,
        batch_size: int = 8,
        progress: bool = False,
    ) -> SparseBatch:
        """Encode ``texts`` (ids default to their positions) and apply the side's output pruning."""
        texts = list(texts)
        started = time.perf_counter()
        matrix = self._encode(texts, batch_size, progress) if texts else None
        if matrix is None:
            matrix = sp.csr_matrix((0, len(self.vocab)), dtype=np.float32)
        matrix = prune_rows(matrix, top_k=self.config.top_k, min_weight=self.config.min_weight)
        self.stats.texts += len(texts)
        self.stats.seconds += time.perf_counter() - started
        names = [str(i) for i in range(len(texts))] if ids is None else list(ids)
        return SparseBatch(names, matrix, self.vocab)

    def encode_one(self, text: str) -> TermWeights:
        """One text's vector as term ids and weights (the lean path of a single query)."""
        return self.encode([text]).row(0)


class Encoder:
    """A query side and a document side over one vocabulary (see module docstring)."""

    def __init__(
        self,
        config: EncoderConfig,
        query: SideEncoder,
        document: SideEncoder,
        origin: dict[str, Any] | None = None,
    ) -> None:
        if query.vocab != document.vocab:
            raise ValueError("query and document sides must share one vocabulary")
        self.config = config
        self.query = query
        self.document = document
        self.vocab = document.vocab
        self.origin = origin or {}  # where the model came from (see lsr.encoders.manifest)

    def encode_query(
        self, texts: Sequence[str], ids: Sequence[str] | None = None, **kwargs: Any
    ) -> SparseBatch:
        """Query vectors (sentence-transformers' verb), from the query side."""
        kwargs.setdefault("batch_size", self.config.batch_size)
        return self.query.encode(texts, ids, **kwargs)

    def encode_document(
        self, texts: Sequence[str], ids: Sequence[str] | None = None, **kwargs: Any
    ) -> SparseBatch:
        """Document vectors: the document side's :meth:`~SideEncoder.encode`."""
        kwargs.setdefault("batch_size", self.config.batch_size)
        return self.document.encode(texts, ids, **kwargs)
