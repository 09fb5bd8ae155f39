"""The FastAPI application: live collections over HTTP (``create_app(settings)``).

Every handler is a plain ``def``: FastAPI runs it in its thread pool, so encoders and Numba
kernels (which release the GIL) never block the event loop. Client errors are 4xx JSON bodies
``{"error": message}``; nothing answers with a stack trace.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import lsr
from lsr.encoders.device import usable_cpus
from lsr.errors import LsrError, ShardUnavailableError
from service.errors import ClientError
from service.models import (
    CollectionName,
    CreateCollection,
    DeleteRequest,
    DocumentId,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    SearchBatchRequest,
    SearchBatchResponse,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    WriteResponse,
)
from service.owner import OwnerGone, OwnerServer, forward
from service.registry import Conflict, NotFound, Registry
from service.search import Searcher
from service.settings import ServiceSettings
from service.writes import check_delete, check_upsert, parse, run_write

log = logging.getLogger("lsr.service")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "malformed JSON or an invalid request (message says which)"),
        (401, "API key missing"),
        (403, "API key wrong"),
        (404, "no such collection or document"),
        (409, "the collection exists already"),
        (413, "request body too large"),
        (422, "request body does not match the schema"),
    )
}


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lsr_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lsr_request_seconds", "request latency", ["route"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )  # fmt: skip
        self.live_docs = Gauge(
            "lsr_collection_live_docs", "live documents", ["collection"], registry=self.registry
        )
        self.log_bytes = Gauge(
            "lsr_collection_log_bytes", "write-ahead log bytes", ["collection"],
            registry=self.registry,
        )  # fmt: skip
        self.segments = Gauge(
            "lsr_collection_segments", "segments", ["collection"], registry=self.registry
        )
        self.stage = Histogram(
            "lsr_stage_seconds", "time per search stage (encode_sparse, encode_dense, search)",
            ["stage"], registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2),
        )  # fmt: skip
        self.batch_size = Histogram(
            "lsr_encode_batch_size", "texts per query-encoding batch", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )  # fmt: skip
        self.merges = Gauge(
            "lsr_collection_generation", "segment generations written (flushes and merges)",
            ["collection"], registry=self.registry,
        )  # fmt: skip


def _describe(collection: Any) -> dict[str, Any]:
    """A collection's query mode and where its models and IDF table came from."""
    encoder = collection.info_json.get("encoder") or {}
    dense = collection.info_json.get("dense") or {}
    return {
        "query_mode": collection.query_mode,
        "model": (encoder.get("model") or {}).get("source"),
        "idf": encoder.get("idf"),  # inference-free: the table's source and SHA-256
        "dense_model": dense.get("model"),
    }


