"""The collections a service process holds open: one directory each under the data directory.

This process is the one writer of every collection it opens (each holds its lock file); all
requests share the open :class:`~lsr.collection.Collection` objects, whose searches never wait.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path
from typing import Any

from lsr.collection import Collection
from lsr.errors import InputError
from service.models import NAME_PATTERN


class NotFound(LookupError):
    """A collection or document that does not exist (HTTP 404)."""


class Conflict(Exception):
    """A collection that already exists (HTTP 409)."""


class Registry:
    """Open collections by name; thread-safe."""

    def __init__(self, data_dir: Path, *, background_merge: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.background_merge = background_merge
        self._open: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        if not re.fullmatch(NAME_PATTERN, name):
            raise InputError(f"collection names are 1-64 of [A-Za-z0-9_.-], got {name!r}")
        return self.data_dir / name

    def open_all(self) -> list[str]:
        """Open every collection in the data directory (start-up); returns their names."""
        for entry in sorted(self.data_dir.iterdir()):
            if (entry / "collection.json").is_file():
                self.get(entry.name)
        return sorted(self._open)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    def get(self, name: str) -> Collection:
        path = self._path(name)
        with self._lock:
            collection = self._open.get(name)
            if collection is None:
                if not (path / "collection.json").is_file():
                    raise NotFound(f"no collection named {name!r}")
                collection = Collection.open(path, background_merge=self.background_merge)
                self._open[name] = collection
            return collection

    def create(self, name: str, **options: Any) -> Collection:
        path = self._path(name)
        with self._lock:
            if name in self._open or path.exists():
                raise Conflict(f"collection {name!r} already exists")
            Collection.create(path, **options).close()
        return self.get(name)

    def drop(self, name: str) -> None:
        path = self._path(name)
        with self._lock:
            collection = self._open.pop(name, None)
            if collection is None and not (path / "collection.json").is_file():
                raise NotFound(f"no collection named {name!r}")
            if collection is not None:
                collection.close()
            shutil.rmtree(path)

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
