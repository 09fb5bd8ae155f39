"""Validating a write before it is logged: ids, vectors (or texts to encode), dense rows, metadata.

Everything that could make an op fail to apply is checked here, before the log sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lsr.collection.config import CollectionConfig
from lsr.collection.records import Upsert
from lsr.collection.schema import Schema
from lsr.errors import InputError
from lsr.sparse import SparseBatch, csr_from_dicts
from lsr.vocab import Vocabulary

MAX_ID_BYTES = 512


def prepare_upsert(
    ids: Sequence[str],
    vectors: SparseBatch | Sequence[Mapping[str, float]] | None,
    texts: Sequence[str] | None,
    dense: Any,
    metadata: Sequence[Mapping[str, Any] | None] | None,
    *,
    vocab: Vocabulary,
    config: CollectionConfig,
    schema: Schema,
    encode_texts: Callable[[list[str], list[str]], SparseBatch],
    encode_dense: Callable[[list[str]], np.ndarray] | None,
) -> Upsert:
    """Validate an upsert completely and turn it into the op the log records.

    ``encode_texts(texts, ids)`` encodes documents when no vectors are given; ``encode_dense``
    (None: the collection has no dense model) embeds texts when no dense rows are given.
    """
    ids = check_ids(ids, unique=True)
    n = len(ids)
    if texts is not None:
        texts = list(texts)
        stored_only = vectors is not None  # texts beside vectors are stored, not encoded
        if len(texts) != n or not all(
            isinstance(t, str) or (stored_only and t is None) for t in texts
        ):
            raise InputError(f"texts must be {n} strings, one per id")
    if metadata is not None:
        metadata = list(metadata)
        if len(metadata) != n:
            raise InputError(f"{len(metadata)} metadata entries for {n} ids")
        for i, meta in enumerate(metadata):
            if meta is not None and not isinstance(meta, Mapping):
                raise InputError(f"document {i}: metadata must be an object, got {meta!r}")
    meta_list = [dict(m) if m else None for m in (metadata or [None] * n)]
    schema.extend(meta_list)  # validate now; re-checked at append
    if vectors is None or isinstance(vectors, SparseBatch):
        if vectors is None:
            if texts is None:
                raise InputError("give vectors= or texts= for the documents")
            batch = encode_texts(texts, ids)
        else:
            batch = vectors if vectors.vocab == vocab else vectors.remap(vocab)
            if len(batch) != n:
                raise InputError(f"{len(batch)} vectors for {n} ids")
        matrix = sp.csr_matrix(batch.matrix, dtype=np.float32, copy=True)
        data = matrix.data
        if data.size and (not np.all(np.isfinite(data)) or data.min() < 0):
            raise InputError("document weights must be finite and >= 0")
        matrix.eliminate_zeros()
        matrix.sort_indices()
        indptr, terms, weights = matrix.indptr, matrix.indices, matrix.data
    else:
        vectors = list(vectors)
        if len(vectors) != n:
            raise InputError(f"{len(vectors)} vectors for {n} ids")
        for i, v in enumerate(vectors):
            if not isinstance(v, Mapping):
                raise InputError(f"document {i}: a vector is {{token: weight}}, got {v!r}")
        indptr, terms, weights = csr_from_dicts(vectors, vocab)  # checked, sorted, no zeros
    if config.codec.kind == "uint8" and weights.size:
        assert config.max_weight is not None
        top = float(weights.max())
        if top > config.max_weight * (1 + 1 / 510):
            raise InputError(
                f"weight {top:g} exceeds this collection's max_weight {config.max_weight:g} (uint8)"
            )
    codes = config.codec.encode(weights)
    dense_rows = _dense_rows(dense, texts, n, config.dense_dim, encode_dense)
    return Upsert(
        list(ids),
        np.asarray(indptr, dtype=np.int64),
        np.asarray(terms, dtype=np.int32),
        codes,
        dense_rows,
        meta_list,
        list(texts) if texts is not None else [None] * n,
    )


def _dense_rows(
    dense: Any,
    texts: Sequence[str] | None,
    n: int,
    dim: int | None,
    encode_dense: Callable[[list[str]], np.ndarray] | None,
) -> np.ndarray | None:
    if dim is None:
        if dense is not None:
            raise InputError("this collection has no dense vectors (create it with dense_dim)")
        return None
    if dense is None:
        if texts is None or encode_dense is None or any(t is None for t in texts):
            raise InputError(f"this collection needs dense vectors of size {dim} per document")
        return np.asarray(encode_dense(list(texts)), dtype=np.float32)
    rows = np.asarray(dense, dtype=np.float32)
    if rows.shape != (n, dim):
        raise InputError(f"dense vectors must have shape ({n}, {dim}), got {rows.shape}")
    if not np.all(np.isfinite(rows)):
        raise InputError("dense vectors must be finite")
    return rows


def check_ids(ids: Any, *, unique: bool) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InputError("ids must be a list of strings")
    out = list(ids)
    for i, doc_id in enumerate(out):
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError(f"id {i} must be a non-empty string, got {doc_id!r}")
        if len(doc_id.encode("utf-8")) > MAX_ID_BYTES:
            raise InputError(f"id {i} is longer than {MAX_ID_BYTES} bytes")
    if unique:
        seen: set[str] = set()
        for doc_id in out:
            if doc_id in seen:
                raise InputError(f"id {doc_id!r} appears twice in one write")
            seen.add(doc_id)
    return out
