"""ShardedCollection: N live collections behind one router, answering as one collection would.

Documents live in shard ``shard_of(id, N)`` (:mod:`lsr.shards.layout`). The router encodes each
query once and sends the same term ids and weights (or dense vector) to every shard; each shard
returns its exact top k, ranked by (score desc, id asc), and the router keeps the best k of the
union by the same key. Because every shard shares the collection's fixed codec and sums scores
in ascending term order, a document scores the same bits in any shard, so the merged list equals
one collection's: ids, scores and ties. Hybrid fusion and pseudo-relevance feedback run once, at
the router, over the merged per-leg lists (:func:`lsr.collection.search_view.search_view`,
:func:`lsr.collection.prf.prf_search`), never per shard.

Writes are validated and encoded once at the router (one schema across shards), split by shard
and committed to each owning shard in parallel; a call returns when every shard it touched has
made its part durable. Writes through one router are serialised; a search that runs while a
write is being applied may see some shards' part of it before others'.

Shards are reached through a small interface (:class:`Shard`): :class:`LocalShard` wraps a
:class:`~lsr.collection.Collection` (or a read-only
:class:`~lsr.collection.reader.CollectionReader`) in this process; ``lsr.shards.ray_serve``
reaches shards held by Ray Serve replicas.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from lsr.collection import records
from lsr.collection.collection import Collection, Match, WriteResult
from lsr.collection.filters import Filter, parse_filter
from lsr.collection.prepare import check_ids
from lsr.collection.prf import PrfConfig
from lsr.collection.reader import CollectionReader
from lsr.collection.schema import Schema
from lsr.collection.search_view import run_search
from lsr.collection.snapshot import DocVector, best_hits
from lsr.errors import IndexFormatError, InputError
from lsr.shards.layout import create_sharded, partition, read_layout, shard_dir
from lsr.sparse import SparseBatch, TermWeights
from lsr.types import Hit

T = TypeVar("T")
Pairs = list[tuple[str, float]]


class ShardView(Protocol):
    """What one shard answers for a search (a collection's Snapshot has all of it)."""

    def search_sparse(
        self, terms: np.ndarray, weights: np.ndarray, k: int, flt: Filter | None = None, *,
        plan: Any = "auto",
    ) -> Pairs: ...  # fmt: skip

    def search_dense(self, vector: np.ndarray, k: int, flt: Filter | None = None) -> Pairs: ...

    def count(self, flt: Filter | None) -> int: ...

    def matching_ids(self, flt: Filter | None) -> list[str]: ...

    def vectors(self, ids: Sequence[str]) -> dict[str, DocVector]: ...

    def live(self, ids: Sequence[str]) -> set[str]: ...


class Shard(Protocol):
    """One shard as the router sees it (in this process, or a remote replica)."""

    def view(self) -> ShardView: ...

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]: ...

    def commit(self, op: records.Op) -> WriteResult: ...

    def schema(self) -> Schema: ...

    def info(self) -> dict[str, Any]: ...

    def refresh(self) -> int: ...

    def compact(self) -> dict[str, Any]: ...

    def flush(self) -> bool: ...

    def merge(self, everything: bool) -> int: ...

    def close(self) -> None: ...


