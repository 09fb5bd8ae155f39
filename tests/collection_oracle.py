"""The plain model live collections are checked against: the filter language evaluated the
obvious way, and brute-force top-k over ``{id: (vector, metadata)}`` (independent of lsr)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Vector = Mapping[str, float]


def oracle_matches(flt: Mapping[str, Any], meta: Mapping[str, Any] | None) -> bool:
    """Does a document with ``meta`` match ``flt`` (see docs/collections.md)?"""
    meta = meta or {}
    if "and" in flt:
        return all(oracle_matches(f, meta) for f in flt["and"])
    if "or" in flt:
        return any(oracle_matches(f, meta) for f in flt["or"])
    if "not" in flt:
        return not oracle_matches(flt["not"], meta)
    ((field, cond),) = flt.items()
    value = meta.get(field)
    if not isinstance(cond, dict):
        return value is not None and value == cond and type(value) is type(cond)
    if "exists" in cond:
        return (value is not None) == cond["exists"]
    if value is None:
        return False
    if "in" in cond:
        return value in cond["in"]
    if "ne" in cond:
        return value != cond["ne"]
    ops = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__}
    return all(ops[op](bound) for op, bound in cond.items())


def brute_force(
    model: Mapping[str, tuple[Vector, Mapping[str, Any] | None]],
    query: Vector,
    k: int,
    flt: Mapping[str, Any] | None = None,
) -> list[tuple[str, float]]:
    """Top k by score (positive only), ties by smaller id, over documents matching ``flt``."""
    scored = []
    for doc_id, (vector, meta) in model.items():
        if flt is not None and not oracle_matches(flt, meta):
            continue
        score = sum(w * vector.get(t, 0.0) for t, w in query.items())
        if score > 0:
            scored.append((-score, doc_id))
    return [(doc_id, -neg) for neg, doc_id in sorted(scored)[:k]]
