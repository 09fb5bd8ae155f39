"""Request and response bodies: strict pydantic models (unknown fields and type coercion refused),
so the OpenAPI document is exactly what the service accepts."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CreateCollection(Strict):
    """A new collection: vectors over a vocabulary, or texts through a model."""

    model: str | None = Field(None, description="sparse encoder (local path or hub id)")
    vocab: list[str] | None = Field(None, description="vocabulary, when vectors are given")
    query_mode: Literal["siamese", "inference-free"] = "siamese"
    idf: str | None = Field(None, description="idf.json for inference-free queries")
    dense_model: str | None = Field(None, description="sentence-transformers model for dense")
    dense_dim: int | None = Field(None, ge=1, le=8192, description="dense size, vectors given")
    quantization: Literal["float16", "float32", "uint8"] = "float16"
    max_weight: float | None = Field(None, gt=0)
    flush_docs: int = Field(4096, ge=1, le=1_000_000)
    merge_factor: int = Field(8, ge=2, le=64)
    schema_: dict[str, Literal["keyword", "number", "bool"]] = Field(
        default_factory=dict, alias="schema", description="declared metadata fields"
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


class DeleteRequest(Strict):
    ids: list[str] | None = Field(None, min_length=1)
    filter: dict[str, Any] | None = None


class Fusion(Strict):
    """How hybrid search fuses its sparse and dense legs (scores after fusion are returned)."""

    method: Literal["rrf", "minmax", "zscore"] = "rrf"
    alpha: float = Field(0.5, ge=0, le=1, description="sparse weight (convex methods)")
    rrf_k: int = Field(60, ge=1, le=10_000)
    depth: int = Field(
        100, ge=1, le=10_000, description="hits per leg; must cover offset + limit (stable pages)"
    )


class SearchRequest(Strict):
    """A query (text, sparse vector and/or dense vector) with paging, filter and output fields."""

    query: str | None = Field(None, description="text, encoded by the collection's query side")
    vector: dict[str, float] | None = Field(None, description="sparse query {token: weight}")
    dense: list[float] | None = Field(None, description="dense query vector")
    mode: Literal["sparse", "dense", "hybrid"] = "sparse"
    limit: int = Field(10, ge=1)
    offset: int = Field(0, ge=0)
    filter: dict[str, Any] | None = None
    score_threshold: float | None = Field(
        None, description="drop hits scoring below it (the returned score: after fusion)"
    )
    fusion: Fusion = Field(default_factory=Fusion)
    with_text: bool = False
    with_metadata: bool = False


class Hit(BaseModel):
    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    took_ms: float


class WriteResponse(BaseModel):
    """An acknowledged write: fsynced in the log (durable) and visible to the next search."""

    seq: int
    count: int
    durable: bool = True
    visible: bool = True


class ErrorResponse(BaseModel):
    error: str
