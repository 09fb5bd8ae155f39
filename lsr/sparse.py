"""SparseBatch: the one in-memory type for term-weight vectors (CSR over a vocabulary), and its I/O.

Files: JSONL in Pyserini's JsonVectorCollection shape (``{"id": ..., "vector": {token: weight}}``,
gzip when the name ends in ``.gz``) and ``.npz`` (CSR arrays + ids + vocabulary).
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError, UnknownTermError
from lsr.io import iter_json_objects, open_text
from lsr.vocab import Vocabulary

DEFAULT_CHUNK = 8192


class TermWeights(NamedTuple):
    """One sparse vector as term ids of a known vocabulary and their weights (no scipy)."""

    terms: np.ndarray  # int, distinct
    weights: np.ndarray  # float32


@dataclass
class SparseBatch:
    """Rows of term weights: ``matrix`` is float32 CSR (rows x len(vocab)); ``ids`` names rows."""

    ids: list[str]
    matrix: sp.csr_matrix
    vocab: Vocabulary

    def __post_init__(self) -> None:
        if self.matrix.shape[0] != len(self.ids):
            raise InputError(f"{len(self.ids)} ids for {self.matrix.shape[0]} rows")
        if self.matrix.shape[1] > len(self.vocab):
            raise InputError(
                f"matrix has {self.matrix.shape[1]} columns, vocabulary {len(self.vocab)}"
            )
        if self.matrix.shape[1] < len(self.vocab):  # a growable vocabulary may have grown since
            self.matrix = sp.csr_matrix(
                (self.matrix.data, self.matrix.indices, self.matrix.indptr),
                shape=(self.matrix.shape[0], len(self.vocab)),
            )

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_dicts(
        cls,
        vectors: Iterable[Mapping[str, float]],
        ids: Sequence[str] | None = None,
        vocab: Vocabulary | None = None,
        *,
        unknown: str = "error",
    ) -> SparseBatch:
        """Build a batch from ``{token: weight}`` dicts; ``unknown`` is "error" or "ignore"."""
        vocab = vocab if vocab is not None else Vocabulary()
        rows = _RowBuffer(vocab, unknown=unknown)
        for i, vector in enumerate(vectors):
            rows.add(vector, line=i + 1)
        ids = [str(i) for i in range(rows.n_rows)] if ids is None else [str(i) for i in ids]
        return rows.to_batch(ids)

    def row(self, i: int) -> TermWeights:
        """Row ``i`` as term ids and weights."""
        m = self.matrix
        lo, hi = m.indptr[i], m.indptr[i + 1]
        return TermWeights(m.indices[lo:hi], m.data[lo:hi])

    def to_dicts(self) -> list[dict[str, float]]:
        tokens = self.vocab.tokens
        m = self.matrix
        return [
            {tokens[j]: float(w) for j, w in zip(m.indices[a:b], m.data[a:b], strict=True)}
            for a, b in zip(m.indptr[:-1], m.indptr[1:], strict=True)
        ]

    def remap(self, target: Vocabulary, *, unknown: str = "error") -> SparseBatch:
        """The same vectors expressed in ``target``'s term ids."""
        if target == self.vocab:
            return SparseBatch(self.ids, self.matrix, target)
        if target.frozen:
            lookup = np.array([_lookup(target, t) for t in self.vocab.tokens], dtype=np.int64)
        else:  # a growable vocabulary takes in the terms this batch uses (in term-id order)
            lookup = np.full(len(self.vocab), -1, dtype=np.int64)
            for j in np.unique(self.matrix.indices):
                lookup[j] = target.id_of(self.vocab.tokens[int(j)])
        m = self.matrix.tocoo()
        cols = lookup[m.col] if len(lookup) else m.col.astype(np.int64)
        missing = cols < 0
        if missing.any():
            if unknown == "error":
                row = int(m.row[missing][0])
                term = self.vocab.tokens[int(m.col[missing][0])]
                raise UnknownTermError(
                    f"term {term!r} (in {self.ids[row]!r}) is not in the vocabulary"
                )
            keep = ~missing
            m = sp.coo_matrix((m.data[keep], (m.row[keep], m.col[keep])), shape=m.shape)
            cols = cols[keep]
        remapped = sp.csr_matrix(
            (m.data, (m.row, cols)), shape=(m.shape[0], len(target)), dtype=np.float32
        )
        remapped.sort_indices()
        return SparseBatch(self.ids, remapped, target)


