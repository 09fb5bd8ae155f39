"""Writes to a collection, from validated request bodies: run by the process that owns the
collection, whether the request reached it directly or was forwarded by another worker."""

from __future__ import annotations

from typing import Any

from lsr.collection import Collection
from service.errors import ClientError
from service.models import (
    DeleteByFilter,
    DeleteByIds,
    DeleteRequest,
    UpsertRequest,
    WriteResponse,
)
from service.registry import NotFound
from service.settings import ServiceSettings

WRITES = ("upsert", "delete_one", "delete")


def check_upsert(body: UpsertRequest, settings: ServiceSettings) -> None:
    """What the schema cannot say about an upsert (checked before anything is written)."""
    docs = body.documents
    if len(docs) > settings.max_batch:
        raise ClientError(400, f"at most {settings.max_batch} documents per request")
    with_vector = [d.vector is not None for d in docs]
    if any(with_vector) and not all(with_vector):
        raise ClientError(400, "give every document of a request a vector, or none")
    for d in docs:
        if d.text is not None and len(d.text) > settings.max_text_chars:
            raise ClientError(400, f"document {d.id!r}: text over {settings.max_text_chars}")
    with_dense = [d.dense is not None for d in docs]
    if any(with_dense) and not all(with_dense):
        raise ClientError(400, "give every document of a request a dense vector, or none")


def check_delete(body: DeleteRequest, settings: ServiceSettings) -> None:
    if isinstance(body, DeleteByIds) and len(body.ids) > settings.max_batch:
        raise ClientError(400, f"at most {settings.max_batch} ids per request")


def parse(op: str, body: Any) -> Any:
    """A forwarded write's body back as its request model."""
    if op == "upsert":
        return UpsertRequest.model_validate(body)
    if op == "delete":
        return (DeleteByIds if "ids" in body else DeleteByFilter).model_validate(body)
    return str(body)  # delete_one: the document id


def run_write(collection: Collection, name: str, op: str, body: Any) -> WriteResponse:
    """Apply one write (``op`` in :data:`WRITES`) to ``collection``; returns once durable."""
    if op == "upsert":
        docs = body.documents
        texts = [d.text for d in docs]
        result = collection.upsert(
            [d.id for d in docs],
            vectors=[d.vector for d in docs] if docs[0].vector is not None else None,
            texts=texts if any(t is not None for t in texts) else None,
            dense=[d.dense for d in docs] if docs[0].dense is not None else None,
            metadata=[d.metadata for d in docs],
        )
    elif op == "delete_one":
        result = collection.delete([body])
        if result.count == 0:
            raise NotFound(f"no document {body!r} in {name!r}")
    elif op == "delete":
        if isinstance(body, DeleteByIds):
            result = collection.delete(body.ids)
        else:
            result = collection.delete_by_filter(body.filter)
    else:
        raise ValueError(f"unknown write {op!r}")
    shard_seqs = getattr(result, "shard_seqs", None)
    return WriteResponse(
        seq=result.seq,
        count=result.count,
        shard_seqs=None if shard_seqs is None else list(shard_seqs),
    )
