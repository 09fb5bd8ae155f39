"""CollectionReader: a read-only follower of a collection that another process writes.

Any number of processes may open a reader while one writer process has the collection open. A
reader takes no lock and writes nothing in the collection directory: it maps the current
generation's segments read-only, loads their tombstones and replays the log records after the
manifest's ``flushed_seq`` into a buffer of its own, exactly as the writer did; ``refresh()``
then follows the writer (new log records, or a new generation after a flush or merge). Text and
metadata come from the SQLite store read-only, or from the reader's own log records for
documents written since the last flush (the writer applies the store after the log).
Semantics: docs/collections.md, "Readers in other processes".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from lsr.collection import records
from lsr.collection.collection import LOG_DIR, STORE_FILE, Collection, WriteResult
from lsr.collection.create import COLLECTION_FILE
from lsr.collection.manifest import MANIFEST, read_manifest, read_tombstones
from lsr.collection.records import Delete
from lsr.collection.schema import Schema
from lsr.collection.segment import Segment
from lsr.collection.snapshot import Snapshot, WriteBuffer
from lsr.collection.store import DocStoreReader, Payload
from lsr.collection.wal import log_name, read_records
from lsr.errors import IndexFormatError, InputError

ATTEMPTS = 20  # reloads in a row that may find files gone before a refresh gives up

# what one load of a generation builds (swapped into the reader as a whole)
_STATE = (
    "_generation",
    "_flushed_seq",
    "_next_segment",
    "_schema",
    "_segments",
    "_live",
    "_n_live",
    "_tombstones",
    "_fresh",
    "_changed",
    "_buffer",
    "_buffer_live",
    "_results",
    "_applied_seq",
    "_log_pos",
    "_overlay",
)

# text and metadata of the documents the reader's log records wrote (None: deleted)
Overlay = dict[str, Payload | None]


class _LogGap(IndexFormatError):
    """Records the reader needs are not in the log (dropped after a flush it has not seen)."""


@dataclass(frozen=True)
class _LogPos:
    """Where a reader is in the log: the file it reads, the byte after its last complete record
    there, and that record's seq (``path`` None: no file yet, the next is ``last_seq + 1``)."""

    path: Path | None
    offset: int
    last_seq: int


