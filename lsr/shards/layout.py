"""Where each document of a sharded collection lives, and the directory that holds the shards.

A sharded collection is a directory with ``sharded.json`` and one live collection per shard
(``shard-000``, ``shard-001``, …), all created with the same settings, vocabulary, encoder record
and IDF table, so a document scores the same bits in whichever shard holds it.
A document's shard is ``blake2b-64(id) mod N``: stable across runs, processes and machines
(Python's ``hash`` is salted per process).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lsr.errors import IndexFormatError, InputError
from lsr.io import fsync_path, rename_into_place

SHARDED_FILE = "sharded.json"
FORMAT = "lsr.sharded-collection"
VERSION = 1
HASH = "blake2b-64-mod"
MAX_SHARDS = 1024


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard that owns ``doc_id`` among ``n_shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


def partition(ids: Sequence[str], n_shards: int) -> list[list[int]]:
    """Positions of ``ids`` per shard, in input order."""
    parts: list[list[int]] = [[] for _ in range(n_shards)]
    for position, doc_id in enumerate(ids):
        parts[shard_of(doc_id, n_shards)].append(position)
    return parts


def shard_dir(path: str | Path, shard: int) -> Path:
    return Path(path) / f"shard-{shard:03d}"


def is_sharded(path: str | Path) -> bool:
    return (Path(path) / SHARDED_FILE).is_file()


def check_shard_count(n_shards: Any) -> int:
    if isinstance(n_shards, bool) or not isinstance(n_shards, int):
        raise InputError(f"shards must be an integer from 1 to {MAX_SHARDS}, got {n_shards!r}")
    if not 1 <= n_shards <= MAX_SHARDS:
        raise InputError(f"shards must be an integer from 1 to {MAX_SHARDS}, got {n_shards!r}")
    return n_shards


def read_layout(path: str | Path) -> dict[str, Any]:
    """``sharded.json``, checked (IndexFormatError when it is not a sharded collection)."""
    file = Path(path) / SHARDED_FILE
    try:
        layout = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: not a sharded collection (no sharded.json)") from None
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{file}: unreadable: {exc}") from None
    if layout.get("format") != FORMAT or layout.get("hash") != HASH:
        raise IndexFormatError(f"{file}: not an lsr sharded collection")
    if layout.get("version") != VERSION:
        raise IndexFormatError(f"{file}: unsupported version {layout.get('version')!r}")
    check_shard_count(layout.get("shards"))
    return layout


def create_sharded(path: str | Path, n_shards: int, **create: Any) -> Path:
    """Write an empty sharded collection of ``n_shards`` at ``path``, atomically.

    ``create`` are :meth:`lsr.collection.Collection.create`'s keyword arguments; the first shard
    is created with them (one model load) and copied, so every shard records the same settings.
    """
    from lsr.collection.create import create_collection

    path = Path(path)
    n_shards = check_shard_count(n_shards)
    if path.exists() and any(path.iterdir()):
        raise InputError("already exists and is not empty", path)
    staging = path.with_name(f".{path.name}.creating-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        first = shard_dir(staging, 0)
        create_collection(first, **create)
        for shard in range(1, n_shards):
            shutil.copytree(first, shard_dir(staging, shard))
            fsync_path(shard_dir(staging, shard))
        layout = {
            "format": FORMAT,
            "version": VERSION,
            "hash": HASH,
            "shards": n_shards,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / SHARDED_FILE).write_text(json.dumps(layout, indent=1), encoding="utf-8")
        fsync_path(staging / SHARDED_FILE)
        rename_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
