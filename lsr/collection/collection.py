"""Collection: a live, durable sparse (+ dense) index that takes writes while it answers searches.

Writes (upsert, delete, delete by filter) are validated, appended to the write-ahead log, fsynced
(group commit: concurrent writers share fsyncs) and then applied in sequence order to the write
buffer and the segments' live masks, and to the SQLite document store; the call returns once its
write is durable and visible. A full buffer is flushed into a new segment; merges (tiered by
size, in the background or on request) rewrite segments without their deleted documents. Each
new state is published as an immutable :class:`~lsr.collection.snapshot.Snapshot`, so searches
never wait. Semantics: docs/collections.md.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsr.collection import records
from lsr.collection.config import CollectionConfig
from lsr.collection.create import COLLECTION_FILE, create_collection
from lsr.collection.failpoints import crash_point
from lsr.collection.filters import parse_filter
from lsr.collection.manifest import (
    SEGMENTS,
    TOMBSTONES,
    read_manifest,
    read_tombstones,
    write_manifest,
    write_tombstones,
)
from lsr.collection.merge_policy import pick_merge
from lsr.collection.prepare import check_ids, prepare_upsert
from lsr.collection.prf import PrfConfig
from lsr.collection.queries import dict_query, load_document_encoder
from lsr.collection.records import Delete, Upsert
from lsr.collection.schema import Schema
from lsr.collection.search_view import run_search
from lsr.collection.segment import Segment, id_keys
from lsr.collection.snapshot import BufferedDoc, DocVector, SegmentView, Snapshot, WriteBuffer
from lsr.collection.store import DocStore
from lsr.collection.table import DocTable
from lsr.collection.wal import WriteAheadLog
from lsr.errors import IndexFormatError, InputError
from lsr.sparse import SparseBatch, TermWeights
from lsr.types import Hit
from lsr.vocab import Vocabulary

STORE_FILE = "docs.sqlite"
LOG_DIR = "wal"
LOCK_FILE = "lock"


@dataclass(frozen=True)
class Match:
    """One search result with its stored payload."""

    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class WriteResult:
    """What an acknowledged write did: its log sequence number and how many documents it touched."""

    seq: int
    count: int


class Collection:
    """A live collection directory (see the module docstring). Open one writer per directory."""

    # -- creation and opening -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        vocab: Vocabulary | None = None,
        model: str | None = None,
        query_mode: str = "siamese",
        idf: str | Path | None = None,
        dense_model: str | None = None,
        config: CollectionConfig | None = None,
        schema: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Collection:
        """Create an empty collection at ``path`` and open it.

        Either ``vocab`` (vectors are given on upsert; queries are ``{token: weight}``) or
        ``model`` (a SPLADE-style model: texts are encoded on upsert and at query time;
        ``query_mode`` "siamese" or "inference-free", whose IDF table — the model's ``idf.json``
        or ``idf`` — is copied in and never changes). ``dense_model`` adds dense vectors from
        that sentence-transformers model. ``options`` are :class:`CollectionConfig` fields;
        ``schema`` declares metadata fields up front (``{"year": "number"}``), else they are
        inferred at first write.
        """
        create_collection(
            path,
            vocab=vocab,
            model=model,
            query_mode=query_mode,
            idf=idf,
            dense_model=dense_model,
            config=config,
            schema=schema,
            **options,
        )
        return cls.open(path)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        verify: bool = True,
        background_merge: bool = False,
        model: str | None = None,
    ) -> Collection:
        """Open the collection at ``path`` for reading and writing (one process at a time).

        Replays the log past the last flush (a torn tail is truncated with a warning);
        ``verify`` checks every segment's checksums; ``background_merge`` runs merges in a
        thread after flushes; ``model``: where a siamese query model is now, if it moved.
        """
        return cls(Path(path), verify=verify, background_merge=background_merge, model=model)

    def __init__(self, path: Path, *, verify: bool, background_merge: bool, model: str | None):
        self.path = path.absolute()
        info_path = self.path / COLLECTION_FILE
        if not info_path.is_file():
            raise IndexFormatError(f"{path}: not an lsr collection (no {COLLECTION_FILE})")
        self._lock_file = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise InputError(
                "is open in another process (one writer per collection)", path
            ) from None
        try:
            self._load(info_path, verify, model)
        except BaseException:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            raise
        self._closed = False
        self._merger: threading.Thread | None = None
        self._merge_wanted = threading.Event()
        if background_merge:
            self._merger = threading.Thread(target=self._merge_loop, daemon=True, name="lsr-merge")
            self._merger.start()

    def _read_identity(self, info_path: Path, model: str | None) -> None:
        """Settings, codec and vocabulary from ``collection.json`` (they never change)."""
        self.info_json = json.loads(info_path.read_text(encoding="utf-8"))
        self.config = CollectionConfig.model_validate(self.info_json["config"])
        self.codec = self.config.codec
        self._lut = self.codec.lut()
        self.vocab = Vocabulary.load(self.path / "vocab.json")
        if self.vocab.sha256 != self.info_json["vocab"]["sha256"]:
            raise IndexFormatError(f"{self.path}: vocab.json does not match collection.json")
        self.model = model
        self.recovery_notes: list[str] = []

    def _load(self, info_path: Path, verify: bool, model: str | None) -> None:
        self._read_identity(info_path, model)
        self._remove_leftovers_before_open()
        manifest = read_manifest(self.path)
        self._generation = int(manifest["generation"])
        self._flushed_seq = int(manifest["flushed_seq"])
        self._next_segment = int(manifest["next_segment"])
        self._schema = Schema.from_json(manifest["schema"])
        self._segments: list[Segment] = []
        self._live: dict[str, np.ndarray | None] = {}
        self._n_live: dict[str, int] = {}
        self._tombstones: dict[str, dict[str, Any] | None] = {}
        for entry in manifest["segments"]:
            name = entry["name"]
            try:
                segment = Segment.open(
                    self._segment_path(name), name, self._schema, verify=verify, vocab=self.vocab
                )
            except IndexFormatError as exc:
                raise IndexFormatError(f"segment {name} is damaged: {exc}") from None
            self._segments.append(segment)
            tomb = entry.get("tombstones")
            live = read_tombstones(self.path, tomb, segment.num_docs) if tomb else None
            self._live[name] = live
            self._n_live[name] = segment.num_docs if live is None else int(live.sum())
            self._tombstones[name] = tomb
        self._remove_unreferenced(manifest)
        self._fresh: set[str] = set()  # masks copied since the last publish (safe to mutate)
        self._changed: set[str] = set()  # masks changed since the last manifest
        self._buffer = WriteBuffer(
            self.codec.dtype, self.config.dense_dim, len(self.vocab), self.config.block_size
        )
        self._buffer_live: dict[str, bool] = {}
        self._append_lock = threading.Lock()
        self._apply_lock = threading.RLock()
        self._merge_lock = threading.Lock()
        self._pending: deque[tuple[int, int, records.Op]] = deque()
        self._results: dict[int, int] = {}
        self.store = DocStore(self.path / STORE_FILE)
        self._wal, replay = WriteAheadLog.open(self.path / LOG_DIR, after_seq=self._flushed_seq)
        self.recovery_notes.extend(self._wal.recovery_notes)
        store_seq = self.store.applied_seq
        ops = [(seq, records.decode(payload)) for seq, payload in replay]
        for seq, op in ops:
            self._apply(seq, op)
        self.store.apply([(seq, op) for seq, op in ops if seq > store_seq])
        self._applied_seq = max(self._flushed_seq, ops[-1][0] if ops else 0, self._wal.last_seq)
        self._pending_schema = self._schema
        self._encoder: Any = None
        self._query_encoder: Any = None
        self._dense_encoder: Any = None
        self._encoder_lock = threading.Lock()
        self._publish()

    def _segment_path(self, name: str) -> Path:
        return self.path / SEGMENTS / name

    def _remove_leftovers_before_open(self) -> None:
        """Staging directories and temporary files that a killed writer left behind."""
        segments = self.path / SEGMENTS
        if segments.is_dir():
            for entry in segments.iterdir():
                if ".lsr-staging-" in entry.name or entry.name.endswith(".lsr-previous"):
                    shutil.rmtree(entry, ignore_errors=True)
        for folder in (self.path, self.path / TOMBSTONES):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if entry.name.startswith(".") and ".tmp-" in entry.name:
                        entry.unlink(missing_ok=True)

    def _remove_unreferenced(self, manifest: dict[str, Any]) -> None:
        """Segments and tombstone files the current generation does not name (a crash after a
        flush or merge wrote them but before the manifest named them, or after it dropped them)."""
        names = {e["name"] for e in manifest["segments"]}
        tombs = {e["tombstones"]["file"] for e in manifest["segments"] if e.get("tombstones")}
        segments = self.path / SEGMENTS
        if segments.is_dir():
            for entry in segments.iterdir():
                if entry.name not in names:
                    shutil.rmtree(entry, ignore_errors=True)
        folder = self.path / TOMBSTONES
        if folder.is_dir():
            for entry in folder.iterdir():
                if f"{TOMBSTONES}/{entry.name}" not in tombs:
                    entry.unlink(missing_ok=True)

    # -- state ----------------------------------------------------------------------------------
    def _publish(self) -> None:
        views = tuple(
            SegmentView(s, self._live[s.name], self._n_live[s.name]) for s in self._segments
        )
        self._snapshot = Snapshot(
            self._applied_seq,
            views,
            self._buffer,
            len(self._buffer.entries),
            self._schema,
            self.codec,
            self._lut,
            len(self.vocab),
        )
        self._fresh.clear()

    def snapshot(self) -> Snapshot:
        """The current consistent view (what a search started now sees)."""
        return self._snapshot

    def _kill(self, segment: Segment, positions: np.ndarray) -> int:
        """Mark live documents at ``positions`` of ``segment`` deleted; returns how many died."""
        name = segment.name
        live = self._live[name]
        if live is None:
            live = np.ones(segment.num_docs, dtype=np.uint8)
        elif name not in self._fresh:
            live = live.copy()
        died = int(live[positions].sum())
        if died:
            live[positions] = 0
            self._live[name] = live
            self._fresh.add(name)
            self._changed.add(name)
            self._n_live[name] -= died
        return died

    def _kill_in_segments(self, ids: Sequence[str]) -> int:
        """Mark the live versions of ``ids`` in the segments deleted; returns how many died."""
        keys = id_keys(ids)
        died = 0
        for segment in self._segments:
            positions = segment.positions(keys)
            positions = positions[positions >= 0]
            if positions.size:
                died += self._kill(segment, positions)
        return died

    def _delete_everywhere(self, ids: Sequence[str]) -> int:
        """Delete the live version of each id (segments and buffer); returns how many existed."""
        deleted = self._kill_in_segments(ids)
        for doc_id in ids:
            if self._buffer_live.pop(doc_id, False):
                self._buffer.entries.append((doc_id, None))
                deleted += 1
        return deleted

    def _apply(self, seq: int, op: records.Op) -> None:
        """Apply one logged op to the in-memory state (callers hold the apply lock or are _load)."""
        if isinstance(op, Delete):
            self._results[seq] = self._delete_everywhere(op.ids)
            return
        self._schema = self._schema.extend(op.metadata)
        self._kill_in_segments(op.ids)  # replaced versions
        for i, doc_id in enumerate(op.ids):
            terms, codes = op.row(i)
            dense = None if op.dense is None else op.dense[i]
            self._buffer.entries.append((doc_id, BufferedDoc(terms, codes, dense, op.metadata[i])))
            self._buffer_live[doc_id] = True
        self._results[seq] = len(op.ids)

    # -- writes ---------------------------------------------------------------------------------
    def _commit(self, op: records.Op) -> WriteResult:
        payload = records.encode(op)
        with self._append_lock:
            self._check_open()
            if isinstance(op, Upsert):
                self._pending_schema = self._pending_schema.extend(op.metadata)
            seq, position = self._wal.append(payload)
            self._pending.append((seq, position, op))
        self._wal.sync_through(position)
        self._apply_through(seq)
        return WriteResult(seq, self._results.pop(seq, 0))

    def _apply_through(self, seq: int) -> None:
        with self._apply_lock:
            if self._applied_seq >= seq:
                return
            batch = []
            while self._pending and self._pending[0][0] <= seq:
                s, _, op = self._pending.popleft()
                self._apply(s, op)
                batch.append((s, op))
            self.store.apply(batch)
            self._applied_seq = batch[-1][0]
            self._publish()
            if len(self._buffer_live) >= self.config.flush_docs:
                self._flush_locked()

    def upsert(
        self,
        ids: Sequence[str],
        *,
        vectors: SparseBatch | Sequence[Mapping[str, float]] | None = None,
        texts: Sequence[str] | None = None,
        dense: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> WriteResult:
        """Insert or replace documents by id; returns once the write is durable and visible.

        Give ``vectors`` (a SparseBatch or ``{token: weight}`` dicts), or ``texts`` to encode with
        the collection's model (texts given with vectors are stored, not encoded). ``dense``
        rows are needed when the collection has dense vectors and no dense model.
        """
        return self._commit(self.prepare(ids, vectors, texts, dense, metadata))

    def prepare(
        self,
        ids: Sequence[str],
        vectors: Any,
        texts: Sequence[str] | None,
        dense: Any,
        metadata: Sequence[Mapping[str, Any] | None] | None,
        schema: Schema | None = None,
    ) -> Upsert:
        """An upsert validated against ``schema`` (default: this collection's) and encoded with
        this collection's model: the op :meth:`commit` logs (nothing is written here)."""
        return prepare_upsert(
            ids,
            vectors,
            texts,
            dense,
            metadata,
            vocab=self.vocab,
            config=self.config,
            schema=self._pending_schema if schema is None else schema,
            encode_texts=lambda t, i: self.encoder.encode_document(t, i),
            encode_dense=(
                (lambda t: self.dense_encoder.encode_document(t))
                if "dense" in self.info_json
                else None
            ),
        )

    def delete(self, ids: Sequence[str]) -> WriteResult:
        """Delete documents by id (unknown ids are ignored); ``count`` is how many existed."""
        ids = check_ids(ids, unique=False)
        return self._commit(Delete(list(dict.fromkeys(ids))))

    def delete_by_filter(self, filter: Any) -> WriteResult:
        """Delete every live document matching ``filter`` at the time the write applies."""
        with self._append_lock:
            flt = parse_filter(filter, self._pending_schema)
            # apply everything appended so far, then resolve the filter on that exact state
            self._wal.sync_through(self._wal.position)
            # under the apply lock: another writer may have taken ops off _pending and not
            # yet published them (the snapshot would then miss them)
            with self._apply_lock:
                if self._pending:
                    self._apply_through(self._pending[-1][0])
                ids = self._snapshot.matching_ids(flt)
            self._check_open()
            seq, position = self._wal.append(records.encode(Delete(ids)))
            self._pending.append((seq, position, Delete(ids)))
        self._wal.sync_through(position)
        self._apply_through(seq)
        return WriteResult(seq, self._results.pop(seq, 0))

    # -- flush, merge, compact --------------------------------------------------------------------
    def flush(self) -> bool:
        """Turn the write buffer into a segment and publish a new generation (False: nothing)."""
        self._check_open()
        with self._append_lock:  # everything acknowledged so far is in the flush
            self._wal.sync_through(self._wal.position)
            with self._apply_lock:
                if self._pending:
                    self._apply_through(self._pending[-1][0])
                return self._flush_locked()

    def _flush_locked(self) -> bool:
        table = self._buffer.table(len(self._buffer.entries), self._schema)
        if not len(table) and not self._buffer.entries and not self._changed:
            return False
        if len(table):
            name = self._new_segment_name()
            segment = self._write_segment(name, table, self._schema)
            crash_point("flush.segment_written")
            self._segments.append(segment)
            self._live[name] = None
            self._n_live[name] = segment.num_docs
            self._tombstones[name] = None
        self._write_generation(flushed_seq=self._applied_seq)
        self._buffer = WriteBuffer(
            self.codec.dtype, self.config.dense_dim, len(self.vocab), self.config.block_size
        )
        self._buffer_live = {}
        self._publish()
        self.store.checkpoint()
        self._wal.rotate()
        self._wal.drop_through(self._flushed_seq)
        self._merge_wanted.set()
        return True

    def _write_segment(self, name: str, table: DocTable, schema: Schema) -> Segment:
        return Segment.write(
            self._segment_path(name),
            name,
            table,
            vocab=self.vocab,
            codec=self.codec,
            block_size=self.config.block_size,
            schema=schema,
        )

    def _new_segment_name(self) -> str:
        name = f"seg-{self._next_segment:06d}"
        self._next_segment += 1
        return name

    def _write_generation(self, *, flushed_seq: int, retired: set[str] | None = None) -> None:
        """Persist changed tombstones and publish the next manifest (apply lock held); then
        delete the files the old manifest named and this one does not, and ``retired`` (files
        of segments already taken out of the in-memory state, by a merge)."""
        old_files = self._referenced_files() | (retired or set())  # before tombstones change
        for name in sorted(self._changed):
            live = self._live.get(name)
            if live is not None and name in self._tombstones:
                self._tombstones[name] = write_tombstones(self.path, name, live)
        self._changed.clear()
        crash_point("tombstones.written")
        self._generation += 1
        self._flushed_seq = flushed_seq
        write_manifest(
            self.path,
            {
                "generation": self._generation,
                "flushed_seq": flushed_seq,
                "segments": [
                    {
                        "name": s.name,
                        "num_docs": s.num_docs,
                        "live_docs": self._n_live[s.name],
                        "tombstones": self._tombstones[s.name],
                    }
                    for s in self._segments
                ],
                "schema": self._schema.to_json(),
                "next_segment": self._next_segment,
            },
        )
        for path in old_files - self._referenced_files():
            target = self.path / path
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def _referenced_files(self) -> set[str]:
        files = {f"{SEGMENTS}/{s.name}" for s in self._segments}
        files |= {t["file"] for t in self._tombstones.values() if t}
        return files

    def merge(self, *, everything: bool = False) -> int:
        """Run merges the tiered policy asks for (``everything``: one merge of all segments,
        dropping every deleted document). Returns how many segments were merged away."""
        self._check_open()
        merged = 0
        while True:
            done = self._merge_once(everything)
            merged += done
            if not done or everything:
                return merged

    def _merge_once(self, everything: bool) -> int:
        with self._merge_lock:
            with self._apply_lock:
                sources = pick_merge(
                    self._segments, self._n_live, self.config, everything=everything
                )
                if not sources:
                    return 0
                captured = {
                    s.name: (None if self._live[s.name] is None else self._live[s.name].copy())
                    for s in sources
                }
                schema = self._schema
                name = self._new_segment_name()
            tables = [
                s.table(
                    np.arange(s.num_docs)
                    if captured[s.name] is None
                    else np.flatnonzero(captured[s.name])
                )
                for s in sources
            ]
            table = DocTable.merge(tables, schema)
            merged = None
            if len(table):
                merged = self._write_segment(name, table, schema)
            crash_point("merge.segment_written")
            with self._apply_lock:
                if merged is not None:
                    live = np.ones(merged.num_docs, dtype=np.uint8)
                    for s in sources:  # deletes that arrived while the merge ran
                        now = self._live[s.name]
                        if now is None:
                            continue
                        kept = (
                            np.arange(s.num_docs)
                            if captured[s.name] is None
                            else np.flatnonzero(captured[s.name])
                        )
                        gone = kept[now[kept] == 0]
                        if gone.size:
                            ids = [b.decode("utf-8") for b in s.ids[gone].tolist()]
                            live[merged.positions(id_keys(ids))] = 0
                    dead = int(merged.num_docs - live.sum())
                    self._live[name] = live if dead else None
                    self._n_live[name] = merged.num_docs - dead
                    self._tombstones[name] = None
                    if dead:
                        self._changed.add(name)
                first = self._segments.index(sources[0])
                keep = [s for s in self._segments if s not in sources]
                if merged is not None:
                    keep.insert(min(first, len(keep)), merged)
                retired = self._referenced_files()  # the sources' files, gone after the manifest
                for s in sources:
                    self._live.pop(s.name, None)
                    self._n_live.pop(s.name, None)
                    self._tombstones.pop(s.name, None)
                    self._changed.discard(s.name)
                self._segments = keep
                self._write_generation(flushed_seq=self._flushed_seq, retired=retired)
                self._publish()
            return len(sources)

    def _merge_loop(self) -> None:
        while not self._closed:
            self._merge_wanted.wait(timeout=1.0)
            self._merge_wanted.clear()
            try:
                while not self._closed and self._merge_once(False):
                    pass
            except Exception as exc:  # a failed merge leaves the old segments in place
                self.recovery_notes.append(f"background merge failed: {exc}")

    def compact(self) -> dict[str, Any]:
        """Flush, merge every segment into one without deleted documents, reclaim log and store
        space. Returns :meth:`info` afterwards."""
        self.flush()
        self.merge(everything=True)
        with self._apply_lock:
            self._wal.rotate()
            self._wal.drop_through(self._flushed_seq)
            self.store.checkpoint()
        return self.info()

    # -- reads ----------------------------------------------------------------------------------
    @property
    def schema(self) -> Schema:
        return self._snapshot.schema

    def __len__(self) -> int:
        return self._snapshot.num_live

    def count(self, filter: Any = None) -> int:
        snap = self._snapshot
        flt = None if filter is None else parse_filter(filter, snap.schema)
        return snap.count(flt)

    def info(self) -> dict[str, Any]:
        """Live and deleted documents, segments, bytes on disk, log size."""
        snap = self._snapshot
        buffered = snap.num_buffered
        seg_docs = sum(v.segment.num_docs for v in snap.segments)
        seg_live = sum(v.n_live for v in snap.segments)
        return {
            "path": str(self.path),
            "live_docs": seg_live + buffered,
            "deleted_docs": seg_docs - seg_live,
            "buffered_docs": buffered,
            "segments": [
                {"name": v.segment.name, "docs": v.segment.num_docs, "live": v.n_live}
                for v in snap.segments
            ],
            "segment_bytes": sum(v.segment.nbytes for v in snap.segments),
            "log_bytes": self._wal.size_bytes,
            "store_bytes": sum(
                p.stat().st_size for p in self.path.glob(STORE_FILE + "*") if p.is_file()
            ),
            "applied_seq": snap.seq,
            "flushed_seq": self._flushed_seq,
            "generation": self._generation,
            "schema": snap.schema.to_json(),
            "query_mode": self.query_mode,
            "quantization": self.codec.kind,
            "dense_dim": self.config.dense_dim,
        }

    @property
    def query_mode(self) -> str | None:
        encoder = self.info_json.get("encoder")
        return None if encoder is None else str(encoder["config"]["query_mode"])

    def query_vector(self, query: str | Mapping[str, float] | TermWeights) -> TermWeights:
        """A query as term ids and weights (text through the collection's query side)."""
        if isinstance(query, TermWeights):
            return query
        if isinstance(query, str):
            if self.info_json.get("encoder") is None:
                raise InputError("this collection has no model: query with {token: weight}")
            return self.query_encoder.encode_one(query)
        if isinstance(query, Mapping):
            return dict_query(query, self.vocab)
        raise InputError(f"a query is text or {{token: weight}}, got {type(query).__name__}")

    def search(
        self,
        query: str | Mapping[str, float] | TermWeights | None = None,
        k: int = 10,
        *,
        filter: Any = None,
        mode: str = "sparse",
        dense: np.ndarray | Sequence[float] | None = None,
        fusion: Any = None,
        with_payload: bool = False,
        plan: str = "auto",
        prf: PrfConfig | None = None,
        heap_factor: float = 1.0,
    ) -> list[Hit] | list[Match]:
        """Exact top-k over the live documents matching ``filter`` (see docs/collections.md).

        ``mode``: "sparse", "dense" (``dense`` vector, or the query text through the dense
        model) or "hybrid" (both, fused by ``fusion``, an :class:`lsr.retrieval.FusionConfig`).
        ``with_payload`` returns :class:`Match` with text and metadata. ``prf``: pseudo-relevance
        feedback (:class:`lsr.collection.prf.PrfConfig`), a second round from the first's top m.
        ``plan``: "auto" (the cheaper exact plan per segment), "taat", "forward", "blockmax"
        (best-first block-max per segment: exact at ``heap_factor`` 1, faster and approximate
        below; every score returned is exact) or "approximate" (blockmax at the measured default:
        0.9 for queries of 8 terms or more, exact for shorter ones).
        """
        snap = self._snapshot
        return run_search(
            self, snap, snap.schema, self.store.fetch, query, k, filter=filter, mode=mode,
            dense=dense, fusion=fusion, with_payload=with_payload, plan=plan, prf=prf,
            heap_factor=heap_factor,
        )  # fmt: skip

    def commit(self, op: records.Op) -> WriteResult:
        """Log and apply an op already validated for this collection (``prepare_upsert`` with its
        vocabulary, settings and schema, or a Delete): what a router over shards sends."""
        if isinstance(op, Delete):
            op = Delete(list(dict.fromkeys(check_ids(op.ids, unique=False))))
        return self._commit(op)

    def dense_query(self, query: Any, dense: Any = None) -> np.ndarray:
        """The dense query vector: ``dense`` checked, else the text ``query`` encoded."""
        dim = self.config.dense_dim
        if dim is None:
            raise InputError("this collection has no dense vectors")
        if dense is not None:
            vector = np.asarray(dense, dtype=np.float32).reshape(-1)
            if vector.shape != (dim,) or not np.all(np.isfinite(vector)):
                raise InputError(f"a dense query is {dim} finite numbers")
            return vector
        if not isinstance(query, str) or "dense" not in self.info_json:
            raise InputError("a dense search needs dense= (a vector) or a text query and model")
        return np.asarray(self.dense_encoder.encode_query([query])[0], dtype=np.float32)

    def vectors(self, ids: Sequence[str]) -> dict[str, DocVector]:
        """``{id: DocVector}`` (sparse terms and weights as stored, dense row) of the live ids."""
        return self._snapshot.vectors(ids)

    def get(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        """``{id: (text, metadata)}`` for the ids that are live documents (None: not stored)."""
        live = self._snapshot.live(ids)
        stored = self.store.fetch([i for i in ids if i in live])
        return {i: stored.get(i, (None, None)) for i in ids if i in live}

    # -- encoders -------------------------------------------------------------------------------
    @property
    def encoder(self) -> Any:
        """The collection's document encoder (loaded on first text upsert)."""
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    manifest = self.info_json.get("encoder")
                    if manifest is None:
                        raise InputError("this collection has no model: upsert vectors=")
                    self._encoder = load_document_encoder(manifest, self.path, self.model)
        return self._encoder

    @property
    def query_encoder(self) -> Any:
        if self._query_encoder is None:
            with self._encoder_lock:
                if self._query_encoder is None:
                    from lsr.encoders.loading import load_query_encoder

                    self._query_encoder = load_query_encoder(
                        self.info_json["encoder"], self.path, model=self.model
                    )
        return self._query_encoder

    @property
    def dense_encoder(self) -> Any:
        if self._dense_encoder is None:
            with self._encoder_lock:
                if self._dense_encoder is None:
                    from lsr.encoders.dense_encoder import DenseEncoder

                    self._dense_encoder = DenseEncoder.from_identity(self.info_json["dense"])
        return self._dense_encoder

    # -- lifecycle ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if getattr(self, "_closed", False):
            raise InputError("the collection is closed", self.path)

    def close(self) -> None:
        """Stop background merges and release the directory (acknowledged writes are durable)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._merge_wanted.set()
        if self._merger is not None:
            self._merger.join()
        with self._append_lock, self._apply_lock:
            self._wal.close()
            self.store.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, live_docs={len(self)})"
