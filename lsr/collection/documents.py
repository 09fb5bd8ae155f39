"""Document files for a collection: JSONL(.gz) rows read, checked and batched for upserts.

A row is ``{"id": ..., "text": ..., "vector": {token: weight}, "dense": [...], "metadata": {...}}``
(``_id`` and ``title`` as in BEIR corpora are accepted too; ``title`` is joined before ``text``).
Which fields are needed depends on the collection: vectors, or text for its model. The whole
file is checked before the first write (:func:`check_documents`), so a bad line stops nothing
half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsr.collection.schema import Schema
from lsr.errors import InputError
from lsr.io import iter_json_objects


@dataclass(frozen=True)
class DocumentRow:
    """One document line of a file."""

    id: str
    text: str | None
    vector: dict[str, float] | None
    dense: list[float] | None
    metadata: dict[str, Any] | None


def read_documents(path: str | Path) -> Iterator[tuple[int, DocumentRow]]:
    """(line number, row) for every document line; shape errors name the file and line."""
    known = {"id", "_id", "text", "title", "vector", "dense", "metadata"}
    for lineno, record in iter_json_objects(path, what="a JSON object per document"):
        unknown = sorted(set(record) - known)
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(unknown)}", path, lineno)
        doc_id = record.get("id", record.get("_id"))
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError("needs a non-empty string 'id'", path, lineno)
        text, title = record.get("text"), record.get("title")
        for name, value in (("text", text), ("title", title)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"'{name}' must be a string", path, lineno)
        if title and text is not None:
            text = f"{title} {text}"
        vector = record.get("vector")
        if vector is not None and not isinstance(vector, dict):
            raise InputError("'vector' must be an object {token: weight}", path, lineno)
        dense = record.get("dense")
        if dense is not None and not isinstance(dense, list):
            raise InputError("'dense' must be a list of numbers", path, lineno)
        metadata = record.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InputError("'metadata' must be an object", path, lineno)
        yield lineno, DocumentRow(doc_id, text, vector, dense, metadata)


def check_documents(
    path: str | Path,
    *,
    schema: Schema,
    has_model: bool,
    dense_dim: int | None,
    has_dense_model: bool,
) -> tuple[int, Schema]:
    """Read the whole file once and check every row against the collection before any write.

    Returns the number of documents and the schema the file would leave. Duplicate ids in one
    file are an error (the later line would silently replace the earlier).
    """
    seen: dict[str, int] = {}
    n = 0
    for lineno, row in read_documents(path):
        if row.id in seen:
            raise InputError(
                f"duplicate id {row.id!r} (first on line {seen[row.id]})", path, lineno
            )
        seen[row.id] = lineno
        if row.vector is None and row.text is None:
            raise InputError("needs 'vector' or 'text'", path, lineno)
        if row.vector is None and not has_model:
            raise InputError("this collection has no model: give a 'vector'", path, lineno)
        if dense_dim is not None:
            if row.dense is None and not (has_dense_model and row.text is not None):
                raise InputError(f"needs 'dense' ({dense_dim} numbers)", path, lineno)
            if row.dense is not None and len(row.dense) != dense_dim:
                raise InputError(
                    f"'dense' has {len(row.dense)} numbers, expected {dense_dim}", path, lineno
                )
        elif row.dense is not None:
            raise InputError("this collection has no dense vectors", path, lineno)
        try:
            schema = schema.extend([row.metadata])
        except InputError as exc:
            raise InputError(str(exc).removeprefix("document 0: "), path, lineno) from None
        n += 1
    if n == 0:
        raise InputError("no documents", path)
    return n, schema
