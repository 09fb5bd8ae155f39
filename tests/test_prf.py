"""Pseudo-relevance feedback on live collections against a plain oracle: Rocchio and Vector-PRF
written over dicts and lists, scored by brute force, fused by hand (RRF, min-max convex).

Weights are multiples of 1/4, feedback depths 1, 2 or 4 and mixing weights dyadic, so every
sum on both sides is exact and ids and scores must match bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from collection_oracle import brute_force, oracle_matches

from lsr.collection.collection import Collection
from lsr.collection.prf import DensePrf, PrfConfig, SparsePrf, rocchio_sparse
from lsr.errors import InputError
from lsr.retrieval import FusionConfig
from lsr.sparse import TermWeights
from lsr.types import Hit
from lsr.vocab import Vocabulary

N_TERMS = 12
DIM = 4
TOKENS = [f"t{i:02d}" for i in range(N_TERMS)]  # token order == term-id order
VOCAB = Vocabulary(TOKENS, frozen=True)
FILTER = {"g": {"gte": 1}}

Doc = tuple[dict[str, float], list[float], dict[str, Any]]


# -- the oracle ---------------------------------------------------------------------------------
def top(scored: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    """Best k by score, ties by smaller id."""
    return sorted(scored.items(), key=lambda p: (-p[1], p[0]))[:k]


def sparse_run(model: Mapping[str, Doc], q: Mapping[str, float], k: int, flt: Any) -> list:
    plain = {i: (vec, meta) for i, (vec, _, meta) in model.items()}
    return brute_force(plain, q, k, flt)


def dense_run(model: Mapping[str, Doc], q: Sequence[float], k: int, flt: Any) -> list:
    scores = {
        i: sum(a * b for a, b in zip(row, q, strict=True))
        for i, (_, row, meta) in model.items()
        if flt is None or oracle_matches(flt, meta)
    }
    return top(scores, k)


def rocchio(model: Mapping[str, Doc], q: Mapping[str, float], ids: list[str], p: SparsePrf) -> dict:
    vecs = [model[i][0] for i in ids]
    mean = {t: sum(v.get(t, 0.0) for v in vecs) / len(vecs) for t in {t for v in vecs for t in v}}
    new = {t: p.alpha * w + p.beta * mean.get(t, 0.0) for t, w in q.items()}
    fresh = [(p.beta * w, t) for t, w in mean.items() if t not in q and p.beta * w > 0]
    for w, t in sorted(fresh, key=lambda x: (-x[0], TOKENS.index(x[1])))[: p.expansion_terms]:
        new[t] = w
    return {t: w for t, w in new.items() if w > 0}


def vector_prf(model: Mapping[str, Doc], q: Sequence[float], ids: list[str], p: DensePrf) -> list:
    rows = [model[i][1] for i in ids]
    return [p.alpha * x + p.beta * sum(r[j] for r in rows) / len(rows) for j, x in enumerate(q)]


def fuse(a: list, b: list, k: int, fusion: FusionConfig) -> list[tuple[str, float]]:
    if fusion.method == "rrf":
        scores: dict[str, float] = {}
        for run in (a, b):
            for rank, (doc, _) in enumerate(run, start=1):
                scores[doc] = scores.get(doc, 0.0) + 1.0 / (fusion.rrf_k + rank)
        return top(scores, k)
    assert fusion.method == "minmax"

    def norm(run: list) -> dict[str, float]:
        if not run:
            return {}
        lo, hi = min(s for _, s in run), max(s for _, s in run)
        return {d: 1.0 if hi == lo else (s - lo) / (hi - lo) for d, s in run}

    na, nb = norm(a), norm(b)
    fa, fb = min(na.values(), default=0.0), min(nb.values(), default=0.0)
    docs = dict.fromkeys([d for d, _ in a] + [d for d, _ in b])
    weights = (fusion.alpha, 1.0 - fusion.alpha)
    return top({d: weights[0] * na.get(d, fa) + weights[1] * nb.get(d, fb) for d in docs}, k)


def oracle(
    model: Mapping[str, Doc],
    q: Mapping[str, float],
    vec: Sequence[float],
    k: int,
    prf: PrfConfig,
    mode: str,
    flt: Any,
    fusion: FusionConfig,
) -> list[tuple[str, float]]:
    def fb(run: list, m: int) -> list[str]:
        return [d for d, _ in run[:m]]

    if mode == "sparse":
        assert prf.sparse is not None
        first = sparse_run(model, q, max(k, prf.sparse.m), flt)
        return sparse_run(model, rocchio(model, q, fb(first, prf.sparse.m), prf.sparse), k, flt)
    if mode == "dense":
        assert prf.dense is not None
        first = dense_run(model, vec, max(k, prf.dense.m), flt)
        return dense_run(model, vector_prf(model, vec, fb(first, prf.dense.m), prf.dense), k, flt)
    depth = max([k, fusion.depth] + [p.m for p in (prf.sparse, prf.dense) if p is not None])
    s1, d1 = sparse_run(model, q, depth, flt), dense_run(model, vec, depth, flt)
    s_src = d_src = fuse(s1, d1, depth, fusion) if prf.interpolation != "after" else None
    s2, d2 = s1, d1
    if prf.sparse is not None:
        ids = fb(s_src or s1, prf.sparse.m)
        s2 = sparse_run(model, rocchio(model, q, ids, prf.sparse), depth, flt) if ids else []
    if prf.dense is not None:
        ids = fb(d_src or d1, prf.dense.m)
        d2 = dense_run(model, vector_prf(model, vec, ids, prf.dense), depth, flt) if ids else []
    if prf.interpolation == "before":
        return (s2 if prf.sparse is not None else d2)[:k]
    return fuse(s2, d2, k, fusion)


# -- collections --------------------------------------------------------------------------------
def random_docs(rng: np.random.Generator, n: int, prefix: str) -> dict[str, Doc]:
    docs: dict[str, Doc] = {}
    for i in range(n):
        terms = rng.choice(N_TERMS, size=int(rng.integers(1, 6)), replace=False)
        vec = {TOKENS[t]: int(rng.integers(1, 9)) / 4 for t in terms}
        row = [int(x) / 4 for x in rng.integers(-6, 7, size=DIM)]
        docs[f"{prefix}{i:02d}"] = (vec, row, {"g": int(rng.integers(0, 3))})
    return docs


def random_query(rng: np.random.Generator) -> tuple[dict[str, float], list[float]]:
    terms = rng.choice(N_TERMS, size=int(rng.integers(1, 4)), replace=False)
    q = {TOKENS[t]: int(rng.integers(1, 9)) / 4 for t in terms}
    return q, [int(x) / 4 for x in rng.integers(-6, 7, size=DIM)]


def upsert(c: Collection, docs: Mapping[str, Doc]) -> None:
    ids = list(docs)
    c.upsert(
        ids,
        vectors=[docs[i][0] for i in ids],
        dense=np.array([docs[i][1] for i in ids], dtype=np.float32),
        metadata=[docs[i][2] for i in ids],
    )


LAYOUTS = ("buffer", "segments", "mixed")


@pytest.fixture(scope="module", params=LAYOUTS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Collection, dict[str, Doc]]]:
    """A collection and its plain model: documents in the buffer, in segments (some replaced and
    deleted, so stale versions exist) or both."""
    layout = request.param
    rng = np.random.default_rng(7)
    path: Path = tmp_path_factory.mktemp(f"prf-{layout}") / "c"
    c = Collection.create(
        path, vocab=VOCAB, dense_dim=DIM, flush_docs=10_000, block_size=2, schema={"g": "number"}
    )
    model: dict[str, Doc] = {}
    for batch in range(3):
        docs = random_docs(rng, 14, f"d{batch}")
        upsert(c, docs)
        model.update(docs)
        if layout == "segments" or (layout == "mixed" and batch == 0):
            c.flush()
    # replace some documents and delete others, across the layout's parts
    replaced = random_docs(rng, 6, "x")
    replaced = {old: doc for old, doc in zip(["d000", "d105", "d207", "d011", "d112", "d213"],
                                             replaced.values(), strict=True)}  # fmt: skip
    upsert(c, replaced)
    model.update(replaced)
    c.delete(["d001", "d104", "d209"])
    for gone in ("d001", "d104", "d209"):
        del model[gone]
    if layout == "segments":
        c.flush()
    assert len(c) == len(model)
    yield c, model
    c.close()


SPARSE_CONFIGS = [
    SparsePrf(m=1, alpha=1.0, beta=0.5, expansion_terms=3),
    SparsePrf(m=2, alpha=0.5, beta=1.0, expansion_terms=0),
    SparsePrf(m=4, alpha=1.0, beta=0.25, expansion_terms=20),
    SparsePrf(m=2, alpha=0.0, beta=1.0, expansion_terms=1),
]
DENSE_CONFIGS = [
    DensePrf(m=1, alpha=1.0, beta=1.0),
    DensePrf(m=2, alpha=0.5, beta=1.0),
    DensePrf(m=4, alpha=1.0, beta=0.25),
    DensePrf(m=2, alpha=0.0, beta=1.0),
]


def hits(c: Collection, *args: Any, **kwargs: Any) -> list[tuple[str, float]]:
    return [(h.doc_id, h.score) for h in c.search(*args, **kwargs)]


def queries(seed: int, n: int) -> list[tuple[dict[str, float], list[float]]]:
    rng = np.random.default_rng(seed)
    return [random_query(rng) for _ in range(n)]


@pytest.mark.parametrize("flt", [None, FILTER])
def test_sparse_prf_matches_oracle(live: tuple[Collection, dict[str, Doc]], flt: Any) -> None:
    c, model = live
    for (q, _), cfg, k in itertools.product(queries(1, 6), SPARSE_CONFIGS, (1, 3, 10)):
        prf = PrfConfig(sparse=cfg)
        want = oracle(model, q, [], k, prf, "sparse", flt, FusionConfig())
        assert hits(c, q, k, filter=flt, prf=prf) == want, (q, cfg, k)
        # TermWeights queries take the same path
        tw = TermWeights(np.array([VOCAB.get(t) for t in q]), np.array(list(q.values()), "f4"))
        assert hits(c, tw, k, filter=flt, prf=prf) == want


def test_sparse_prf_changes_the_ranking(live: tuple[Collection, dict[str, Doc]]) -> None:
    """Guard against a vacuous oracle: feedback must actually change some answers."""
    c, _ = live
    prf = PrfConfig(sparse=SparsePrf(m=2, alpha=1.0, beta=1.0, expansion_terms=5))
    changed = sum(hits(c, q, 10, prf=prf) != hits(c, q, 10) for q, _ in queries(2, 10))
    assert changed >= 3


@pytest.mark.parametrize("flt", [None, FILTER])
def test_dense_prf_matches_oracle(live: tuple[Collection, dict[str, Doc]], flt: Any) -> None:
    c, model = live
    changed = 0
    for (_, vec), cfg, k in itertools.product(queries(3, 6), DENSE_CONFIGS, (1, 3, 10)):
        prf = PrfConfig(dense=cfg)
        want = oracle(model, {}, vec, k, prf, "dense", flt, FusionConfig())
        got = hits(c, None, k, filter=flt, mode="dense", dense=vec, prf=prf)
        assert got == want, (vec, cfg, k)
        changed += got != hits(c, None, k, filter=flt, mode="dense", dense=vec)
    assert changed > 0


LEGS = {
    "sparse": PrfConfig(sparse=SPARSE_CONFIGS[0]),
    "dense": PrfConfig(dense=DENSE_CONFIGS[1]),
    "both": PrfConfig(sparse=SPARSE_CONFIGS[2], dense=DENSE_CONFIGS[0]),
}
FUSIONS = [FusionConfig(depth=8), FusionConfig(method="minmax", alpha=0.75, depth=5)]


@pytest.mark.parametrize(
    ("interpolation", "legs"),
    # "before" with PRF on both legs is rejected (test_search_validation)
    [
        (i, legs)
        for i in ("after", "before", "both")
        for legs in LEGS
        if (i, legs) != ("before", "both")
    ],
)
def test_hybrid_prf_matches_oracle(
    live: tuple[Collection, dict[str, Doc]], interpolation: str, legs: str
) -> None:
    c, model = live
    base = LEGS[legs]
    prf = PrfConfig(sparse=base.sparse, dense=base.dense, interpolation=interpolation)
    for (q, vec), fusion, flt, k in itertools.product(
        queries(4, 5), FUSIONS, [None, FILTER], (1, 4, 10)
    ):
        want = oracle(model, q, vec, k, prf, "hybrid", flt, fusion)
        got = hits(c, q, k, filter=flt, mode="hybrid", dense=vec, fusion=fusion, prf=prf)
        assert got == want, (q, vec, fusion, flt, k)


def test_interpolations_differ(live: tuple[Collection, dict[str, Doc]]) -> None:
    """The three interpolations are different functions (each one is checked above)."""
    c, _ = live
    answers = {}
    for how in ("after", "before", "both"):
        prf = PrfConfig(sparse=SPARSE_CONFIGS[2], interpolation=how)
        answers[how] = [
            hits(c, q, 10, mode="hybrid", dense=v, fusion=FUSIONS[0], prf=prf)
            for q, v in queries(5, 8)
        ]
    assert answers["after"] != answers["both"]
    assert answers["before"] != answers["both"]


def test_prf_none_is_plain_search(live: tuple[Collection, dict[str, Doc]]) -> None:
    c, model = live
    for (q, vec), flt in itertools.product(queries(6, 5), [None, FILTER]):
        assert hits(c, q, 5, filter=flt, prf=None) == sparse_run(model, q, 5, flt)
        assert hits(c, q, 5, filter=flt) == sparse_run(model, q, 5, flt)
        plain = hits(c, None, 5, filter=flt, mode="dense", dense=vec)
        assert hits(c, None, 5, filter=flt, mode="dense", dense=vec, prf=None) == plain
        assert plain == dense_run(model, vec, 5, flt)
        fused = hits(c, q, 5, filter=flt, mode="hybrid", dense=vec)
        assert hits(c, q, 5, filter=flt, mode="hybrid", dense=vec, prf=None) == fused


def test_no_feedback_documents(live: tuple[Collection, dict[str, Doc]]) -> None:
    c, _ = live
    nothing = {"g": {"gt": 100}}
    prf = PrfConfig(sparse=SparsePrf(), dense=DensePrf())
    assert c.search({"t01": 1.0}, 5, filter=nothing, prf=PrfConfig(sparse=SparsePrf())) == []
    vec = [1.0] * DIM
    assert c.search({"t01": 1.0}, 5, filter=nothing, mode="hybrid", dense=vec, prf=prf) == []


def test_payload_with_prf(live: tuple[Collection, dict[str, Doc]]) -> None:
    c, model = live
    q, _ = queries(8, 1)[0]
    prf = PrfConfig(sparse=SPARSE_CONFIGS[0])
    matches = c.search(q, 3, prf=prf, with_payload=True)
    assert [(m.id, m.score) for m in matches] == hits(c, q, 3, prf=prf)
    assert all(m.metadata == model[m.id][2] for m in matches)


# -- the query update on its own ----------------------------------------------------------------
class FakeDoc:
    def __init__(self, vec: dict[int, float]) -> None:
        self.terms = np.array(sorted(vec), dtype=np.int32)
        self.weights = np.array([vec[t] for t in sorted(vec)], dtype=np.float32)


def test_rocchio_keeps_query_terms_and_caps_expansion() -> None:
    query = TermWeights(np.array([2, 5]), np.array([1.0, 0.5], np.float32))
    docs = [FakeDoc({5: 1.0, 7: 2.0, 9: 2.0, 1: 0.5}), FakeDoc({7: 2.0, 3: 4.0, 2: 1.0})]
    out = rocchio_sparse(query, docs, SparsePrf(m=2, alpha=2.0, beta=0.5, expansion_terms=2))
    got = dict(zip(out.terms.tolist(), out.weights.tolist(), strict=True))
    # means: 1:.25 2:.5 3:2 5:.5 7:2 9:1 -> new terms 3 and 7 (tie at 1.0: both kept), 9 dropped
    assert got == {2: 2.0 + 0.25, 5: 1.0 + 0.25, 3: 1.0, 7: 1.0}
    assert out.terms.tolist() == sorted(got)
    out = rocchio_sparse(query, docs, SparsePrf(m=2, alpha=2.0, beta=0.5, expansion_terms=1))
    assert 3 in out.terms.tolist() and 7 not in out.terms.tolist()  # tie: smaller term id
    out = rocchio_sparse(query, docs, SparsePrf(m=2, alpha=2.0, beta=0.5, expansion_terms=0))
    assert out.terms.tolist() == [2, 5]
    assert out.weights.dtype == np.float32 and np.all(np.isfinite(out.weights))


def test_rocchio_overflow_is_an_input_error() -> None:
    query = TermWeights(np.array([0]), np.array([3e38], np.float32))
    with pytest.raises(InputError, match="overflow"):
        rocchio_sparse(query, [FakeDoc({0: 3e38})], SparsePrf(m=1, alpha=1.0, beta=1.0))


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SparsePrf(m=0), "m .feedback documents. must be a positive integer"),
        (lambda: SparsePrf(m=1.5), "positive integer"),
        (lambda: DensePrf(m=True), "positive integer"),
        (lambda: SparsePrf(alpha=-1.0), "sparse PRF alpha must be a finite number >= 0"),
        (lambda: DensePrf(beta=float("nan")), "dense PRF beta must be a finite number >= 0"),
        (lambda: DensePrf(alpha=float("inf")), "finite"),
        (lambda: SparsePrf(beta="1"), "must be a number"),
        (lambda: SparsePrf(alpha=0.0, beta=0.0), "cannot both be 0"),
        (lambda: SparsePrf(expansion_terms=-1), "expansion_terms must be an integer >= 0"),
        (lambda: PrfConfig(), "needs sparse="),
        (lambda: PrfConfig(sparse=SparsePrf(), interpolation="middle"), "interpolation must be"),
        (lambda: PrfConfig(sparse=DensePrf()), "must be a SparsePrf"),
        (lambda: PrfConfig(dense=SparsePrf()), "must be a DensePrf"),
    ],
)
def test_config_validation(make: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


def test_search_validation(live: tuple[Collection, dict[str, Doc]]) -> None:
    c, _ = live
    q, vec = {"t01": 1.0}, [1.0] * DIM
    with pytest.raises(InputError, match="dense PRF needs mode 'dense' or 'hybrid'"):
        c.search(q, 3, prf=PrfConfig(dense=DensePrf()))
    with pytest.raises(InputError, match="sparse PRF needs mode 'sparse' or 'hybrid'"):
        c.search(None, 3, mode="dense", dense=vec, prf=PrfConfig(sparse=SparsePrf()))
    both = PrfConfig(sparse=SparsePrf(), dense=DensePrf(), interpolation="before")
    with pytest.raises(InputError, match="'before' answers with the one leg"):
        c.search(q, 3, mode="hybrid", dense=vec, prf=both)
    with pytest.raises(InputError, match="prf must be a PrfConfig"):
        c.search(q, 3, prf={"sparse": {"m": 3}})
    with pytest.raises(InputError, match="needs a query"):
        c.search(None, 3, prf=PrfConfig(sparse=SparsePrf()))
    with pytest.raises(InputError, match="k must be a positive integer"):
        c.search(q, 0, prf=PrfConfig(sparse=SparsePrf()))
    with pytest.raises(InputError, match="nope"):
        c.search(q, 3, filter={"nope": 1}, prf=PrfConfig(sparse=SparsePrf()))


def test_hits_are_hits(live: tuple[Collection, dict[str, Doc]]) -> None:
    c, _ = live
    out = c.search({"t02": 1.0}, 3, prf=PrfConfig(sparse=SparsePrf()))
    assert all(isinstance(h, Hit) for h in out)