def _lookup(vocab: Vocabulary, token: str) -> int:
    tid = vocab.get(token)
    return -1 if tid is None else tid


class _RowBuffer:
    """Accumulates validated rows as CSR arrays."""

    def __init__(self, vocab: Vocabulary, *, unknown: str = "error", path: object = None):
        if unknown not in ("error", "ignore"):
            raise ValueError("unknown must be 'error' or 'ignore'")
        self.vocab, self.unknown, self.path = vocab, unknown, path
        # typed buffers: a Python list costs ~10x the memory of the numbers it holds
        self.indices = array("i")
        self.data = array("f")
        self.indptr = array("q", [0])
        self.ids: list[str] = []
        self.dropped_unknown = 0

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def add(self, vector: object, line: int | None = None) -> None:
        if not isinstance(vector, Mapping):
            raise InputError('"vector" must be an object of {token: weight}', self.path, line)
        row: dict[int, float] = {}
        for token, weight in vector.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise InputError(
                    f"weight of {token!r} is not a number: {weight!r}", self.path, line
                )
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise InputError(
                    f"weight of {token!r} must be finite and >= 0, got {weight}", self.path, line
                )
            if weight == 0.0:
                continue
            tid = self.vocab.id_of(str(token))
            if tid < 0:
                if self.unknown == "error":
                    raise UnknownTermError(
                        f"unknown term {token!r}: not in the vocabulary", self.path, line
                    )
                self.dropped_unknown += 1
                continue
            row[tid] = weight
        for tid in sorted(row):
            self.indices.append(tid)
            self.data.append(row[tid])
        self.indptr.append(len(self.indices))

    def to_batch(self, ids: list[str] | None = None) -> SparseBatch:
        matrix = sp.csr_matrix(
            (
                np.array(self.data, dtype=np.float32),
                np.array(self.indices, dtype=np.int32),
                np.array(self.indptr, dtype=np.int64),
            ),
            shape=(self.n_rows, len(self.vocab)),
        )
        return SparseBatch(self.ids if ids is None else ids, matrix, self.vocab)

    def clear(self) -> None:
        self.indices, self.data, self.indptr, self.ids = array("i"), array("f"), array("q", [0]), []

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr int64, term ids int32 ascending per row, weights float32 > 0): CSR arrays
        without building a scipy matrix."""
        return (
            np.frombuffer(self.indptr, dtype=np.int64).copy(),
            np.frombuffer(self.indices, dtype=np.int32).copy(),
            np.frombuffer(self.data, dtype=np.float32).copy(),
        )


def csr_from_dicts(
    vectors: Iterable[Mapping[str, float]], vocab: Vocabulary, *, unknown: str = "error"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``{token: weight}`` rows as CSR arrays (indptr, term ids ascending, weights > 0), checked
    as :meth:`SparseBatch.from_dicts` checks them (zero weights dropped); no scipy involved."""
    rows = _RowBuffer(vocab, unknown=unknown)
    for i, vector in enumerate(vectors):
        rows.add(vector, line=i + 1)
    return rows.arrays()


# -- JSONL ---------------------------------------------------------------------------------------
def iter_jsonl_batches(
    path: str | Path,
    vocab: Vocabulary | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    unknown: str = "error",
) -> Iterator[SparseBatch]:
    """Stream a JsonVectorCollection file as batches of at most ``chunk_size`` rows.

    All batches share one vocabulary (grown as tokens appear unless ``vocab`` is frozen).
    Errors name the file and line.
    """
    vocab = vocab if vocab is not None else Vocabulary()
    rows = _RowBuffer(vocab, unknown=unknown, path=path)
    for lineno, record in iter_json_objects(path, what='an object with "id" and "vector"'):
        if "id" not in record or "vector" not in record:
            raise InputError('expected an object with "id" and "vector"', path, lineno)
        rows.add(record["vector"], line=lineno)
        rows.ids.append(str(record["id"]))
        if rows.n_rows >= chunk_size:
            yield rows.to_batch()
            rows.clear()
    if rows.n_rows:
        yield rows.to_batch()


