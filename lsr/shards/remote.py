"""Shards held by Ray Serve replicas, reached through deployment handles.

Each shard group has a *reader* deployment (any number of replicas; each follows the shard's
files with a :class:`~lsr.collection.reader.CollectionReader`, refreshed before every call) and a
*writer* deployment (one replica, the shard's only writer). :class:`RemoteShard` gives the router
(:class:`~lsr.shards.collection.ShardedCollection`) the :class:`~lsr.shards.collection.Shard`
interface over them. A call whose replica died (killed, node lost) is retried, so Serve routes it
to a live replica or to the restarted one; the answer is then the same as from any replica, since
every replica reads the same files. When no replica answers within the retry budget the call
raises :class:`~lsr.errors.ShardUnavailableError` (HTTP 503) rather than answering from fewer
shards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lsr.collection import records
from lsr.collection.collection import WriteResult
from lsr.collection.filters import Filter
from lsr.collection.schema import Schema
from lsr.collection.snapshot import DocVector
from lsr.errors import ShardUnavailableError

RETRY_SECONDS = 30.0  # a replica restart on a loaded 2-core machine takes a few seconds


def _retryable() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (
        rex.RayActorError,  # includes ActorDiedError and ActorUnavailableError
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.ObjectLostError,
    )


_OFF_LOOP = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lsr-remote")


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def call(handle: Any, method: str, *args: Any, retry_seconds: float = RETRY_SECONDS) -> Any:
    """``handle.method.remote(*args).result()``, retried while replicas are dying; errors raised
    by the replica's code come back as themselves (an InputError stays an InputError). Serve
    refuses blocking waits on an event loop thread, so from there the wait runs on a helper
    thread."""
    if _in_event_loop():
        return _OFF_LOOP.submit(call, handle, method, *args, retry_seconds=retry_seconds).result()
    from ray.exceptions import RayTaskError

    deadline = time.monotonic() + retry_seconds
    pause = 0.05
    while True:
        try:
            return getattr(handle, method).remote(*args).result()
        except RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, _retryable()):
                error: BaseException = cause
            else:
                original = getattr(exc, "cause", None)
                raise (original if isinstance(original, BaseException) else cause) from None
        except _retryable() as exc:
            error = exc
        if time.monotonic() > deadline:
            raise ShardUnavailableError(f"no replica answered {method!r}: {error}") from None
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


class RemoteView:
    """One shard's search calls, answered by any replica of its reader deployment."""

    def __init__(self, reader: Any, shard: int) -> None:
        self.reader, self.shard = reader, shard

    def search_sparse(
        self, terms: Any, weights: Any, k: int, flt: Filter | None = None, *, plan: str = "auto"
    ) -> list[tuple[str, float]]:
        return call(self.reader, "search_sparse", self.shard, terms, weights, k, flt, plan)

    def search_dense(self, vector: Any, k: int, flt: Filter | None = None) -> list:
        return call(self.reader, "search_dense", self.shard, vector, k, flt)

    def count(self, flt: Filter | None) -> int:
        return call(self.reader, "count", self.shard, flt)

    def matching_ids(self, flt: Filter | None) -> list[str]:
        return call(self.reader, "matching_ids", self.shard, flt)

    def vectors(self, ids: Sequence[str]) -> dict[str, DocVector]:
        return call(self.reader, "vectors", self.shard, list(ids))

    def live(self, ids: Sequence[str]) -> set[str]:
        return call(self.reader, "live", self.shard, list(ids))


class RemoteShard:
    """The :class:`~lsr.shards.collection.Shard` interface over a shard group's deployments."""

    def __init__(self, reader: Any, writer: Any, shard: int) -> None:
        self.reader, self.writer, self.shard = reader, writer, shard

    def view(self) -> RemoteView:
        return RemoteView(self.reader, self.shard)

    def fetch(self, ids: Sequence[str]) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
        return call(self.reader, "fetch", self.shard, list(ids))

    def commit(self, op: records.Op) -> WriteResult:
        # not retried: a write whose replica died may or may not have been logged
        return call(self.writer, "commit", self.shard, op, retry_seconds=0.0)

    def schema(self) -> Schema:
        return Schema.from_json(call(self.writer, "schema", self.shard))

    def info(self) -> dict[str, Any]:
        return call(self.writer, "info", self.shard)

    def refresh(self) -> int:
        return int(call(self.writer, "applied_seq", self.shard))

    def compact(self) -> dict[str, Any]:
        return call(self.writer, "compact", self.shard)

    def flush(self) -> bool:
        return call(self.writer, "flush", self.shard)

    def merge(self, everything: bool) -> int:
        return call(self.writer, "merge", self.shard, everything)

    def close(self) -> None:
        """Nothing to release here: the replicas hold the files."""