class LocalShard:
    """A shard in this process: a Collection (it writes) or a CollectionReader (it follows)."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def view(self) -> ShardView:
        return self.collection.snapshot()

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        return self.collection.store.fetch(ids)

    def commit(self, op: records.Op) -> WriteResult:
        return self.collection.commit(op)

    def schema(self) -> Schema:
        return self.collection.schema

    def info(self) -> dict[str, Any]:
        return self.collection.info()

    def refresh(self) -> int:
        if isinstance(self.collection, CollectionReader):
            return self.collection.refresh()
        return self.collection.snapshot().seq

    def compact(self) -> dict[str, Any]:
        return self.collection.compact()

    def flush(self) -> bool:
        return self.collection.flush()

    def merge(self, everything: bool) -> int:
        return self.collection.merge(everything=everything)

    def close(self) -> None:
        self.collection.close()


@dataclass(frozen=True)
class ShardedWriteResult:
    """An acknowledged write: ``seq`` counts this router's writes; ``shard_seqs`` is each shard's
    log position after it (0 where the write did not touch the shard)."""

    seq: int
    count: int
    shard_seqs: tuple[int, ...]


class ShardedView:
    """One search's view of every shard: each leg fans out and the best k are kept."""

    def __init__(self, parts: Sequence[ShardView], fan_out: Callable[..., list[Any]]) -> None:
        self.parts = list(parts)
        self._fan_out = fan_out

    def _each(self, call: Callable[[ShardView], T]) -> list[T]:
        return self._fan_out(call, self.parts)

    def search_sparse(
        self, terms: np.ndarray, weights: np.ndarray, k: int, flt: Filter | None = None, *,
        plan: Any = "auto",
    ) -> Pairs:  # fmt: skip
        lists = self._each(lambda p: p.search_sparse(terms, weights, k, flt, plan=plan))
        return best_hits(list(itertools.chain.from_iterable(lists)), k)

    def search_dense(self, vector: np.ndarray, k: int, flt: Filter | None = None) -> Pairs:
        lists = self._each(lambda p: p.search_dense(vector, k, flt))
        return best_hits(list(itertools.chain.from_iterable(lists)), k)

    def count(self, flt: Filter | None) -> int:
        return sum(self._each(lambda p: p.count(flt)))

    def matching_ids(self, flt: Filter | None) -> list[list[str]]:
        """Per shard, the live ids matching ``flt``."""
        return self._each(lambda p: p.matching_ids(flt))

    def _by_owner(self, ids: Sequence[str], call: Callable[[ShardView, list[str]], T]) -> list[T]:
        groups = partition(ids, len(self.parts))
        asked = [(s, [ids[i] for i in g]) for s, g in enumerate(groups) if g]
        return self._fan_out(lambda item: call(self.parts[item[0]], item[1]), asked)

    def vectors(self, ids: Sequence[str]) -> dict[str, DocVector]:
        found: dict[str, DocVector] = {}
        for part in self._by_owner(ids, lambda p, sub: p.vectors(sub)):
            found.update(part)
        return {i: found[i] for i in ids if i in found}

    def live(self, ids: Sequence[str]) -> set[str]:
        return set().union(*self._by_owner(ids, lambda p, sub: p.live(sub)))


def _union_schema(schemas: Sequence[Schema], where: Path) -> Schema:
    fields: dict[str, str] = {}
    for schema in schemas:
        for name, kind in schema.fields.items():
            if fields.setdefault(name, kind) != kind:
                raise IndexFormatError(f"{where}: shards disagree on the kind of field {name!r}")
    return Schema(fields)


