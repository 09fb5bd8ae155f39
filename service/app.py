"""The FastAPI application: live collections over HTTP (``create_app(settings)``).

Every handler is a plain ``def``: FastAPI runs it in its thread pool, so encoders and Numba
kernels (which release the GIL) never block the event loop. Client errors are 4xx JSON bodies
``{"error": message}``; nothing answers with a stack trace.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import lsr
from lsr.errors import LsrError, UnknownTermError
from lsr.retrieval import FusionConfig
from service.models import (
    CreateCollection,
    DeleteRequest,
    ErrorResponse,
    Hit,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    WriteResponse,
)
from service.registry import Conflict, NotFound, Registry
from service.settings import ServiceSettings

log = logging.getLogger("lsr.service")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "malformed JSON or an invalid request (message says which)"),
        (401, "API key missing"),
        (403, "API key wrong"),
        (404, "no such collection or document"),
        (413, "request body too large"),
        (422, "request body does not match the schema"),
    )
}


class ClientError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The service over the collections in ``settings.data_dir`` (opened at start-up)."""
    settings = settings or ServiceSettings()
    registry = Registry(settings.data_dir, background_merge=settings.background_merge)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        names = registry.open_all()
        log.info("lsr service: %d collections open in %s", len(names), settings.data_dir)
        app.state.ready = True
        yield
        registry.close()

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

    @app.exception_handler(LsrError)
    async def _input(_: Request, exc: LsrError) -> JSONResponse:
        return error(400, str(exc))

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
        return PlainTextResponse(generate_latest(metrics.registry).decode())

    @app.get("/info", tags=["operations"], dependencies=[Depends(reader)])
    def service_info() -> dict[str, Any]:
        """Versions and the collections with their query modes."""
        return {
            "lsr": lsr.__version__,
            "collections": {
                n: {"query_mode": registry.get(n).query_mode} for n in registry.names()
            },
        }

    # -- collections -------------------------------------------------------------------------------
    @app.get("/collections", tags=["collections"], dependencies=[Depends(reader)])
    def list_collections() -> dict[str, list[str]]:
        return {"collections": registry.names()}

    @app.put("/collections/{name}", tags=["collections"], status_code=201,
             dependencies=[Depends(writer)])  # fmt: skip
    def create_collection(name: str, body: CreateCollection) -> dict[str, Any]:
        """Create a collection (vectors over ``vocab``, or texts through ``model``)."""
        from lsr.vocab import Vocabulary

        options = body.model_dump(exclude={"vocab", "schema_"}, exclude_none=True)
        vocab = Vocabulary(body.vocab, frozen=True) if body.vocab is not None else None
        collection = registry.create(name, vocab=vocab, schema=body.schema_, **options)
        return collection.info()

    @app.get("/collections/{name}", tags=["collections"], dependencies=[Depends(reader)])
    def collection_info(name: str) -> dict[str, Any]:
        return registry.get(name).info()

    @app.delete("/collections/{name}", tags=["collections"], dependencies=[Depends(writer)])
    def drop_collection(name: str) -> dict[str, str]:
        registry.drop(name)
        return {"deleted": name}

    # -- documents ---------------------------------------------------------------------------------
    @app.put("/collections/{name}/documents", tags=["documents"], response_model=WriteResponse,
             dependencies=[Depends(writer)])  # fmt: skip
    def upsert(name: str, body: UpsertRequest) -> WriteResponse:
        """Insert or replace documents by id (returns once durable and visible)."""
        docs = body.documents
        if len(docs) > settings.max_batch:
            raise ClientError(400, f"at most {settings.max_batch} documents per request")
        with_vector = [d.vector is not None for d in docs]
        if any(with_vector) and not all(with_vector):
            raise ClientError(400, "give every document of a request a vector, or none")
        for d in docs:
            if d.text is not None and len(d.text) > settings.max_text_chars:
                raise ClientError(400, f"document {d.id!r}: text over {settings.max_text_chars}")
        texts = [d.text for d in docs]
        with_dense = [d.dense is not None for d in docs]
        if any(with_dense) and not all(with_dense):
            raise ClientError(400, "give every document of a request a dense vector, or none")
        result = registry.get(name).upsert(
            [d.id for d in docs],
            vectors=[d.vector for d in docs] if all(with_vector) else None,
            texts=texts if any(t is not None for t in texts) else None,
            dense=[d.dense for d in docs] if all(with_dense) else None,
            metadata=[d.metadata for d in docs],
        )
        return WriteResponse(seq=result.seq, count=result.count)

    @app.get("/collections/{name}/documents/{doc_id}", tags=["documents"],
             dependencies=[Depends(reader)])  # fmt: skip
    def get_document(name: str, doc_id: str) -> dict[str, Any]:
        found = registry.get(name).get([doc_id])
        if doc_id not in found:
            raise NotFound(f"no document {doc_id!r} in {name!r}")
        text, metadata = found[doc_id]
        return {"id": doc_id, "text": text, "metadata": metadata}

    @app.delete("/collections/{name}/documents/{doc_id}", tags=["documents"],
                response_model=WriteResponse, dependencies=[Depends(writer)])  # fmt: skip
    def delete_document(name: str, doc_id: str) -> WriteResponse:
        result = registry.get(name).delete([doc_id])
        if result.count == 0:
            raise NotFound(f"no document {doc_id!r} in {name!r}")
        return WriteResponse(seq=result.seq, count=result.count)

    @app.post("/collections/{name}/documents/delete", tags=["documents"],
              response_model=WriteResponse, dependencies=[Depends(writer)])  # fmt: skip
    def delete_documents(name: str, body: DeleteRequest) -> WriteResponse:
        """Delete by ids (unknown ids ignored; count says how many existed) or by filter."""
        if (body.ids is None) == (body.filter is None):
            raise ClientError(400, "give ids or filter (one of them)")
        collection = registry.get(name)
        if body.ids is not None:
            if len(body.ids) > settings.max_batch:
                raise ClientError(400, f"at most {settings.max_batch} ids per request")
            result = collection.delete(body.ids)
        else:
            result = collection.delete_by_filter(body.filter)
        return WriteResponse(seq=result.seq, count=result.count)

    # -- search ------------------------------------------------------------------------------------
    @app.post("/collections/{name}/search", tags=["search"], response_model=SearchResponse,
              dependencies=[Depends(reader)])  # fmt: skip
    def search(name: str, body: SearchRequest) -> SearchResponse:
        """Exact search over the live documents: sparse, dense or hybrid, filtered, paged.

        Page n of size ``limit`` is items ``offset .. offset + limit`` of one ranking; hybrid
        legs each take ``fusion.depth`` hits (it must cover ``offset + limit``), so pages agree.
        """
        started = time.perf_counter()
        if body.limit > settings.max_limit or body.offset > settings.max_offset:
            raise ClientError(
                400, f"limit <= {settings.max_limit}, offset <= {settings.max_offset}"
            )
        if body.query is not None and body.vector is not None:
            raise ClientError(400, "give query (text) or vector, not both")
        if body.query is not None and len(body.query) > settings.max_text_chars:
            raise ClientError(400, f"query over {settings.max_text_chars} characters")
        if body.vector is not None:
            if len(body.vector) > settings.max_query_terms:
                raise ClientError(400, f"at most {settings.max_query_terms} query terms")
            if any(not math.isfinite(w) or w < 0 for w in body.vector.values()):
                raise ClientError(400, "query weights must be finite and >= 0")
        k = body.offset + body.limit
        if body.mode == "hybrid" and body.fusion.depth < k:
            raise ClientError(400, f"fusion.depth ({body.fusion.depth}) must be >= offset + limit")
        fusion = FusionConfig(body.fusion.method, body.fusion.alpha, body.fusion.rrf_k,
                              body.fusion.depth)  # fmt: skip
        payload = body.with_text or body.with_metadata
        try:
            hits = registry.get(name).search(
                body.query if body.query is not None else body.vector,
                k,
                filter=body.filter,
                mode=body.mode,
                dense=None if body.dense is None else np.asarray(body.dense, dtype=np.float32),
                fusion=fusion,
                with_payload=payload,
            )
        except UnknownTermError as exc:
            raise ClientError(400, str(exc)) from None
        out = []
        for hit in hits[body.offset :]:
            score = float(hit.score)
            if body.score_threshold is not None and score < body.score_threshold:
                continue
            if payload:
                out.append(Hit(id=hit.id, score=score,
                               text=hit.text if body.with_text else None,
                               metadata=hit.metadata if body.with_metadata else None))  # fmt: skip
            else:
                out.append(Hit(id=hit.doc_id, score=score))
        return SearchResponse(hits=out, took_ms=(time.perf_counter() - started) * 1000)

    return app