def create_app(settings: ServiceSettings | None = None, *, registry: Any = None) -> FastAPI:
    """The service over the collections in ``settings.data_dir`` (opened at start-up), or over
    ``registry`` (the Ray router's remote sharded collections, :mod:`service.ray_serve`)."""
    settings = settings or ServiceSettings()
    owner: list[OwnerServer] = []  # this process's socket, made when it first owns something

    def owned(name: str) -> None:
        if not owner:
            owner.append(OwnerServer(settings.data_dir, owner_handles))
        owner[0].claim(name)

    def released(name: str) -> None:
        if owner:
            owner[0].release(name)

    registry = registry or Registry(
        settings.data_dir, background_merge=settings.background_merge,
        on_owned=owned, on_released=released,
    )  # fmt: skip
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = (
            settings.threads or 4 * usable_cpus()
        )
        names = registry.open_all()
        log.info("lsr service: %d collections open in %s", len(names), settings.data_dir)
        app.state.ready = True
        yield
        registry.close()
        if owner:
            owner[0].close()

    app = FastAPI(
        title="lsr",
        version=lsr.__version__,
        description="Learned sparse retrieval: live collections with sparse, dense and hybrid "
        "search. Writes return once durable and visible.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.ready = False
    app.state.registry = registry
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"])  # fmt: skip

    # -- errors ------------------------------------------------------------------------------------
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ClientError)
    async def _client(_: Request, exc: ClientError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(NotFound)
    async def _missing(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc.args[0]))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(ShardUnavailableError)
    async def _unavailable(_: Request, exc: ShardUnavailableError) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(LsrError)
    async def _input(_: Request, exc: LsrError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, str(exc.detail))
        if exc.status_code == 405:  # every method the path has, not only one route's
            path = request.url.path
            routes = [r for r in app.routes
                      if isinstance(r, APIRoute) and r.path_regex.match(path)]  # fmt: skip
            if routes:  # the most literal template: /documents/delete before /documents/{id}
                fewest = min(len(r.param_convertors) for r in routes)
                methods = {m for r in routes if len(r.param_convertors) == fewest
                           for m in r.methods}  # fmt: skip
                response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error(400, "malformed JSON body")
        text = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ()))}: {p.get('msg', 'invalid')}"
            for p in problems[:5]
        )
        return error(422, text)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, "internal error (logged)")

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[..., Any]) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return error(413, f"request body over {settings.max_body_bytes} bytes")
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    # -- auth --------------------------------------------------------------------------------------
    def check_key(given: str | None) -> None:
        if settings.api_key is None:
            return
        if not given:
            raise ClientError(401, "this request needs an API key (header X-API-Key)")
        expected = settings.api_key.get_secret_value().encode()
        if not hmac.compare_digest(given.encode(), expected):
            raise ClientError(403, "wrong API key")

    def writer(x_api_key: str | None = Header(None)) -> None:
        check_key(x_api_key)

    def reader(x_api_key: str | None = Header(None)) -> None:
        if settings.read_requires_key:
            check_key(x_api_key)

    # -- operations --------------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """Ready: every collection in the data directory is open."""
        if not app.state.ready:
            return error(503, "starting")
        return JSONResponse({"status": "ready", "collections": registry.names()})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus metrics: requests by route and status, latency, collection sizes."""
        for name in registry.names():
            info = registry.get(name).info()
            metrics.live_docs.labels(name).set(info["live_docs"])
            metrics.log_bytes.labels(name).set(info["log_bytes"])
            metrics.segments.labels(name).set(len(info["segments"]))
            metrics.merges.labels(name).set(info["generation"])
        return PlainTextResponse(generate_latest(metrics.registry).decode())

    @app.get("/info", tags=["operations"], dependencies=[Depends(reader)])
    def service_info() -> dict[str, Any]:
        """Versions, the collections with their query modes, and this worker process (its pid,
        the collections it owns; it follows the others)."""
        names = registry.names()
        return {
            "lsr": lsr.__version__,
            "collections": {n: _describe(registry.get(n)) for n in names},
            "worker": {"pid": os.getpid(), "owns": [n for n in names if registry.owns(n)]},
        }

    # -- collections -------------------------------------------------------------------------------
    @app.get("/collections", tags=["collections"], dependencies=[Depends(reader)])
    def list_collections() -> dict[str, list[str]]:
        return {"collections": registry.names()}

    @app.put("/collections/{name}", tags=["collections"], status_code=201,
             dependencies=[Depends(writer)])  # fmt: skip
    def create_collection(name: CollectionName, body: CreateCollection) -> dict[str, Any]:
        """Create a collection (vectors over ``vocab``, or texts through ``model``)."""
        from lsr.vocab import Vocabulary

        options = body.model_dump(exclude={"vocab", "schema_"}, exclude_none=True)
        vocab = Vocabulary(body.vocab, frozen=True) if body.vocab is not None else None
        collection = registry.create(name, vocab=vocab, schema=body.schema_, **options)
        return collection.info()

    @app.get("/collections/{name}", tags=["collections"], dependencies=[Depends(reader)])
    def collection_info(name: CollectionName) -> dict[str, Any]:
        return registry.get(name).info()

    @app.delete("/collections/{name}", tags=["collections"], dependencies=[Depends(writer)])
    def drop_collection(name: CollectionName) -> dict[str, str]:
        return write(name, "drop", name)

    # -- documents ---------------------------------------------------------------------------------
    def owner_handles(name: str, op: str, raw: Any) -> tuple[int, Any]:
        """A write forwarded by a follower (runs in the owner's socket thread)."""
        try:
            if not registry.owns(name):
                return 421, {"error": f"this process does not own {name!r}"}
            if op == "drop":
                registry.drop(name)
                return 200, {"deleted": name}
            body = parse(op, raw)
            return 200, run_write(registry.get(name), name, op, body).model_dump()
        except ClientError as exc:
            return exc.status, {"error": str(exc)}
        except NotFound as exc:
            return 404, {"error": str(exc.args[0])}
        except (LsrError, ValidationError) as exc:
            return 400, {"error": str(exc)}

    def write(name: str, op: str, body: Any) -> Any:
        """Apply a write here if this process owns the collection, else forward it to the owner
        and wait until this process's follower shows it."""
        for _ in range(5):
            collection = registry.get(name)
            if registry.owns(name):
                if op == "drop":
                    registry.drop(name)
                    return {"deleted": name}
                return run_write(collection, name, op, body)
            raw = body if isinstance(body, str) else body.model_dump(mode="json", by_alias=True)
            try:
                status, answer = forward(settings.data_dir, name, op, raw)
            except OwnerGone:
                if not registry.take_over(name):
                    time.sleep(0.05)  # another process is taking over: ask it next
                continue
            if status == 421:
                time.sleep(0.05)
                continue
            if status == 404:
                raise NotFound(answer["error"])
            if status != 200:
                raise ClientError(status, answer["error"])
            if op == "drop":
                return answer
            result = WriteResponse(**answer)
            registry.wait_for(name, result.seq, result.shard_seqs)
            return result
        raise ClientError(503, f"no process is answering for {name!r}'s writes; try again")

    # a write answers WriteResponse; shard_seqs only for sharded collections
    wrote: dict[str, Any] = {
        "response_model": WriteResponse, "response_model_exclude_none": True,
        "dependencies": [Depends(writer)],
    }  # fmt: skip

    @app.put("/collections/{name}/documents", tags=["documents"], **wrote)
    def upsert(name: CollectionName, body: UpsertRequest) -> WriteResponse:
        """Insert or replace documents by id (returns once durable and visible)."""
        check_upsert(body, settings)
        return write(name, "upsert", body)

    @app.get("/collections/{name}/documents/{doc_id}", tags=["documents"],
             dependencies=[Depends(reader)])  # fmt: skip
    def get_document(name: CollectionName, doc_id: DocumentId) -> dict[str, Any]:
        found = registry.get(name).get([doc_id])
        if doc_id not in found:
            raise NotFound(f"no document {doc_id!r} in {name!r}")
        text, metadata = found[doc_id]
        return {"id": doc_id, "text": text, "metadata": metadata}

    @app.delete("/collections/{name}/documents/{doc_id}", tags=["documents"], **wrote)
    def delete_document(name: CollectionName, doc_id: DocumentId) -> WriteResponse:
        return write(name, "delete_one", doc_id)

    @app.post("/collections/{name}/documents/delete", tags=["documents"], **wrote)
    def delete_documents(name: CollectionName, body: DeleteRequest) -> WriteResponse:
        """Delete by ids (unknown ids ignored; count says how many existed) or by filter."""
        check_delete(body, settings)
        return write(name, "delete", body)

    # -- search ------------------------------------------------------------------------------------
    def observe(stage: str, value: float) -> None:
        if stage == "batch_size":
            metrics.batch_size.observe(value)
        else:
            metrics.stage.labels(stage).observe(value)

    searcher = Searcher(registry, settings, observe)

    @app.post("/collections/{name}/search", tags=["search"], response_model=SearchResponse,
              dependencies=[Depends(reader)])  # fmt: skip
    async def search(name: CollectionName, body: SearchRequest) -> SearchResponse:
        """Exact search over the live documents: sparse, dense or hybrid, filtered, paged.

        Page n of size ``limit`` is items ``offset .. offset + limit`` of one ranking; hybrid
        legs each take ``fusion.depth`` hits (it must cover ``offset + limit``), so pages agree.
        ``score_threshold`` applies to the returned score (after fusion). ``prune`` cuts the
        sparse query (its heaviest ``top_terms``, weights above ``min_weight``) after encoding.
        """
        return await searcher.run(name, body)

    @app.post("/collections/{name}/search/batch", tags=["search"],
              response_model=SearchBatchResponse, dependencies=[Depends(reader)])  # fmt: skip
    async def search_batch(name: CollectionName, body: SearchBatchRequest) -> SearchBatchResponse:
        """Several searches at once, answered in order (their texts are encoded as one batch)."""
        if len(body.searches) > settings.max_batch:
            raise ClientError(400, f"at most {settings.max_batch} searches per request")
        for one in body.searches:
            searcher.check(one)
        registry.get(name)
        results = await asyncio.gather(*(searcher.run(name, one) for one in body.searches))
        return SearchBatchResponse(results=list(results))

    @app.post("/encode", tags=["search"], response_model=EncodeResponse,
              dependencies=[Depends(reader)])  # fmt: skip
    async def encode(body: EncodeRequest) -> EncodeResponse:
        """Texts as sparse vectors ``{token: weight}`` (heaviest first), through a collection's
        query side (what its searches use) or document side (what its upserts store)."""
        if len(body.texts) > settings.max_batch:
            raise ClientError(400, f"at most {settings.max_batch} texts per request")
        if any(len(t) > settings.max_text_chars for t in body.texts):
            raise ClientError(400, f"a text over {settings.max_text_chars} characters")
        collection = registry.get(body.collection)
        if collection.info_json.get("encoder") is None:
            raise ClientError(400, f"collection {body.collection!r} has no model")
        if body.side == "query":
            rows = await asyncio.gather(
                *(searcher.sparse_query(body.collection, collection, t, None) for t in body.texts)
            )
        else:
            encoded = await run_in_threadpool(
                lambda: collection.encoder.encode_document(body.texts)
            )
            rows = [encoded.row(i) for i in range(len(body.texts))]
        tokens = collection.vocab.tokens
        vectors = []
        for row in rows:
            pairs = sorted(
                zip(np.asarray(row.terms).tolist(), np.asarray(row.weights).tolist(), strict=True),
                key=lambda tw: (-tw[1], tw[0]),
            )
            vectors.append({tokens[t]: float(w) for t, w in pairs})
        return EncodeResponse(vectors=vectors)

    return app
