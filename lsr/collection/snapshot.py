"""Snapshot: an immutable view of a collection that searches run against.

A snapshot holds the segments with their live masks (copy-on-write: a writer never changes a
mask a snapshot holds) and a prefix of the write buffer's append-only log. Readers take the
current snapshot without a lock and never wait for writers; flushes and merges publish new ones.

Search is exact: the top k by score over the live documents (that match the filter), ties by
smaller id. Within a snapshot every part (segment or buffer) sums a document's score in the same
order (query terms by ascending term id), so a document scores the same wherever it lives.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lsr.collection.filters import Filter
from lsr.collection.schema import Schema
from lsr.collection.scoring import Scorable, SearchPlan, make_plan, top_k
from lsr.collection.segment import Segment, id_keys
from lsr.collection.table import DocTable
from lsr.index import kernels
from lsr.index.builder import in_memory_postings
from lsr.index.quantization import Codec


class BufferedDoc(NamedTuple):
    """One version of a document in the write buffer."""

    terms: np.ndarray  # int32 ascending
    codes: np.ndarray
    dense: np.ndarray | None
    metadata: dict[str, Any] | None


class BufferPart(NamedTuple):
    """Live buffered documents: a table sorted by id and which of its rows are still live."""

    table: DocTable
    alive: np.ndarray | None  # uint8 per row (1 = live); None: every row is live
    scorable: Scorable

    def live_rows(self) -> np.ndarray:
        n = len(self.table)
        return np.arange(n, dtype=np.int64) if self.alive is None else np.flatnonzero(self.alive)


class WriteBuffer:
    """The append-only log of buffered versions: ``(id, doc)`` or ``(id, None)`` for a delete.

    A snapshot sees the first ``n`` entries as :meth:`parts`: a *base* table of the live
    documents among the first ``m`` entries (sorted by id, built once and shared), with the rows
    later entries replaced or deleted masked out, and a *delta* table of the live documents
    among entries ``m..n``. The base is rebuilt once the delta outgrows a quarter of it, so a
    write followed by a search costs time in the size of the delta, not of the buffer.
    """

    POSTINGS_FROM = 256  # a base table this large gets postings (term-at-a-time beats forward)

    def __init__(
        self, code_dtype: np.dtype, dense_dim: int | None, n_terms: int, block_size: int
    ) -> None:
        self.entries: list[tuple[str, BufferedDoc | None]] = []
        self.code_dtype = code_dtype
        self.dense_dim = dense_dim
        self.n_terms = n_terms
        self.block_size = block_size
        self._base: tuple[int, DocTable, Scorable, dict[str, int]] | None = None
        self._parts: tuple[int, tuple[BufferPart, ...]] | None = None

    def _table(self, entries: list[tuple[str, BufferedDoc | None]], schema: Schema) -> DocTable:
        latest: dict[str, BufferedDoc | None] = {}
        for doc_id, doc in entries:
            latest[doc_id] = doc
        live = [(i, d) for i, d in latest.items() if d is not None]
        return DocTable.from_rows(
            [i for i, _ in live],
            [(d.terms, d.codes) for _, d in live],
            [d.dense for _, d in live] if self.dense_dim is not None else None,
            [d.metadata for _, d in live],
            schema,
            self.code_dtype,
        )

    def _scorable(self, table: DocTable, *, postings: bool) -> Scorable:
        ix = None
        if postings and len(table):
            ix = in_memory_postings(
                table.indptr, table.terms, table.codes, self.n_terms, self.block_size
            )
        avg = float(table.indptr[-1]) / max(1, len(table))
        return Scorable(ix, table.indptr, table.terms, table.codes, len(table), avg)

    def table(self, n: int, schema: Schema) -> DocTable:
        """All live documents among the first ``n`` entries, as one table (for a flush)."""
        return self._table(self.entries[:n], schema)

    def parts(self, n: int, schema: Schema) -> tuple[BufferPart, ...]:
        """The live documents among the first ``n`` entries (see the class docstring)."""
        cached = self._parts
        if cached is not None and cached[0] == n:
            return cached[1]
        base = self._base
        if base is None or base[0] > n or n - base[0] > max(64, len(base[1]) // 4):
            table = self._table(self.entries[:n], schema)
            scorable = self._scorable(table, postings=len(table) >= self.POSTINGS_FROM)
            self._base = (n, table, scorable, {i: row for row, i in enumerate(table.ids)})
            parts: tuple[BufferPart, ...] = (BufferPart(table, None, scorable),)
        else:
            m, table, scorable, row_of = base
            delta = self.entries[m:n]
            killed = [row_of[i] for i in {doc_id for doc_id, _ in delta} if i in row_of]
            alive = None
            if killed:
                alive = np.ones(len(table), dtype=np.uint8)
                alive[killed] = 0
            fresh = self._table(delta, schema)
            parts = (
                BufferPart(table, alive, scorable),
                BufferPart(fresh, None, self._scorable(fresh, postings=False)),
            )
        self._parts = (n, parts)
        return parts


class DocVector(NamedTuple):
    """A stored document's vectors: term ids ascending, weights as stored (decoded), dense row."""

    terms: np.ndarray  # int32
    weights: np.ndarray  # float32
    dense: np.ndarray | None


