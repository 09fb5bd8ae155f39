"""Segment: one immutable index of a collection, with what the live layer needs beside it.

A segment directory is a sparse index (docs/index-format.md) over documents sorted by id, plus
checksummed extra arrays: forward rows (``fwd_ptr``, ``fwd_terms``, ``fwd_codes``: each document's
terms ascending with their codes, for scoring a few allowed documents directly and for merges),
metadata columns (``meta.*``) and dense rows (``dense``). Deletes never touch it: they live in the
collection's tombstones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lsr.collection.schema import Columns, Schema
from lsr.collection.scoring import Scorable
from lsr.collection.table import DocTable
from lsr.index.builder import BuildConfig, build
from lsr.index.quantization import Codec
from lsr.index.sparse_index import SparseIndex
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary


def id_keys(ids: Sequence[str]) -> np.ndarray:
    """Ids as the byte strings segments store and search (encode once, look up anywhere)."""
    return np.array([i.encode("utf-8") for i in ids], dtype=bytes)


class Segment:
    """An opened segment: its index, forward rows, metadata columns and dense rows."""

    def __init__(self, name: str, index: SparseIndex, columns: Columns) -> None:
        self.name = name
        self.index = index
        self.columns = columns
        self.ids = index.array("doc_ids")  # sorted UTF-8 bytes
        self.fwd_ptr = index.array("fwd_ptr")
        self.fwd_terms = index.array("fwd_terms")
        self.fwd_codes = index.array("fwd_codes")
        self.dense = index.array("dense") if "dense" in index.manifest["arrays"] else None
        self.num_docs = index.num_docs
        self.scorable = Scorable(
            index.kernel_arrays,
            self.fwd_ptr,
            self.fwd_terms,
            self.fwd_codes,
            self.num_docs,
            float(self.fwd_ptr[-1]) / max(1, self.num_docs),
        )

    @classmethod
    def write(
        cls,
        path: Path,
        name: str,
        table: DocTable,
        *,
        vocab: Vocabulary,
        codec: Codec,
        block_size: int,
        schema: Schema,
    ) -> Segment:
        """Write ``table`` (non-empty) as a segment at ``path`` (atomically) and open it."""
        weights = codec.decode(table.codes)
        matrix = sp.csr_matrix((weights, table.terms, table.indptr), shape=(len(table), len(vocab)))
        term_dtype = np.uint16 if len(vocab) <= np.iinfo(np.uint16).max else np.int32
        description, column_arrays = table.columns.to_arrays()
        extra = {
            "fwd_ptr": table.indptr,
            "fwd_terms": table.terms.astype(term_dtype),
            "fwd_codes": table.codes,
            **column_arrays,
        }
        if table.dense is not None:
            extra["dense"] = table.dense
        build(
            [SparseBatch(list(table.ids), matrix, vocab)],
            path,
            vocab=vocab,
            config=BuildConfig(quantization=codec.kind, block_size=block_size),
            codec=codec,
            extra_arrays=extra,
            extra_manifest={"segment": {"name": name, "columns": description}},
        )
        return cls.open(path, name, schema, verify=False, vocab=vocab)

    @classmethod
    def open(
        cls, path: Path, name: str, schema: Schema, *, verify: bool, vocab: Vocabulary | None = None
    ) -> Segment:
        """Open a segment; ``verify`` checks every file's SHA-256 (IndexFormatError if damaged)."""
        index = SparseIndex.open(path, verify=verify, vocab=vocab)
        arrays = {n: index.array(n) for n in index.manifest["arrays"] if n.startswith("meta.")}
        description = index.manifest["segment"]["columns"]
        columns = Columns.from_arrays(description, arrays, index.num_docs, schema)
        return cls(name, index, columns)

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Each id's position here, or -1 (int64); ``keys`` from :func:`id_keys`."""
        if not keys.size:
            return np.zeros(0, np.int64)
        where = np.searchsorted(self.ids, keys)
        inside = where < self.num_docs
        found = np.zeros(keys.size, dtype=bool)
        found[inside] = self.ids[where[inside]] == keys[inside]
        return np.where(found, where, -1).astype(np.int64)

    def table(self, positions: np.ndarray) -> DocTable:
        """The documents at ``positions`` (ascending) as a DocTable, for a merge."""
        positions = np.asarray(positions, dtype=np.int64)
        whole = DocTable(
            [],
            np.asarray(self.fwd_ptr),
            np.asarray(self.fwd_terms, dtype=np.int32),
            np.asarray(self.fwd_codes),
            None if self.dense is None else np.asarray(self.dense),
            self.columns,
        )
        part = whole.take_rows(positions)
        ids = [b.decode("utf-8") for b in self.ids[positions].tolist()]
        return DocTable(ids, part.indptr, part.terms, part.codes, part.dense, part.columns)

    @property
    def nbytes(self) -> int:
        return self.index.nbytes
