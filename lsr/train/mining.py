"""Hard negatives from our own retrieval: BM25 (bm25s, :class:`lsr.baselines.bm25.Bm25sBaseline`).

For each query, the BM25 top ``depth`` over the whole corpus is retrieved; every document the
qrels judge relevant for the query (any grade > 0, in any split given) is removed, then the
first ``skip_top`` remaining ranks are skipped (near-duplicates of positives that were never
judged) and ``n`` negatives are sampled without replacement from the rest. With ``allowed``
(e.g. the candidates a teacher scored), only those documents can be negatives.

Sampling is deterministic: each query's generator is seeded from ``(seed, qid)`` (a SHA-256 of
both), so a query's negatives depend neither on the order of the queries nor on which other
queries are mined. BM25 itself is deterministic (ties by doc id). A query with fewer eligible
candidates than ``n`` is topped up with random non-positive documents of the corpus (counted in
:attr:`Mined.topped_up`); a corpus with no non-positive document at all is an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lsr.errors import InputError

__all__ = ["Mined", "mine_bm25_negatives", "query_rng"]


def query_rng(seed: int, qid: str) -> np.random.Generator:
    """A generator for one query, independent of every other query."""
    digest = hashlib.sha256(f"{seed}\x00{qid}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Mined:
    """Negatives per query id, and how many queries needed random top-ups."""

    negatives: dict[str, list[str]] = field(default_factory=dict)
    topped_up: int = 0


def mine_bm25_negatives(
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    positives: Mapping[str, Sequence[str] | Mapping[str, int]],
    n: int,
    *,
    depth: int = 100,
    skip_top: int = 0,
    seed: int = 0,
    allowed: Mapping[str, Sequence[str]] | None = None,
    threads: int = 1,
) -> Mined:
    """``n`` hard negatives per query of ``queries`` (see the module docstring).

    ``positives[qid]``: every document known relevant for the query (a list, or qrels
    ``{doc: grade}``, where grade > 0 counts); these are never negatives.
    """
    from lsr.baselines.bm25 import Bm25sBaseline

    if n < 0:
        raise InputError(f"negatives must be >= 0, got {n}")
    out = Mined()
    if n == 0 or not queries:
        out.negatives = {q: [] for q in queries}
        return out
    bm25 = Bm25sBaseline().index(corpus)
    ranked = bm25.search(queries, k=depth, threads=threads)
    doc_ids = sorted(corpus)
    for qid in queries:
        known = positives.get(qid, ())
        if isinstance(known, Mapping):
            excluded = {d for d, g in known.items() if g > 0}
        else:
            excluded = set(known)
        pool = [d for d, _ in ranked.get(qid, []) if d not in excluded][skip_top:]
        if allowed is not None:
            ok = set(allowed.get(qid, ()))
            pool = [d for d in pool if d in ok]
        rng = query_rng(seed, qid)
        if len(pool) >= n:
            picks = rng.choice(len(pool), size=n, replace=False)
            out.negatives[qid] = [pool[i] for i in sorted(picks)]
            continue
        chosen = list(pool)
        if allowed is not None:
            rest = [d for d in allowed.get(qid, ()) if d not in excluded and d not in chosen]
        else:
            rest = [d for d in doc_ids if d not in excluded and d not in set(chosen)]
        if len(chosen) + len(rest) < n:
            raise InputError(
                f"query {qid!r}: only {len(chosen) + len(rest)} documents can be negatives, "
                f"{n} wanted"
            )
        extra = rng.choice(len(rest), size=n - len(chosen), replace=False)
        chosen += [rest[i] for i in sorted(extra)]
        out.negatives[qid] = chosen
        out.topped_up += 1
    return out
