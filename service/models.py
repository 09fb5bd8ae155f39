"""Request and response bodies: strict pydantic models (unknown fields and type coercion refused),
so the OpenAPI document is exactly what the service accepts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, description="collection name")]
DocumentId = Annotated[str, Path(min_length=1, max_length=512, description="document id")]


def _integral(value: Any) -> Any:
    """JSON has one number type: 10.0 is the integer 10 (JSON Schema agrees); 10.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
LegWeight = Annotated[float, Field(ge=0, le=1e6)]  # after the constraints, so the schema keeps them


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CreateCollection(Strict):
    """A new collection: vectors over a vocabulary, or texts through a model."""

    model: str | None = Field(None, description="sparse encoder (local path or hub id)")
    vocab: list[str] | None = Field(None, description="vocabulary, when vectors are given")
    query_mode: Literal["siamese", "inference-free"] = "siamese"
    idf: str | None = Field(None, description="idf.json for inference-free queries")
    dense_model: str | None = Field(None, description="sentence-transformers model for dense")
    dense_dim: Annotated[int, Field(ge=1, le=8192), Integral] | None = Field(
        None, description="dense size, when vectors are given"
    )
    quantization: Literal["float16", "float32", "uint8"] = "float16"
    max_weight: float | None = Field(None, gt=0)
    flush_docs: Annotated[int, Field(ge=1, le=1_000_000), Integral] = 4096
    merge_factor: Annotated[int, Field(ge=2, le=64), Integral] = 8
    schema_: dict[str, Literal["keyword", "number", "bool"]] = Field(
        default_factory=dict, alias="schema", description="declared metadata fields"
    )
    shards: Annotated[int, Field(ge=1, le=256), Integral] | None = Field(
        None, description="split the collection into this many shards by document id"
    )


class Document(Strict):
    """One document to upsert: an id, its text and/or vectors, its metadata."""

    id: str = Field(min_length=1, max_length=512)
    text: str | None = None
    vector: dict[str, float] | None = Field(None, description="sparse vector {token: weight}")
    dense: list[float] | None = None
    metadata: dict[str, str | int | float | bool | None] | None = None


class UpsertRequest(Strict):
    documents: list[Document] = Field(min_length=1)


class DeleteByIds(Strict):
    """Delete these ids (unknown ids are ignored; the answer counts those that existed)."""

    ids: list[str] = Field(min_length=1)


class DeleteByFilter(Strict):
    """Delete every live document matching the filter."""

    filter: dict[str, Any]


DeleteRequest = DeleteByIds | DeleteByFilter


class Fusion(Strict):
    """How hybrid search fuses its sparse and dense legs (scores after fusion are returned)."""

    method: Literal["rrf", "minmax", "zscore"] = "rrf"
    alpha: float = Field(0.5, ge=0, le=1, description="sparse weight (convex methods)")
    rrf_k: Annotated[int, Field(ge=1, le=10_000), Integral] = 60
    rrf_weights: list[LegWeight] = Field(
        [1.0, 1.0], min_length=2, max_length=2, description="[sparse, dense] leg weights in RRF"
    )
    depth: Annotated[int, Field(ge=1, le=10_000), Integral] = Field(
        100, description="hits per leg; must cover offset + limit (stable pages)"
    )


class QueryPruning(Strict):
    """Query-side pruning of the sparse query (after encoding, before search)."""

    top_terms: Annotated[int, Field(ge=1, le=100_000), Integral] | None = Field(
        None, description="keep the n heaviest terms"
    )
    min_weight: float = Field(0.0, ge=0, description="drop terms weighing this or less")


class SparsePrfBody(Strict):
    """Rocchio on the sparse leg: alpha·q + beta·mean(top-m documents), + expansion terms."""

    m: Annotated[int, Field(ge=1, le=100), Integral] = 3
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.1, ge=0)
    expansion_terms: Annotated[int, Field(ge=0, le=1000), Integral] = 10


class DensePrfBody(Strict):
    """Vector-PRF on the dense leg: alpha·q + beta·mean(top-m document embeddings)."""

    m: Annotated[int, Field(ge=1, le=100), Integral] = 3
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.25, ge=0)


class PrfBody(Strict):
    """Pseudo-relevance feedback (a second round from the first round's top m documents).

    In hybrid searches, ``interpolation`` says where the legs are fused: ``after`` PRF (each leg
    takes feedback from its own list; the PRF'd legs are fused), ``before`` PRF (feedback from the
    fused list; the answer is the PRF'd leg, one leg only) or ``both``."""

    sparse: SparsePrfBody | None = None
    dense: DensePrfBody | None = None
    interpolation: Literal["after", "before", "both"] = "after"


class SearchRequest(Strict):
    """A query (text, sparse vector and/or dense vector) with paging, filter and output fields."""

    query: str | None = Field(None, description="text, encoded by the collection's query side")
    vector: dict[str, float] | None = Field(None, description="sparse query {token: weight}")
    dense: list[float] | None = Field(None, description="dense query vector")
    mode: Literal["sparse", "dense", "hybrid"] = "sparse"
    limit: Annotated[int, Field(ge=1), Integral] = 10
    offset: Annotated[int, Field(ge=0), Integral] = 0
    filter: dict[str, Any] | None = None
    score_threshold: float | None = Field(
        None, description="drop hits scoring below it (the returned score: after fusion)"
    )
    fusion: Fusion = Field(default_factory=Fusion)
    prune: QueryPruning | None = Field(None, description="query-side pruning (sparse leg)")
    prf: PrfBody | None = Field(None, description="pseudo-relevance feedback (off by default)")
    plan: Literal["auto", "taat", "forward", "blockmax", "approximate"] = Field(
        "auto",
        description="sparse leg per segment: auto (the cheaper exact plan), taat, forward, "
        "blockmax (best block first; exact at heap_factor 1) or approximate (blockmax at the "
        "measured default: heap_factor 0.9 for queries of 8 terms or more, exact below)",
    )
    heap_factor: float = Field(
        1.0,
        gt=0,
        le=1,
        description="blockmax only: stop when a block's bound x this falls below the k-th score "
        "(1 exact; lower is faster and may miss hits, every returned score stays exact)",
    )
    explain: bool = Field(
        False, description="per-term contributions; per-leg raw and normalised scores (hybrid)"
    )
    with_text: bool = False
    with_metadata: bool = False


class SearchBatchRequest(Strict):
    """Several searches of one collection in one request (answered in order)."""

    searches: list[SearchRequest] = Field(min_length=1)


class EncodeRequest(Strict):
    """Texts to encode with a collection's model (query or document side)."""

    collection: str = Field(description="whose model encodes")
    texts: list[str] = Field(min_length=1)
    side: Literal["query", "document"] = "query"


class EncodeResponse(BaseModel):
    vectors: list[dict[str, float]] = Field(description="{token: weight}, heaviest first")


class Hit(BaseModel):
    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None
    explain: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float


class SearchBatchResponse(BaseModel):
    results: list[SearchResponse]


class WriteResponse(BaseModel):
    """An acknowledged write: fsynced in the log (durable) and visible to the next search."""

    seq: int
    count: int
    shard_seqs: list[int] | None = Field(
        None, description="a sharded collection: each shard's log position after the write"
    )
    durable: bool = True
    visible: bool = True


class ErrorResponse(BaseModel):
    error: str
