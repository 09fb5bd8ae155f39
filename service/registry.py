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
from service.models import NAME_PATTERN


class NotFound(LookupError):
    """A collection or document that does not exist (HTTP 404)."""


class Conflict(Exception):
    """A collection that already exists (HTTP 409)."""


def _held_elsewhere(exc: InputError) -> bool:
    return "open in another process" in str(exc)


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
            if (entry / "collection.json").is_file():
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
            collection = Collection.open(path, background_merge=self.background_merge)
        except InputError as exc:
            if not _held_elsewhere(exc):
                raise
            from lsr.collection.reader import CollectionReader

            return CollectionReader.open(path)
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
                if not (path / "collection.json").is_file():
                    raise NotFound(f"no collection named {name!r}")
                collection = self._open_one(name, path)
                self._open[name] = collection
            owned = name in self._owned
        if not owned:
            try:
                collection.refresh()
            except (FileNotFoundError, IndexFormatError, InputError):
                if (path / "collection.json").is_file():
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
                collection = Collection.open(path, background_merge=self.background_merge)
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

    def wait_for(self, name: str, seq: int, timeout: float = 30.0) -> None:
        """Refresh a followed collection until it has applied ``seq`` (a forwarded write)."""
        deadline = time.monotonic() + timeout
        while True:
            collection = self.get(name)
            if name in self._owned or collection.snapshot().seq >= seq:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name!r}: write {seq} not visible after {timeout:.0f} s")
            time.sleep(0.002)

    def create(self, name: str, **options: Any) -> Collection:
        path = self._path(name)
        with self._lock:
            if name in self._open or path.exists():
                raise Conflict(f"collection {name!r} already exists")
            Collection.create(path, **options).close()
        return self.get(name)

    def drop(self, name: str) -> None:
        """Close and delete an owned collection (followers find it gone)."""
        path = self._path(name)
        with self._lock:
            collection = self._open.pop(name, None)
            if collection is None and not (path / "collection.json").is_file():
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
