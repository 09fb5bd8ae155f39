"""The service on Ray Serve: sharded collections served by shard-group deployments and a router
that answers the same HTTP API as ``lsr serve``.

For each sharded collection under the data directory, shards are split into ``groups`` (shard
``s`` in group ``s % groups``). Each group has a reader deployment with ``replicas`` replicas
(searches; each replica follows the shards' files read-only) and a writer deployment with one
replica (the shards' only writer). The router deployment builds the usual FastAPI app
(:func:`service.app.create_app`) over a registry of :class:`~lsr.shards.collection.
ShardedCollection` objects whose shards are :class:`~lsr.shards.remote.RemoteShard` handles: it
encodes queries and documents once, fans searches out and merges them exactly as one collection
would. Every node must see the data directory at the same path (one machine, or a shared file
system); see docs/scale.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lsr.collection.collection import Collection, WriteResult
from lsr.collection.filters import Filter
from lsr.collection.reader import CollectionReader
from lsr.errors import InputError
from lsr.shards.layout import is_sharded, read_layout, shard_dir
from service.registry import NotFound
from service.settings import ServiceSettings

log = logging.getLogger("lsr.service")


class ShardGroupReader:
    """A reader replica: CollectionReaders of the group's shards, refreshed before each call."""

    def __init__(self, path: str, shards: list[int], model: str | None = None) -> None:
        self.readers = {s: CollectionReader.open(shard_dir(path, s), model=model) for s in shards}
        self._lock = threading.Lock()

    def _view(self, shard: int) -> Any:
        reader = self.readers[shard]
        with self._lock:
            reader.refresh()
        return reader.snapshot()

    def search_sparse(
        self, shard: int, terms: Any, weights: Any, k: int, flt: Filter | None, plan: str
    ) -> list[tuple[str, float]]:
        return self._view(shard).search_sparse(terms, weights, k, flt, plan=plan)

    def search_dense(self, shard: int, vector: Any, k: int, flt: Filter | None) -> list:
        return self._view(shard).search_dense(vector, k, flt)

    def count(self, shard: int, flt: Filter | None) -> int:
        return self._view(shard).count(flt)

    def matching_ids(self, shard: int, flt: Filter | None) -> list[str]:
        return self._view(shard).matching_ids(flt)

    def vectors(self, shard: int, ids: list[str]) -> dict[str, Any]:
        return self._view(shard).vectors(ids)

    def live(self, shard: int, ids: list[str]) -> set[str]:
        return self._view(shard).live(ids)

    def fetch(self, shard: int, ids: list[str]) -> dict[str, Any]:
        self._view(shard)
        return self.readers[shard].store.fetch(ids)

    def pid(self) -> int:
        import os

        return os.getpid()


class ShardGroupWriter:
    """The writer replica of a shard group: it holds each shard's Collection (and its lock)."""

    def __init__(self, path: str, shards: list[int], model: str | None = None) -> None:
        self.collections = {
            s: Collection.open(shard_dir(path, s), background_merge=True, model=model)
            for s in shards
        }

    def commit(self, shard: int, op: Any) -> WriteResult:
        return self.collections[shard].commit(op)

    def schema(self, shard: int) -> dict[str, Any]:
        return self.collections[shard].schema.to_json()

    def info(self, shard: int) -> dict[str, Any]:
        return self.collections[shard].info()

    def applied_seq(self, shard: int) -> int:
        return self.collections[shard].snapshot().seq

    def compact(self, shard: int) -> dict[str, Any]:
        return self.collections[shard].compact()

    def flush(self, shard: int) -> bool:
        return self.collections[shard].flush()

    def merge(self, shard: int, everything: bool) -> int:
        return self.collections[shard].merge(everything=everything)


class RemoteRegistry:
    """The router's collections: sharded collections over remote shard groups. Collections are
    made offline (``lsr collection create --shards``, ``lsr index build --ray``); the router
    serves the ones it was started with, and applies their writes through the writer replicas."""

    def __init__(self, collections: dict[str, Any]) -> None:
        self._specs = collections
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    def open_all(self) -> list[str]:
        for name in self._specs:
            self.get(name)
        return self.names()

    def names(self) -> list[str]:
        return sorted(self._specs)

    def owns(self, name: str) -> bool:
        return True

    def get(self, name: str) -> Any:
        with self._lock:
            collection = self._open.get(name)
            if collection is None:
                spec = self._specs.get(name)
                if spec is None:
                    raise NotFound(f"no collection named {name!r}")
                collection = self._open[name] = _open_remote(spec)
        return collection

    def create(self, name: str, **options: Any) -> Any:
        raise InputError(
            "the Ray router serves the sharded collections it was started with; create them "
            "with `lsr collection create --shards N` or `lsr index build --ray`"
        )

    def drop(self, name: str) -> None:
        raise InputError("the Ray router cannot delete collections; stop it and remove the files")

    def take_over(self, name: str) -> bool:
        return True

    def wait_for(self, name: str, seq: int, shard_seqs: Any = None, timeout: float = 30.0) -> None:
        """Writes are applied by this process's router: nothing to wait for."""

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()


