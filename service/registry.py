"""The collections a service process holds open: one directory each under the data directory.

A process *owns* each collection whose lock it could take (it applies that collection's writes;
see :mod:`service.owner`) and *follows* the others read-only (a
:class:`~lsr.collection.reader.CollectionReader`, refreshed before each request, so a write
acknowledged by the owner before a request starts is visible to it). With one process, it owns
everything. Requests share the open objects, whose searches never wait.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsr.collection import Collection
from lsr.errors import IndexFormatError, InputError
from lsr.shards import is_sharded
from service.models import NAME_PATTERN


class NotFound(LookupError):
    """A collection or document that does not exist (HTTP 404)."""


class Conflict(Exception):
    """A collection that already exists (HTTP 409)."""


def _held_elsewhere(exc: InputError) -> bool:
    return "open in another process" in str(exc)


def exists(path: Path) -> bool:
    """Whether ``path`` holds a collection (plain or sharded)."""
    return (path / "collection.json").is_file() or is_sharded(path)


def open_writer(path: Path, background_merge: bool) -> Any:
    """The collection at ``path`` opened to write (a sharded one: every shard)."""
    if is_sharded(path):
        from lsr.shards.collection import ShardedCollection

        return ShardedCollection.open(path, background_merge=background_merge)
    return Collection.open(path, background_merge=background_merge)


def open_follower(path: Path) -> Any:
    """The collection at ``path`` followed read-only (its writer is another process)."""
    if is_sharded(path):
        from lsr.shards.collection import ShardedCollection

        return ShardedCollection.open(path, read_only=True, verify=False)
    from lsr.collection.reader import CollectionReader

    return CollectionReader.open(path)


def applied(collection: Any, seq: int, shard_seqs: list[int] | None) -> bool:
    """Whether a followed collection shows the write that returned ``seq`` (``shard_seqs``:
    a sharded collection's per-shard log positions)."""
    if shard_seqs is not None:
        return all(a >= b for a, b in zip(collection.refresh(), shard_seqs, strict=True))
    return collection.snapshot().seq >= seq


class Registry:
    """Open collections by name, owned or followed; thread-safe."""

    def __init__(
        self,
        data_dir: Path,
        *,
        background_merge: bool = True,
        on_owned: Callable[[str], None] | None = None,
        on_released: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.background_merge = background_merge
        self.on_owned = on_owned or (lambda name: None)
        self.on_released = on_released or (lambda name: None)
        self._open: dict[str, Any] = {}  # Collection (owned) or CollectionReader (followed)
        self._owned: set[str] = set()
        self._lock = threading.RLock()

    def _path(self, name: str) -> Path:
        if not re.fullmatch(NAME_PATTERN, name):
            raise InputError(f"collection names are 1-64 of [A-Za-z0-9_.-], got {name!r}")
        return self.data_dir / name

    def open_all(self) -> list[str]:
        """Open every collection in the data directory (start-up); returns their names."""
        for entry in sorted(self.data_dir.iterdir()):
            if exists(entry):
                self.get(entry.name)
        return self.names()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    def owns(self, name: str) -> bool:
        with self._lock:
            return name in self._owned

    def _open_one(self, name: str, path: Path) -> Any:
        """Own the collection if its lock is free, else follow its owner."""
        try:
            collection = open_writer(path, self.background_merge)
        except InputError as exc:
            if not _held_elsewhere(exc):
                raise
            return open_follower(path)
        self._owned.add(name)
        self.on_owned(name)
        return collection

    def get(self, name: str) -> Any:
        """The open collection (a followed one refreshed first: it shows every acknowledged
        write); NotFound when there is none."""
        path = self._path(name)
        with self._lock:
            collection = self._open.get(name)
            if collection is None:
                if not exists(path):
                    raise NotFound(f"no collection named {name!r}")
                collection = self._open_one(name, path)
                self._open[name] = collection
            owned = name in self._owned
        if not owned:
            try:
                collection.refresh()
            except (FileNotFoundError, IndexFormatError, InputError):
                if exists(path):
                    raise
                self._forget(name, collection)  # its owner dropped it
                raise NotFound(f"no collection named {name!r}") from None
        return collection

    def _forget(self, name: str, collection: Any) -> None:
        with self._lock:
            if self._open.get(name) is collection:
                del self._open[name]
                collection.close()

    def take_over(self, name: str) -> bool:
        """Own a followed collection whose owner has gone (True), or keep following (False)."""
        path = self._path(name)
        with self._lock:
            if name in self._owned:
                return True
            follower = self._open.get(name)
            try:
                collection = open_writer(path, self.background_merge)
            except InputError as exc:
                if _held_elsewhere(exc):
                    return False
                raise
            if follower is not None:
                follower.close()
            self._open[name] = collection
            self._owned.add(name)
            self.on_owned(name)
            return True

    def wait_for(
        self, name: str, seq: int, shard_seqs: list[int] | None = None, timeout: float = 30.0
    ) -> None:
        """Refresh a followed collection until it has applied a forwarded write (``seq``, or
        ``shard_seqs`` for a sharded collection)."""
        deadline = time.monotonic() + timeout
        while True:
            collection = self.get(name)
            if name in self._owned or applied(collection, seq, shard_seqs):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name!r}: write {seq} not visible after {timeout:.0f} s")
            time.sleep(0.002)

    def create(self, name: str, *, shards: int | None = None, **options: Any) -> Any:
        """A new collection (``shards``: a sharded collection of that many shards)."""
        path = self._path(name)
        with self._lock:
            if name in self._open or path.exists():
                raise Conflict(f"collection {name!r} already exists")
            if shards is None:
                Collection.create(path, **options).close()
            else:
                from lsr.shards.layout import create_sharded

                create_sharded(path, shards, **options)
        return self.get(name)

    def drop(self, name: str) -> None:
        """Close and delete an owned collection (followers find it gone)."""
        path = self._path(name)
        with self._lock:
            collection = self._open.pop(name, None)
            if collection is None and not exists(path):
                raise NotFound(f"no collection named {name!r}")
            if collection is not None:
                collection.close()
            if name in self._owned:
                self._owned.discard(name)
                self.on_released(name)
            shutil.rmtree(path)

    def close(self) -> None:
        with self._lock:
            for name, collection in self._open.items():
                collection.close()
                if name in self._owned:
                    self.on_released(name)
            self._open.clear()
            self._owned.clear()