class ShardedCollection:
    """A sharded collection (see the module docstring); the API of
    :class:`~lsr.collection.Collection` for searches and writes."""

    @classmethod
    def create(cls, path: str | Path, shards: int, **create: Any) -> ShardedCollection:
        """Create an empty sharded collection of ``shards`` shards and open it; ``create`` are
        :meth:`Collection.create`'s keyword arguments."""
        create_sharded(path, shards, **create)
        return cls.open(path)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        verify: bool = True,
        background_merge: bool = False,
        model: str | None = None,
        read_only: bool = False,
    ) -> ShardedCollection:
        """Open every shard in this process: as writer (each shard's lock) or, with
        ``read_only``, as readers that follow another process's writers."""
        path = Path(path).absolute()
        layout = read_layout(path)
        opened: list[Collection] = []
        try:
            for shard in range(layout["shards"]):
                where = shard_dir(path, shard)
                if read_only:
                    opened.append(CollectionReader.open(where, model=model, verify=verify))
                else:
                    opened.append(
                        Collection.open(
                            where, verify=verify, background_merge=background_merge, model=model
                        )
                    )
        except BaseException:
            for collection in opened:
                collection.close()
            raise
        sharded = cls(path, [LocalShard(c) for c in opened], opened[0], read_only=read_only)
        sharded.recovery_notes = [
            f"shard {s}: {note}" for s, c in enumerate(opened) for note in c.recovery_notes
        ]
        return sharded

    def __init__(
        self,
        path: Path,
        shards: Sequence[Shard],
        identity: Collection,
        *,
        read_only: bool = False,
        own_identity: bool = False,
    ) -> None:
        """``identity``: a collection (or reader) of shard 0, whose settings, vocabulary and
        encoders every shard shares; ``own_identity``: close it on :meth:`close`."""
        self.path = Path(path)
        self.shards = list(shards)
        self.n_shards = len(self.shards)
        self.read_only = read_only
        self._identity = identity
        self._own_identity = own_identity
        self.info_json = identity.info_json
        self.config = identity.config
        self.codec = identity.codec
        self.vocab = identity.vocab
        self.model = identity.model
        self._pool = (
            ThreadPoolExecutor(max_workers=self.n_shards, thread_name_prefix="lsr-shard")
            if self.n_shards > 1
            else None
        )
        self._write_lock = threading.Lock()
        self._writes = 0
        self.recovery_notes: list[str] = []
        self._closed = False
        self._schema = _union_schema(self._fan_out(lambda s: s.schema(), self.shards), self.path)

    def _fan_out(self, call: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``call`` on each item, on the shard threads when there are several."""
        if self._pool is None or len(items) <= 1:
            return [call(item) for item in items]
        rest = [self._pool.submit(call, item) for item in items[1:]]
        first = call(items[0])  # this thread takes one part itself: one hand-off fewer
        return [first, *(future.result() for future in rest)]

    # -- identity and encoders (shared by every shard) ------------------------------------------
    @property
    def query_mode(self) -> str | None:
        return self._identity.query_mode

    def query_vector(self, query: str | Mapping[str, float] | TermWeights) -> TermWeights:
        return self._identity.query_vector(query)

    def dense_query(self, query: Any, dense: Any = None) -> np.ndarray:
        return self._identity.dense_query(query, dense)

    @property
    def encoder(self) -> Any:
        return self._identity.encoder

    @property
    def query_encoder(self) -> Any:
        return self._identity.query_encoder

    @property
    def dense_encoder(self) -> Any:
        return self._identity.dense_encoder

    @property
    def schema(self) -> Schema:
        return self._schema

    # -- reads ----------------------------------------------------------------------------------
    def snapshot(self) -> ShardedView:
        """A view of every shard's current state (what one search reads)."""
        self._check_open()
        return ShardedView(self._fan_out(lambda s: s.view(), self.shards), self._fan_out)

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
        """Exact top-k over every shard, equal to one collection's (arguments as
        :meth:`Collection.search`)."""
        return run_search(
            self, self.snapshot(), self._schema, self._fetch, query, k, filter=filter, mode=mode,
            dense=dense, fusion=fusion, with_payload=with_payload, plan=plan, prf=prf,
            heap_factor=heap_factor,
        )  # fmt: skip

    def _fetch(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        groups = partition(ids, self.n_shards)
        asked = [(s, [ids[i] for i in g]) for s, g in enumerate(groups) if g]
        found: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
        for part in self._fan_out(lambda item: self.shards[item[0]].fetch(item[1]), asked):
            found.update(part)
        return found

    def __len__(self) -> int:
        return self.count()

    def count(self, filter: Any = None) -> int:
        flt = None if filter is None else parse_filter(filter, self._schema)
        return self.snapshot().count(flt)

    def vectors(self, ids: Sequence[str]) -> dict[str, DocVector]:
        """``{id: DocVector}`` of the live ids, each from the shard that owns it."""
        return self.snapshot().vectors(list(ids))

    def get(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        """``{id: (text, metadata)}`` for the ids that are live documents."""
        ids = list(ids)
        live = self.snapshot().live(ids)
        stored = self._fetch([i for i in ids if i in live])
        return {i: stored.get(i, (None, None)) for i in ids if i in live}

    def info(self) -> dict[str, Any]:
        """Totals over the shards, and each shard's own info."""
        infos = self._fan_out(lambda s: s.info(), self.shards)
        total = {
            key: sum(i[key] for i in infos)
            for key in ("live_docs", "deleted_docs", "buffered_docs", "segment_bytes", "log_bytes")
        }
        return {
            "path": str(self.path),
            **total,
            "store_bytes": sum(i["store_bytes"] for i in infos),
            "segments": [dict(seg, shard=s) for s, i in enumerate(infos) for seg in i["segments"]],
            "applied_seq": self._writes,
            "schema": self._schema.to_json(),
            "query_mode": self.query_mode,
            "quantization": self.codec.kind,
            "dense_dim": self.config.dense_dim,
            "shards": [
                {"shard": s, "live_docs": i["live_docs"], "applied_seq": i["applied_seq"]}
                for s, i in enumerate(infos)
            ],
        }

    def refresh(self) -> tuple[int, ...]:
        """Readers catch up with their writers; returns each shard's applied seq."""
        return tuple(self._fan_out(lambda s: s.refresh(), self.shards))

    # -- writes ---------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise InputError("this sharded collection is open read-only", self.path)

    def _commit(self, parts: list[tuple[int, records.Op]]) -> ShardedWriteResult:
        results = self._fan_out(lambda item: self.shards[item[0]].commit(item[1]), parts)
        seqs = [0] * self.n_shards
        for (shard, _), result in zip(parts, results, strict=True):
            seqs[shard] = result.seq
        self._writes += 1
        return ShardedWriteResult(self._writes, sum(r.count for r in results), tuple(seqs))

    def upsert(
        self,
        ids: Sequence[str],
        *,
        vectors: SparseBatch | Sequence[Mapping[str, float]] | None = None,
        texts: Sequence[str] | None = None,
        dense: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> ShardedWriteResult:
        """Insert or replace documents (as :meth:`Collection.upsert`): validated and encoded once,
        then each shard's part made durable; returns when all of them are."""
        self._check_writable()
        with self._write_lock:
            op = self._identity.prepare(ids, vectors, texts, dense, metadata, self._schema)
            self._schema = self._schema.extend(op.metadata)
            groups = partition(op.ids, self.n_shards)
            parts: list[tuple[int, records.Op]] = [
                (s, records.take(op, g)) for s, g in enumerate(groups) if g
            ]
            return self._commit(parts)

    def delete(self, ids: Sequence[str]) -> ShardedWriteResult:
        """Delete documents by id (unknown ids are ignored); ``count`` is how many existed."""
        self._check_writable()
        ids = list(dict.fromkeys(check_ids(ids, unique=False)))
        with self._write_lock:
            groups = partition(ids, self.n_shards)
            parts: list[tuple[int, records.Op]] = [
                (s, records.Delete([ids[i] for i in g])) for s, g in enumerate(groups) if g
            ]
            return self._commit(parts)

    def delete_by_filter(self, filter: Any) -> ShardedWriteResult:
        """Delete every live document matching ``filter`` (resolved under the router's write
        lock, so no write through this router lands between matching and deleting)."""
        self._check_writable()
        with self._write_lock:
            flt = parse_filter(filter, self._schema)
            matched = self.snapshot().matching_ids(flt)
            parts: list[tuple[int, records.Op]] = [
                (s, records.Delete(found)) for s, found in enumerate(matched) if found
            ]
            return self._commit(parts)

    def flush(self) -> bool:
        self._check_writable()
        return any(self._fan_out(lambda s: s.flush(), self.shards))

    def merge(self, *, everything: bool = False) -> int:
        """Run due merges in every shard (``everything``: each into one segment); merges done."""
        self._check_writable()
        return sum(self._fan_out(lambda s: s.merge(everything), self.shards))

    def compact(self) -> dict[str, Any]:
        """Flush, merge each shard into one segment and trim its log."""
        self._check_writable()
        self._fan_out(lambda s: s.compact(), self.shards)
        return self.info()

    # -- lifecycle ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InputError("the sharded collection is closed", self.path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for shard in self.shards:
            shard.close()
        if self._own_identity:
            self._identity.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ShardedCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedCollection({str(self.path)!r}, shards={self.n_shards})"