def _log_files(directory: Path) -> list[int]:
    """First seqs of the log files in ``directory``, ascending."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())


def _start(directory: Path, after_seq: int) -> tuple[_LogPos, list[int]]:
    """The position to read records after ``after_seq`` from, and the files it saw."""
    firsts = _log_files(directory)
    usable = [f for f in firsts if f <= after_seq + 1]
    if usable:
        return _LogPos(directory / log_name(usable[-1]), 0, usable[-1] - 1), firsts
    if firsts:
        raise _LogGap(
            f"{directory}: write-ahead log starts at sequence number {firsts[0]} but records "
            f"after {after_seq} are needed"
        )
    return _LogPos(None, 0, after_seq), firsts


def _read_log(directory: Path, pos: _LogPos) -> tuple[list[tuple[int, bytes]], _LogPos]:
    """Every complete record after ``pos`` and the position after them (FileNotFoundError if
    the writer dropped a file the reader still needed)."""
    out: list[tuple[int, bytes]] = []
    path, offset, last = pos.path, pos.offset, pos.last_seq
    while True:
        following = directory / log_name(last + 1)
        if path is None:
            if not following.is_file():
                break
            path, offset = following, 0
            continue
        # the writer fills a file before it creates the next: if the next exists (checked
        # before reading), this one is complete
        final = following != path and following.is_file()
        got: list[tuple[int, bytes]] = []
        problem = None
        if os.stat(path).st_size != offset:
            got, offset, problem = read_records(path, offset, last + 1)
        if got:
            out.extend(got)
            last = got[-1][0]
            continue
        if not final:
            break
        if problem is not None:
            raise IndexFormatError(
                f"{path}: corrupt write-ahead log record at byte offset {offset} ({problem}) "
                "in a log file that is not the last"
            )
        path, offset = following, 0
    return out, _LogPos(path, offset, last)


def _note(overlay: Overlay, op: records.Op) -> None:
    if isinstance(op, Delete):
        for doc_id in op.ids:
            overlay[doc_id] = None
        return
    for doc_id, text, meta in zip(op.ids, op.texts, op.metadata, strict=True):
        overlay[doc_id] = (text, meta)


class _Payloads:
    """The reader's document store: its log records' payloads first, then SQLite."""

    def __init__(self, store: DocStoreReader) -> None:
        self.store = store
        self.overlay: Overlay = {}

    def fetch(self, ids: Sequence[str]) -> dict[str, Payload]:
        overlay = self.overlay
        out: dict[str, Payload] = {}
        rest = []
        for doc_id in ids:
            if doc_id not in overlay:
                rest.append(doc_id)
                continue
            entry = overlay[doc_id]
            if entry is not None and (entry[0] is not None or entry[1] is not None):
                text, meta = entry
                out[doc_id] = (text, None if meta is None else dict(meta))
        out.update(self.store.fetch(rest))
        return out

    def close(self) -> None:
        self.store.close()


class _LogSize:
    """What :meth:`Collection.info` asks of the log."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def size_bytes(self) -> int:
        total = 0
        for first in _log_files(self.directory):
            with contextlib.suppress(FileNotFoundError):  # dropped after a flush
                total += os.stat(self.directory / log_name(first)).st_size
        return total


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CollectionReader(Collection):
    """A read-only view of a collection that follows its writer (see the module docstring).

    Reads (``search``, ``get``, ``vectors``, ``count``, ``info``, ``query_vector``, the
    encoders) are those of :class:`Collection`; writes raise ``InputError``.
    """

    @classmethod
    def open(  # type: ignore[override]
        cls, path: str | Path, *, model: str | None = None, verify: bool = False
    ) -> CollectionReader:
        """Open the collection at ``path`` read-only, while a writer may have it open.

        ``verify`` checks each segment's checksums when the reader first opens it; ``model``:
        where a siamese query model is now, if it moved.
        """
        return cls(Path(path), verify=verify, model=model)

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise InputError("a CollectionReader is read-only: create with Collection.create")

    def __init__(self, path: Path, *, verify: bool = False, model: str | None = None) -> None:
        self.path = path.absolute()
        info_path = self.path / COLLECTION_FILE
        if not info_path.is_file():
            raise IndexFormatError(f"{path}: not an lsr collection (no {COLLECTION_FILE})")
        self._read_identity(info_path, model)
        self._verify = verify
        self._closed = False
        self._merger = None
        self._merge_wanted = threading.Event()
        self._refresh_lock = threading.Lock()
        self._encoder: Any = None
        self._query_encoder: Any = None
        self._dense_encoder: Any = None
        self._encoder_lock = threading.Lock()
        self._wal = _LogSize(self.path / LOG_DIR)
        self.store = _Payloads(DocStoreReader(self.path / STORE_FILE))
        self._segments: list[Segment] = []
        self._manifest_key: tuple[int, int, int, int] | None = None
        with self._refresh_lock:
            self._follow(force=True)

    # the current snapshot; reading it after close() is an error rather than a stale answer
    @property
    def _snapshot(self) -> Snapshot:
        if self._closed:
            raise InputError("the collection reader is closed", self.path)
        return self.__dict__["_current"]

    @_snapshot.setter
    def _snapshot(self, snapshot: Snapshot) -> None:
        self.__dict__["_current"] = snapshot

    def _publish(self) -> None:
        # payloads first: a search between the two steps sees text at least as new as its hits
        self.store.overlay = self._overlay
        super()._publish()

    # -- following the writer -------------------------------------------------------------------
    def refresh(self) -> int:
        """Catch up with the writer: apply the log records appended since the last refresh, or
        load the new generation after a flush or merge. Returns the seq the reader has applied.

        Costs three ``stat`` calls when nothing changed. Searches keep the previous snapshot until
        the next one is published.
        """
        with self._refresh_lock:
            self._check_open()
            self._follow(force=False)
            return self._applied_seq

    def _follow(self, *, force: bool) -> None:
        manifest_path = self.path / MANIFEST
        error: Exception | None = None
        for _ in range(ATTEMPTS):
            key = None
            try:
                if not manifest_path.is_file():
                    read_manifest(self.path)  # raises: not a collection
                key = _stat_key(manifest_path)
                if force or key != self._manifest_key:
                    manifest = read_manifest(self.path)
                    if force or int(manifest["generation"]) != self._generation:
                        self._load(manifest, key)
                        return
                    self._manifest_key = key
                self._catch_up()
                return
            except FileNotFoundError as exc:  # a flush or merge removed what we were reading
                error = exc
            except IndexFormatError as exc:  # a half-removed segment, tombstone, or log gap
                if key is None or _stat_key(manifest_path) == key:
                    raise
                error = exc
            force = True
        raise IndexFormatError(
            f"{self.path}: files kept disappearing while the reader loaded {ATTEMPTS} "
            f"generations in a row (last: {error})"
        )

    def _load(self, manifest: dict[str, Any], key: tuple[int, int, int, int]) -> None:
        """Build the state of ``manifest``'s generation on the side, then swap it in."""
        flushed = int(manifest["flushed_seq"])
        schema = Schema.from_json(manifest["schema"])
        opened = {s.name: s for s in self._segments}
        new = object.__new__(type(self))  # holds the state that Collection._apply works on
        new.__dict__.update(
            _closed=False,
            _generation=int(manifest["generation"]),
            _flushed_seq=flushed,
            _next_segment=int(manifest["next_segment"]),
            _schema=schema,
            _segments=[],
            _live={},
            _n_live={},
            _tombstones={},
            _fresh=set(),
            _changed=set(),
            _buffer=WriteBuffer(
                self.codec.dtype, self.config.dense_dim, len(self.vocab), self.config.block_size
            ),
            _buffer_live={},
            _results={},
        )
        for entry in manifest["segments"]:
            name = entry["name"]
            segment = opened.get(name)
            if segment is None:
                try:
                    segment = Segment.open(
                        self._segment_path(name),
                        name,
                        schema,
                        verify=self._verify,
                        vocab=self.vocab,
                    )
                except IndexFormatError as exc:
                    raise IndexFormatError(f"segment {name} is damaged: {exc}") from None
            tomb = entry.get("tombstones")
            live = read_tombstones(self.path, tomb, segment.num_docs) if tomb else None
            new._segments.append(segment)
            new._live[name] = live
            new._n_live[name] = segment.num_docs if live is None else int(live.sum())
            new._tombstones[name] = tomb
        directory = self.path / LOG_DIR
        pos, firsts = _start(directory, flushed)
        found, pos = _read_log(directory, pos)
        if firsts and firsts[-1] > pos.last_seq + 1:
            raise _LogGap(f"{directory}: records after {pos.last_seq} are missing")
        overlay: Overlay = {}
        applied = flushed
        for seq, payload in found:
            if seq > flushed:
                op = records.decode(payload)
                new._apply(seq, op)
                _note(overlay, op)
                applied = seq
        new._results.clear()
        new.__dict__.update(_applied_seq=applied, _log_pos=pos, _overlay=overlay)
        self.__dict__.update({name: new.__dict__[name] for name in _STATE})
        self._manifest_key = key
        self._publish()

    def _catch_up(self) -> None:
        """Apply the records appended since the last refresh (same generation)."""
        found, pos = _read_log(self.path / LOG_DIR, self._log_pos)
        ops = [(seq, records.decode(p)) for seq, p in found if seq > self._applied_seq]
        self._log_pos = pos
        if not ops:
            return
        overlay = dict(self._overlay)  # the published one stays as it is
        for seq, op in ops:
            self._apply(seq, op)
            _note(overlay, op)
        self._results.clear()
        self._overlay = overlay
        self._applied_seq = ops[-1][0]
        self._publish()

    # -- writes are refused ---------------------------------------------------------------------
    def _read_only(self, what: str) -> NoReturn:
        raise InputError(f"{what}: this collection is open read-only (a CollectionReader)")

    def upsert(self, *args: Any, **kwargs: Any) -> WriteResult:
        self._read_only("upsert")

    def delete(self, ids: Sequence[str]) -> WriteResult:
        self._read_only("delete")

    def delete_by_filter(self, filter: Any) -> WriteResult:
        self._read_only("delete_by_filter")

    def flush(self) -> bool:
        self._read_only("flush")

    def merge(self, *, everything: bool = False) -> int:
        self._read_only("merge")

    def compact(self) -> dict[str, Any]:
        self._read_only("compact")

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the segments' memory maps and the buffer (later reads raise InputError)."""
        with self._refresh_lock:
            if self._closed:
                return
            self._closed = True
            self.store.close()
            self.__dict__.pop("_current", None)
            self._segments, self._live, self._overlay = [], {}, {}
            self._buffer = WriteBuffer(
                self.codec.dtype, self.config.dense_dim, len(self.vocab), self.config.block_size
            )
            self._buffer_live = {}
            self.store.overlay = {}

    def __enter__(self) -> CollectionReader:
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"applied_seq={self._applied_seq}"
        return f"CollectionReader({str(self.path)!r}, {state})"
