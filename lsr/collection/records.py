"""Write operations as log payloads: what one acknowledged call changed, replayable in order.

A payload is one op byte (``U`` upsert, ``D`` delete), a little-endian u32 length, a JSON header
(ids, metadata, texts, array sizes) and the raw arrays: CSR row pointers (int64), term ids
(int32), weight codes (the collection's code dtype) and dense rows (float32). Applying the same
payloads in sequence order to the same starting state always gives the same collection.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lsr.errors import IndexFormatError

_HEAD = struct.Struct("<cI")


@dataclass(frozen=True)
class Upsert:
    """Documents to insert or replace: CSR rows of weight codes, optional dense rows and payload."""

    ids: list[str]
    indptr: np.ndarray  # int64[n + 1]
    terms: np.ndarray  # int32, ascending within a row
    codes: np.ndarray  # the collection's code dtype
    dense: np.ndarray | None  # float32[n, dim]
    metadata: list[dict[str, Any] | None]
    texts: list[str | None]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.terms[a:b], self.codes[a:b]


def take(op: Upsert, positions: Sequence[int]) -> Upsert:
    """The documents of ``op`` at ``positions`` (in that order), as one upsert."""
    rows = [op.row(i) for i in positions]
    lengths = np.fromiter((t.shape[0] for t, _ in rows), dtype=np.int64, count=len(rows))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    terms = np.concatenate([t for t, _ in rows]) if rows else op.terms[:0]
    codes = np.concatenate([c for _, c in rows]) if rows else op.codes[:0]
    index = np.asarray(positions, dtype=np.int64)
    return Upsert(
        [op.ids[i] for i in positions],
        indptr,
        terms.astype(np.int32, copy=False),
        codes.astype(op.codes.dtype, copy=False),
        None if op.dense is None else op.dense[index],
        [op.metadata[i] for i in positions],
        [op.texts[i] for i in positions],
    )


@dataclass(frozen=True)
class Delete:
    """Documents to delete, by external id (a delete by filter is logged as the ids it matched)."""

    ids: list[str]


Op = Upsert | Delete


def encode(op: Op) -> bytes:
    """The log payload of ``op``."""
    if isinstance(op, Delete):
        header = json.dumps({"ids": op.ids}, ensure_ascii=False).encode()
        return _HEAD.pack(b"D", len(header)) + header
    header = json.dumps(
        {
            "ids": op.ids,
            "metadata": op.metadata,
            "texts": op.texts,
            "nnz": int(op.terms.shape[0]),
            "code_dtype": op.codes.dtype.str,
            "dense_dim": None if op.dense is None else int(op.dense.shape[1]),
        },
        ensure_ascii=False,
    ).encode()
    parts = [
        _HEAD.pack(b"U", len(header)),
        header,
        np.ascontiguousarray(op.indptr, dtype="<i8").tobytes(),
        np.ascontiguousarray(op.terms, dtype="<i4").tobytes(),
        np.ascontiguousarray(op.codes).tobytes(),
    ]
    if op.dense is not None:
        parts.append(np.ascontiguousarray(op.dense, dtype="<f4").tobytes())
    return b"".join(parts)


def decode(payload: bytes) -> Op:
    """The op a payload holds (IndexFormatError if it is not one of ours)."""
    try:
        kind, size = _HEAD.unpack_from(payload)
        header = json.loads(payload[_HEAD.size : _HEAD.size + size])
        if kind == b"D":
            return Delete(list(header["ids"]))
        if kind != b"U":
            raise ValueError(f"unknown op {kind!r}")
        n, nnz = len(header["ids"]), int(header["nnz"])
        offset = _HEAD.size + size
        arrays = []
        for dtype, count in (("<i8", n + 1), ("<i4", nnz), (header["code_dtype"], nnz)):
            array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
            arrays.append(array)
            offset += array.nbytes
        dense = None
        if header["dense_dim"] is not None:
            dense = np.frombuffer(
                payload, dtype="<f4", count=n * header["dense_dim"], offset=offset
            ).reshape(n, header["dense_dim"])
            offset += dense.nbytes
        if offset != len(payload):
            raise ValueError(f"{len(payload) - offset} trailing bytes")
        return Upsert(header["ids"], *arrays, dense, header["metadata"], header["texts"])
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise IndexFormatError(f"unreadable log record ({exc})") from None