def _open_remote(spec: dict[str, Any]) -> Any:
    from lsr.shards.collection import ShardedCollection
    from lsr.shards.remote import RemoteShard

    groups = len(spec["readers"])
    shards = [
        RemoteShard(spec["readers"][s % groups], spec["writers"][s % groups], s)
        for s in range(spec["shards"])
    ]
    identity = CollectionReader.open(shard_dir(spec["path"], 0), model=spec.get("model"))
    return ShardedCollection(Path(spec["path"]), shards, identity, own_identity=True)


def _router_class() -> Any:
    from ray import serve

    @serve.deployment(name="router", ray_actor_options={"num_cpus": 0})
    @serve.ingress()
    class Router:
        """The HTTP API of ``lsr serve`` over remote shard groups."""

        def __init__(self, settings: dict[str, Any], collections: dict[str, Any]) -> None:
            self.settings = ServiceSettings(**settings)
            self.registry = RemoteRegistry(collections)

        def __serve_build_asgi_app__(self) -> Any:
            from service.app import create_app

            return create_app(self.settings, registry=self.registry)

    return Router


def _per_collection(value: Any, name: str, default: int, what: str) -> int:
    """``value`` (an int, or ``{collection: int}``) for collection ``name``, checked >= 1."""
    chosen = value.get(name, default) if isinstance(value, Mapping) else value
    chosen = default if chosen is None else chosen
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
        raise InputError(f"{what} must be an integer >= 1, got {chosen!r}")
    return chosen


def build_application(
    settings: ServiceSettings,
    *,
    replicas: int | Mapping[str, int] = 2,
    groups: int | Mapping[str, int] | None = None,
    names: list[str] | None = None,
    model: str | None = None,
) -> Any:
    """The Serve application for the sharded collections in ``settings.data_dir`` (all, or
    ``names``): per collection, ``groups`` shard groups (default: one per shard), each with a
    reader deployment of ``replicas`` replicas and a writer; and the router. ``replicas`` and
    ``groups`` may be ``{collection: value}`` (collections not named get the defaults)."""
    from ray import serve

    data = Path(settings.data_dir).absolute()
    found = sorted(p.name for p in data.iterdir() if is_sharded(p)) if data.is_dir() else []
    names = found if names is None else names
    if not names:
        raise InputError(f"{data}: no sharded collections to serve")
    reader_cls = serve.deployment(ShardGroupReader)
    writer_cls = serve.deployment(ShardGroupWriter)
    specs: dict[str, Any] = {}
    for name in names:
        path = data / name
        if not is_sharded(path):
            raise InputError(f"{path}: not a sharded collection")
        n = read_layout(path)["shards"]
        r = _per_collection(replicas, name, 2, "replicas")
        g = min(_per_collection(groups, name, n, "groups"), n)
        readers, writers = [], []
        for group in range(g):
            members = [s for s in range(n) if s % g == group]
            readers.append(
                reader_cls.options(
                    name=f"{name}-read-{group}", num_replicas=r,
                    ray_actor_options={"num_cpus": 0},
                ).bind(str(path), members, model)
            )  # fmt: skip
            writers.append(
                writer_cls.options(
                    name=f"{name}-write-{group}", num_replicas=1,
                    ray_actor_options={"num_cpus": 0},
                ).bind(str(path), members, model)
            )  # fmt: skip
        specs[name] = {
            "path": str(path), "shards": n, "readers": readers, "writers": writers, "model": model
        }  # fmt: skip
    plain = settings.model_dump(mode="json", exclude={"workers"})
    return _router_class().bind(plain, specs)


def run_on_ray(
    settings: ServiceSettings,
    *,
    address: str = "local",
    replicas: int = 2,
    groups: int | None = None,
    log: Any = print,
) -> None:
    """``lsr serve --ray``: build the application (checked before Ray starts), start or join the
    cluster, serve on ``settings.host:port`` until interrupted."""
    import ray
    from ray import serve

    application = build_application(settings, replicas=replicas, groups=groups)
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        log(f"lsr serve --ray: {settings.data_dir} on http://{settings.host}:{settings.port}")
        serve.run(application, name="lsr", route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        log("lsr serve --ray: stopping")
    finally:
        serve.shutdown()
        ray.shutdown()