class SegmentView(NamedTuple):
    segment: Segment
    live: np.ndarray | None  # uint8 per position (1 = live); None: every document is live
    n_live: int


@dataclass(frozen=True)
class Snapshot:
    """What one search sees: segments + live masks, and the buffer's first ``n_entries``."""

    seq: int
    segments: tuple[SegmentView, ...]
    buffer: WriteBuffer
    n_entries: int
    schema: Schema
    codec: Codec
    lut: np.ndarray | None  # the codec's table, computed once per collection
    n_terms: int

    def buffer_parts(self) -> tuple[BufferPart, ...]:
        return self.buffer.parts(self.n_entries, self.schema)

    @property
    def num_buffered(self) -> int:
        return sum(
            len(p.table) if p.alive is None else int(np.count_nonzero(p.alive))
            for p in self.buffer_parts()
        )

    @property
    def num_live(self) -> int:
        return sum(v.n_live for v in self.segments) + self.num_buffered

    def _buffer_rows(self, part: BufferPart, flt: Filter | None) -> np.ndarray:
        """Rows of a buffer part that are live and match ``flt`` (int64, ascending)."""
        allowed = self._buffer_allowed(part, flt)
        return part.live_rows() if allowed is None else np.flatnonzero(allowed)

    @staticmethod
    def _buffer_allowed(part: BufferPart, flt: Filter | None) -> np.ndarray | None:
        """uint8 allowed-rows mask of a buffer part (None: every row)."""
        if flt is None:
            return part.alive
        mask = flt.mask(part.table.columns).view(np.uint8)
        return mask if part.alive is None else mask & part.alive

    # -- masks --------------------------------------------------------------------------------
    def _allowed(self, view: SegmentView, flt: Filter | None) -> np.ndarray | None:
        """uint8 allowed-docs mask of a segment (None: all documents allowed)."""
        if flt is None:
            return view.live
        mask = flt.mask(view.segment.columns).view(np.uint8)
        return mask if view.live is None else mask & view.live

    def matching_ids(self, flt: Filter | None) -> list[str]:
        """Ids of the live documents that match ``flt`` (all live documents for None)."""
        out: list[str] = []
        for view in self.segments:
            allowed = self._allowed(view, flt)
            ids = view.segment.ids if allowed is None else view.segment.ids[allowed.astype(bool)]
            out.extend(b.decode("utf-8") for b in ids.tolist())
        for part in self.buffer_parts():
            out.extend(part.table.ids[i] for i in self._buffer_rows(part, flt).tolist())
        return out

    def live(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are live documents in this snapshot."""
        ids = list(ids)
        found: set[str] = set()
        for part in self.buffer_parts():
            found.update(part.table.ids[i] for i in part.live_rows().tolist())
        found &= set(ids)
        keys = id_keys(ids)
        for view in self.segments:
            positions = view.segment.positions(keys)
            hit = positions >= 0
            if view.live is not None:
                hit[hit] = view.live[positions[hit]] != 0
            found.update(i for i, h in zip(ids, hit.tolist(), strict=True) if h)
        return found

    def vectors(self, ids: Sequence[str]) -> dict[str, DocVector]:
        """The stored vectors of those of ``ids`` that are live (for feedback and explain)."""
        wanted = list(dict.fromkeys(ids))
        out: dict[str, DocVector] = {}
        for part in self.buffer_parts():
            table = part.table
            live = part.live_rows()
            row_of = {table.ids[r]: r for r in live.tolist()}
            for doc_id in wanted:
                row = row_of.get(doc_id)
                if row is not None:
                    lo, hi = int(table.indptr[row]), int(table.indptr[row + 1])
                    out[doc_id] = DocVector(
                        table.terms[lo:hi].astype(np.int32),
                        self.codec.decode(table.codes[lo:hi]),
                        None if table.dense is None else np.asarray(table.dense[row], np.float32),
                    )
        rest = [i for i in wanted if i not in out]
        keys = id_keys(rest)
        for view in self.segments:
            if not rest:
                break
            seg = view.segment
            positions = seg.positions(keys)
            for doc_id, pos in zip(rest, positions.tolist(), strict=True):
                if pos < 0 or (view.live is not None and not view.live[pos]):
                    continue
                lo, hi = int(seg.fwd_ptr[pos]), int(seg.fwd_ptr[pos + 1])
                out[doc_id] = DocVector(
                    np.asarray(seg.fwd_terms[lo:hi], dtype=np.int32),
                    self.codec.decode(np.asarray(seg.fwd_codes[lo:hi])),
                    None if seg.dense is None else np.asarray(seg.dense[pos], np.float32),
                )
        return out

    def count(self, flt: Filter | None) -> int:
        if flt is None:
            return self.num_live
        total = 0
        for view in self.segments:
            allowed = self._allowed(view, flt)
            total += view.n_live if allowed is None else int(np.count_nonzero(allowed))
        return total + sum(self._buffer_rows(p, flt).size for p in self.buffer_parts())

    # -- sparse --------------------------------------------------------------------------------
    def search_sparse(
        self,
        terms: np.ndarray,
        weights: np.ndarray,
        k: int,
        flt: Filter | None = None,
        *,
        plan: str | SearchPlan = "auto",
    ) -> list[tuple[str, float]]:
        """Top k as (id, score) (exact unless ``plan`` is blockmax below 1); ``terms`` int32
        ascending, ``weights`` float32 > 0."""
        plan = make_plan(plan)
        hits: list[tuple[str, float]] = []
        scale = np.float32(self.codec.score_scale)
        for view in self.segments:
            allowed = self._allowed(view, flt)
            docs, scores = top_k(
                view.segment.scorable, self.lut, self.n_terms, allowed, terms, weights, k, plan
            )
            ids = view.segment.ids[docs].tolist()
            hits.extend(
                (b.decode("utf-8"), float(s))
                for b, s in zip(ids, (scores * scale).tolist(), strict=True)
            )
        for part in self.buffer_parts():
            allowed = self._buffer_allowed(part, flt)
            docs, scores = top_k(
                part.scorable, self.lut, self.n_terms, allowed, terms, weights, k, plan
            )
            ids = part.table.ids
            hits.extend(
                (ids[d], float(s))
                for d, s in zip(docs.tolist(), (scores * scale).tolist(), strict=True)
            )
        return best_hits(hits, k)

    # -- dense ---------------------------------------------------------------------------------
    def search_dense(
        self, vector: np.ndarray, k: int, flt: Filter | None = None
    ) -> list[tuple[str, float]]:
        """Exact top k by inner product over the live documents' dense rows (ties: smaller id)."""
        parts: list[tuple[str, float]] = []
        for view in self.segments:
            seg = view.segment
            if seg.dense is None:
                continue
            allowed = self._allowed(view, flt)
            positions = None if allowed is None else np.flatnonzero(allowed)
            rows = seg.dense if positions is None else seg.dense[positions]
            ids = seg.ids if positions is None else seg.ids[positions]
            parts.extend((ids[j].decode("utf-8"), s) for j, s in _top_rows(rows, vector, k, ids))
        for part in self.buffer_parts():
            table = part.table
            keep = self._buffer_rows(part, flt)
            if keep.size == 0 or table.dense is None:
                continue
            ids = np.array([table.ids[i].encode("utf-8") for i in keep.tolist()])
            parts.extend(
                (ids[j].decode("utf-8"), s) for j, s in _top_rows(table.dense[keep], vector, k, ids)
            )
        return best_hits(parts, k)


def _top_rows(
    rows: np.ndarray, vector: np.ndarray, k: int, ids: np.ndarray
) -> list[tuple[int, float]]:
    """(row, score) of the k best rows by inner product; ties: smaller id."""
    if rows.shape[0] == 0:
        return []
    scores = kernels.row_dots(
        np.ascontiguousarray(rows, dtype=np.float32), np.ascontiguousarray(vector, dtype=np.float32)
    )
    if scores.shape[0] > k:
        cut = np.partition(scores, scores.shape[0] - k)[scores.shape[0] - k]
        chosen = np.flatnonzero(scores >= cut)
    else:
        chosen = np.arange(scores.shape[0])
    order = chosen[np.lexsort((ids[chosen], -scores[chosen]))][:k]
    return [(int(j), float(scores[j])) for j in order]


def best_hits(parts: Sequence[tuple[str, float]], k: int) -> list[tuple[str, float]]:
    """The k best (id, score) pairs: higher score first, then smaller id."""
    return heapq.nsmallest(k, parts, key=lambda p: (-p[1], p[0]))
