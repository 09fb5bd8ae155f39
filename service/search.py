"""How the service answers a search: check the request, encode the query (siamese texts through
the micro-batcher), prune it, search off the event loop, page, explain.

Everything slow runs in the thread pool (encoders and Numba kernels release the GIL); the event
loop only awaits. Encoding and search time are observed separately for ``/metrics``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from lsr.collection import Collection
from lsr.collection.prf import DensePrf, PrfConfig, SparsePrf
from lsr.encoders.base import prune_terms
from lsr.encoders.device import usable_cpus
from lsr.errors import UnknownTermError
from lsr.fusion import normalize
from lsr.retrieval import FusionConfig
from lsr.sparse import TermWeights
from service.batching import EncodeBatcher
from service.errors import ClientError
from service.models import Hit, PrfBody, SearchRequest, SearchResponse
from service.registry import Registry
from service.settings import ServiceSettings

Observe = Callable[[str, float], None]  # (stage, seconds)


class Searcher:
    """Runs :class:`SearchRequest` bodies against the registry's collections."""

    def __init__(self, registry: Registry, settings: ServiceSettings, observe: Observe) -> None:
        self.registry = registry
        self.settings = settings
        self.observe = observe
        self._batchers: dict[tuple[str, int], EncodeBatcher[TermWeights]] = {}

    # -- query encoding -------------------------------------------------------------------------
    def _batcher(self, name: str, collection: Collection) -> EncodeBatcher[TermWeights]:
        key = (name, id(collection))  # a collection dropped and re-created gets a new one
        batcher = self._batchers.get(key)
        if batcher is None:
            for old in [k for k in self._batchers if k[0] == name]:
                del self._batchers[old]

            def encode_batch(texts: list[str]) -> list[TermWeights]:
                encoder = collection.query_encoder
                if len(texts) == 1:
                    return [encoder.encode_one(texts[0])]
                encoded = encoder.encode(texts)
                return [encoded.row(i) for i in range(len(texts))]

            s = self.settings
            batcher = EncodeBatcher(
                encode_batch,
                max_batch=s.query_batch_size,
                max_inflight=s.query_batch_inflight or usable_cpus(),
                window_s=s.query_batch_ms / 1000,
                observe=lambda size, _: self.observe("batch_size", size),
            )
            self._batchers[key] = batcher
        return batcher

    async def sparse_query(
        self, name: str, collection: Collection, text: str | None, vector: dict[str, float] | None
    ) -> TermWeights:
        """The sparse query as term ids and weights (text through the collection's query side)."""
        if vector is not None:
            return collection.query_vector(vector)
        assert text is not None
        started = time.perf_counter()
        if collection.query_mode == "siamese" and self.settings.query_batching:
            query = await self._batcher(name, collection).encode(text)
        else:  # inference-free: a tokenizer and a table lookup, cheaper than a hand-off
            query = await run_in_threadpool(collection.query_vector, text)
        self.observe("encode_sparse", time.perf_counter() - started)
        return query

    async def dense_query(
        self, collection: Collection, text: str | None, dense: list[float] | None
    ) -> np.ndarray:
        if dense is not None:
            return np.asarray(dense, dtype=np.float32)
        if text is None:
            raise ClientError(400, "a dense search needs a text query or a dense vector")
        if collection.config.dense_dim is None or "dense" not in collection.info_json:
            raise ClientError(400, "this collection has no dense model: give a dense vector")
        started = time.perf_counter()
        rows = await run_in_threadpool(collection.dense_encoder.encode_query, [text])
        self.observe("encode_dense", time.perf_counter() - started)
        return np.asarray(rows[0], dtype=np.float32)

    # -- checks -----------------------------------------------------------------------------------
    def check(self, body: SearchRequest) -> None:
        s = self.settings
        if body.limit > s.max_limit or body.offset > s.max_offset:
            raise ClientError(400, f"limit <= {s.max_limit}, offset <= {s.max_offset}")
        if body.query is not None and body.vector is not None:
            raise ClientError(400, "give query (text) or vector, not both")
        if body.query is not None and len(body.query) > s.max_text_chars:
            raise ClientError(400, f"query over {s.max_text_chars} characters")
        if body.vector is not None:
            if len(body.vector) > s.max_query_terms:
                raise ClientError(400, f"at most {s.max_query_terms} query terms")
            if any(not math.isfinite(w) or w < 0 for w in body.vector.values()):
                raise ClientError(400, "query weights must be finite and >= 0")
        if body.mode != "dense" and body.query is None and body.vector is None:
            raise ClientError(400, f"a {body.mode} search needs query (text) or vector")
        if body.heap_factor != 1.0 and body.plan != "blockmax":
            raise ClientError(400, "heap_factor applies only to plan 'blockmax'")
        if body.explain and body.prf is not None:
            raise ClientError(400, "explain describes first-round scores: not with prf")
        if body.mode == "hybrid" and body.fusion.depth < body.offset + body.limit:
            raise ClientError(400, f"fusion.depth ({body.fusion.depth}) must be >= offset + limit")

    # -- search -----------------------------------------------------------------------------------
    async def run(self, name: str, body: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        self.check(body)
        collection = self.registry.get(name)
        k = body.offset + body.limit
        sparse = None
        if body.mode != "dense":
            sparse = await self.sparse_query(name, collection, body.query, body.vector)
            if body.prune is not None:
                sparse = prune_terms(
                    np.asarray(sparse.terms), np.asarray(sparse.weights),
                    top_k=body.prune.top_terms, min_weight=body.prune.min_weight,
                )  # fmt: skip
            if len(sparse.terms) > self.settings.max_query_terms:
                raise ClientError(400, f"at most {self.settings.max_query_terms} query terms")
        dense = None
        if body.mode != "sparse":
            dense = await self.dense_query(collection, body.query, body.dense)
        f = body.fusion
        fusion = FusionConfig(f.method, f.alpha, f.rrf_k, f.depth, tuple(f.rrf_weights))
        payload = body.with_text or body.with_metadata
        prf = None if body.prf is None else prf_config(body.prf)
        searched = time.perf_counter()
        try:
            hits = await run_in_threadpool(
                collection.search, sparse, k,
                filter=body.filter, mode=body.mode, dense=dense, fusion=fusion,
                with_payload=payload, prf=prf, plan=body.plan, heap_factor=body.heap_factor,
            )  # fmt: skip
        except UnknownTermError as exc:
            raise ClientError(400, str(exc)) from None
        self.observe("search", time.perf_counter() - searched)
        page = hits[body.offset :]
        if body.score_threshold is not None:
            page = [h for h in page if float(h.score) >= body.score_threshold]
        ids = [h.id if payload else h.doc_id for h in page]
        explained = None
        if body.explain and page:
            explained = await run_in_threadpool(
                explain, collection, ids, sparse, dense, body, fusion
            )
        out = []
        for i, hit in enumerate(page):
            out.append(
                Hit(
                    id=ids[i],
                    score=float(hit.score),
                    text=hit.text if body.with_text else None,
                    metadata=hit.metadata if body.with_metadata else None,
                    explain=None if explained is None else explained[i],
                )
            )
        return SearchResponse(hits=out, took_ms=(time.perf_counter() - started) * 1000)


def prf_config(body: PrfBody) -> PrfConfig:
    """The request's PRF settings as the library's (its checks answer 400)."""
    return PrfConfig(
        sparse=None if body.sparse is None else SparsePrf(**body.sparse.model_dump()),
        dense=None if body.dense is None else DensePrf(**body.dense.model_dump()),
        interpolation=body.interpolation,
    )


def explain(
    collection: Collection,
    ids: list[str],
    sparse: TermWeights | None,
    dense: np.ndarray | None,
    body: SearchRequest,
    fusion: FusionConfig,
) -> list[dict[str, Any]]:
    """Why each hit scored: per-term contributions (query weight × stored document weight) of
    the sparse score; for hybrid, each leg's raw score, its normalised score (or RRF rank and
    share) and whether the leg returned the document within ``fusion.depth``."""
    vectors = collection.vectors(ids)
    tokens = collection.vocab.tokens
    query: dict[int, float] = {}
    if sparse is not None:
        query = dict(
            zip(np.asarray(sparse.terms).tolist(), np.asarray(sparse.weights).tolist(), strict=True)
        )
    out: list[dict[str, Any]] = []
    for doc_id in ids:
        entry: dict[str, Any] = {}
        vec = vectors.get(doc_id)
        if sparse is not None and vec is not None:
            parts = {
                tokens[t]: float(np.float32(query[t]) * w)
                for t, w in zip(vec.terms.tolist(), vec.weights.tolist(), strict=True)
                if t in query
            }
            entry["terms"] = dict(sorted(parts.items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(entry)
    if body.mode == "hybrid":
        legs = {
            "sparse": collection.search(sparse, fusion.depth, filter=body.filter, mode="sparse"),
            "dense": collection.search(
                None, fusion.depth, filter=body.filter, mode="dense", dense=dense
            ),
        }
        for leg, hits in legs.items():
            raw = {h.doc_id: float(h.score) for h in hits}
            rank = {h.doc_id: r for r, h in enumerate(hits, start=1)}
            scaled = {}
            if fusion.method != "rrf":
                scaled = dict(normalize({"q": raw}, fusion.method)["q"])
            for doc_id, entry in zip(ids, out, strict=True):
                if doc_id not in raw:
                    entry[leg] = {"returned": False}
                    continue
                part: dict[str, Any] = {"returned": True, "raw": raw[doc_id], "rank": rank[doc_id]}
                if fusion.method == "rrf":
                    weight = fusion.rrf_weights[0 if leg == "sparse" else 1]
                    part["rrf"] = weight / (fusion.rrf_k + rank[doc_id])
                else:
                    part["normalized"] = float(scaled[doc_id])
                entry[leg] = part
    return out