def read_jsonl(
    path: str | Path, vocab: Vocabulary | None = None, *, unknown: str = "error"
) -> SparseBatch:
    """Read a whole JsonVectorCollection file into one batch."""
    vocab = vocab if vocab is not None else Vocabulary()
    return concat(list(iter_jsonl_batches(path, vocab, unknown=unknown)), vocab)


def write_jsonl(batch: SparseBatch, path: str | Path, *, decimals: int | None = None) -> None:
    """Write a batch as JsonVectorCollection JSONL (gzip when the name ends in ``.gz``)."""
    with open_text(path, "wt") as handle:
        for doc_id, vector in zip(batch.ids, batch.to_dicts(), strict=True):
            if decimals is not None:
                vector = {t: round(w, decimals) for t, w in vector.items()}
            handle.write(json.dumps({"id": doc_id, "vector": vector}, ensure_ascii=False) + "\n")


# -- npz -----------------------------------------------------------------------------------------
def write_npz(batch: SparseBatch, path: str | Path) -> None:
    m = batch.matrix
    np.savez_compressed(
        path,
        data=m.data.astype(np.float32),
        indices=m.indices.astype(np.int32),
        indptr=m.indptr.astype(np.int64),
        shape=np.asarray(m.shape, dtype=np.int64),
        ids=np.asarray(batch.ids, dtype=str),
        vocab=np.asarray(batch.vocab.tokens, dtype=str),
    )


def read_npz(
    path: str | Path, vocab: Vocabulary | None = None, *, unknown: str = "error"
) -> SparseBatch:
    """Read a batch written by :func:`write_npz`; remapped onto ``vocab`` when one is given."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"data", "indices", "indptr", "shape", "ids", "vocab"} - set(z.files)
            if missing:
                raise InputError(f"npz is missing arrays: {', '.join(sorted(missing))}", path)
            shape = tuple(int(x) for x in z["shape"])
            matrix = sp.csr_matrix(
                (z["data"].astype(np.float32), z["indices"], z["indptr"]), shape=shape
            )
            ids = [str(x) for x in z["ids"]]
            own = Vocabulary([str(t) for t in z["vocab"]], frozen=True, source=str(path))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(f"cannot read npz: {exc}", path) from None
    data = matrix.data
    if data.size and (not np.all(np.isfinite(data)) or data.min() < 0):
        raise InputError("weights must be finite and >= 0", path)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    batch = SparseBatch(ids, matrix, own)
    return batch if vocab is None else batch.remap(vocab, unknown=unknown)


def iter_vector_batches(
    path: str | Path,
    vocab: Vocabulary | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    unknown: str = "error",
) -> Iterator[SparseBatch]:
    """Stream batches from a JSONL(.gz) or .npz vectors file, chosen by its name."""
    if str(path).endswith(".npz"):
        batch = read_npz(path, vocab, unknown=unknown)
        for start in range(0, len(batch), chunk_size):
            stop = start + chunk_size
            yield SparseBatch(batch.ids[start:stop], batch.matrix[start:stop], batch.vocab)
    else:
        yield from iter_jsonl_batches(path, vocab, chunk_size=chunk_size, unknown=unknown)


def concat(batches: Sequence[SparseBatch], vocab: Vocabulary) -> SparseBatch:
    """Stack batches that share ``vocab`` into one."""
    if not batches:
        return SparseBatch([], sp.csr_matrix((0, len(vocab)), dtype=np.float32), vocab)
    width = len(vocab)
    mats = [
        sp.csr_matrix((b.matrix.data, b.matrix.indices, b.matrix.indptr), shape=(len(b), width))
        for b in batches
    ]
    ids = [i for b in batches for i in b.ids]
    return SparseBatch(ids, sp.vstack(mats, format="csr", dtype=np.float32), vocab)
