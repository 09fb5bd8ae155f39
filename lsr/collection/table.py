"""DocTable: a set of documents in memory, sorted by external id, as segments are written.

Rows are CSR weight codes (terms ascending within a row), optional dense rows, and metadata as
typed columns. Sorting by id is what makes ties deterministic everywhere in a collection: within
any segment or buffer, a lower position is a smaller id (UTF-8 byte order = code point order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lsr.collection.schema import Columns, Schema


@dataclass(frozen=True)
class DocTable:
    """Documents sorted by id: ``indptr/terms/codes`` CSR rows, ``dense`` rows, ``columns``."""

    ids: list[str]
    indptr: np.ndarray  # int64[n + 1]
    terms: np.ndarray  # int32
    codes: np.ndarray
    dense: np.ndarray | None  # float32[n, dim]
    columns: Columns

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_rows(
        cls,
        ids: Sequence[str],
        rows: Sequence[tuple[np.ndarray, np.ndarray]],
        dense: Sequence[np.ndarray] | None,
        metadata: Sequence[dict[str, Any] | None],
        schema: Schema,
        code_dtype: np.dtype,
    ) -> DocTable:
        """A table of documents given row by row (any order; ids distinct)."""
        order = sorted(range(len(ids)), key=ids.__getitem__)
        lengths = np.fromiter((rows[i][0].shape[0] for i in order), np.int64, len(order))
        indptr = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        terms = (
            np.concatenate([rows[i][0] for i in order]).astype(np.int32, copy=False)
            if order
            else np.zeros(0, np.int32)
        )
        codes = (
            np.concatenate([rows[i][1] for i in order]).astype(code_dtype, copy=False)
            if order
            else np.zeros(0, code_dtype)
        )
        dense_rows = None
        if dense is not None:
            dense_rows = (
                np.stack([dense[i] for i in order]).astype(np.float32, copy=False)
                if order
                else np.zeros((0, 0), np.float32)
            )
        columns = Columns.from_metadata([metadata[i] for i in order], schema)
        return cls([ids[i] for i in order], indptr, terms, codes, dense_rows, columns)

    def take(self, positions: np.ndarray) -> DocTable:
        """The rows at ``positions`` (ascending keeps the id order)."""
        part = self.take_rows(positions)
        ids = [self.ids[i] for i in np.asarray(positions, dtype=np.int64).tolist()]
        return DocTable(ids, part.indptr, part.terms, part.codes, part.dense, part.columns)

    def take_rows(self, positions: np.ndarray) -> DocTable:
        """The rows at ``positions`` without their ids (for tables whose ids live elsewhere)."""
        positions = np.asarray(positions, dtype=np.int64)
        lengths = self.indptr[positions + 1] - self.indptr[positions]
        indptr = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        gather = _row_gather(self.indptr, positions, int(indptr[-1]))
        return DocTable(
            [],
            indptr,
            self.terms[gather],
            self.codes[gather],
            None if self.dense is None else self.dense[positions],
            self.columns.take(positions),
        )

    @classmethod
    def merge(cls, tables: Sequence[DocTable], schema: Schema) -> DocTable:
        """One table of all rows of ``tables`` (ids distinct across them), sorted by id."""
        ids = [i for t in tables for i in t.ids]
        offsets = np.cumsum([0] + [t.indptr[-1] for t in tables])
        indptr = np.concatenate(
            [np.zeros(1, np.int64)] + [t.indptr[1:] + offsets[j] for j, t in enumerate(tables)]
        )
        dense = None
        if tables and tables[0].dense is not None:
            dense = np.concatenate([t.dense for t in tables])
        whole = DocTable(
            ids,
            indptr,
            np.concatenate([t.terms for t in tables]),
            np.concatenate([t.codes for t in tables]),
            dense,
            Columns.concat([t.columns for t in tables], schema),
        )
        order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
        return whole.take(order)


def _row_gather(indptr: np.ndarray, positions: np.ndarray, total: int) -> np.ndarray:
    """Flat indices of the entries of rows ``positions`` of a CSR with ``indptr``, in order."""
    starts = indptr[positions]
    lengths = indptr[positions + 1] - starts
    row_of = np.repeat(np.arange(len(positions)), lengths)
    first = np.zeros(len(positions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=first[1:])
    return (starts[row_of] + np.arange(total) - first[row_of]).astype(np.int64)
