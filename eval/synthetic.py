"""Synthetic SPLADE-like collections and queries, fitted to real SPLADE vectors.

The index benchmark needs a collection far larger than any real one we have vectors for, with the
statistics that matter to an inverted index: posting-list lengths (document frequency), document
lengths, the weight distribution, and queries whose terms hit those lists the way real queries do.
Everything here is fitted to ``scifact-splade-tiny`` (5,183 docs, 1,109 queries in two modes) and
scales to any number of rows. It is deterministic given a seed (also across thread counts).

Model (one model, used for documents and for both query modes)
----------------------------------------------------------------
A real set of rows (docs, or queries of one mode) with ``R`` rows gives, per term ``t``, its
document frequency ``df_t`` (rows containing ``t``), the row lengths ``L_r`` and the weights.

* **Term rates.** A synthetic row contains term ``t`` independently with probability
  ``min(1, p'_t * a_r)``. ``p_t`` is a posterior draw of the term's rate, ``Gamma(df_t, 1) / R``:
  its mean is the observed ``df_t / R``, but a term seen once in 5,183 docs gets a spread of
  rates instead of exactly 193 docs per million, so rare terms form a smooth long tail of short
  posting lists. Terms never seen in the real rows get rate 0: the synthetic vocabulary is the
  real one (15,464 of 30,522 tokens for docs); most unseen tokens are ones SPLADE never activates.
* **Row lengths.** Each synthetic row draws a real row length ``L`` (its empirical distribution)
  and gets a propensity ``a_r`` for it. ``p'`` and ``a`` are calibrated jointly (alternating exact
  solves of piecewise-linear equations) so that (i) each term's expected df/N is exactly ``p_t``
  despite the ``min(1, .)`` clipping of frequent terms in long rows, and (ii) a row of class ``L``
  has expected length ``mean + k (L - mean)``, with ``k`` < 1 chosen so that adding the
  Poisson-binomial noise of the Bernoulli draws gives back the real length variance.
* **Weights.** Each posting's weight is drawn from that term's empirical real weights when the term
  has at least ``MIN_POOL`` of them, else from the pooled weights of all terms in the same
  ``floor(log2 df)`` bucket. Weights are therefore real SPLADE values (float32, > 0, quantized to
  1e-4 as in the source files). Within a term, the rank of a weight is almost independent of its
  row (doc-level share of rank variance ~0.1% for docs), so weights are drawn independently.
* **Queries.** ``siamese``: the model above fitted to the real model-encoded queries (rates from how
  often each term occurs in real queries, lengths and per-term weights from them).
  ``inference-free``: the same model fitted to the real IDF queries for terms and lengths; each
  weight is then ``ln((N - df + 0.5) / (df + 0.5) + 1)`` with ``N`` and ``df`` taken from the
  *synthetic* collection. Terms that real queries use but real docs never contain keep their share,
  so a query term without a posting list occurs about as often as for real (0.3% of siamese and
  2.3% of IDF query terms); :func:`fit_report` shows the share.

Not modelled: co-occurrence between terms (topics), so a term's postings are spread uniformly over
docs of a given length and query terms are independent of each other. Set intersections and
score distributions of top documents are therefore less skewed than with real text.
:func:`generate_clustered_collection` / :func:`generate_clustered_queries` add topics (see the
"topically clustered collections" section below).

Implementation: the per-row sampler is a Numba kernel that walks terms sorted by rate in
blocks of rates within a factor 2, skipping geometrically and thinning, so work is ~2 random
numbers per posting. Every row has its own counter-based random stream (splitmix64 seeded by seed
and row number), so a parallel count pass and a fill pass write CSR directly with exact memory
(~8 bytes per posting). One million docs (~250M postings) take well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

from lsr.sparse import SparseBatch, read_jsonl, write_npz
from lsr.vocab import Vocabulary

SHARED = Path(os.environ.get("LSR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DEFAULT_REAL_DIR = SHARED / "data" / "vectors" / "scifact-splade-tiny"
DEFAULT_VOCAB_DIR = SHARED / "models" / "splade-tiny"
MODES = ("siamese", "inference-free")
MIN_POOL = 10  # a term with fewer real weights draws from its df bucket's pool
_FILES = {
    "docs": "docs.jsonl.gz",
    "siamese": "queries-siamese.jsonl.gz",
    "inference-free": "queries-idf.jsonl.gz",
}


# -- fitting -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowModel:
    """What is fitted from one real set of rows (docs, or queries of one mode)."""

    n_rows: int  # real rows
    df: np.ndarray  # int64 [V]: real rows containing each term
    lengths: np.ndarray  # int64 [n_rows]: real row lengths
    pool: np.ndarray  # float32: weight pools, one segment per frequent term or df bucket
    pool_start: np.ndarray  # int64 [V]: a term's pool segment (0 length for unseen terms)
    pool_len: np.ndarray  # int64 [V]

    @classmethod
    def fit(cls, batch: SparseBatch) -> RowModel:
        csc = batch.matrix.tocsc()
        df = np.diff(csc.indptr).astype(np.int64)
        start, length = csc.indptr[:-1].astype(np.int64), df.copy()
        rare = (df > 0) & (df < MIN_POOL)
        bucket = np.floor(np.log2(np.maximum(df, 1))).astype(np.int64)
        posting_bucket = np.repeat(np.where(rare, bucket, -1), df)
        pools = [csc.data.astype(np.float32)]
        offset = csc.nnz
        for b in np.unique(bucket[rare]):
            segment = csc.data[posting_bucket == b].astype(np.float32)
            members = rare & (bucket == b)
            start[members], length[members] = offset, segment.size
            pools.append(segment)
            offset += segment.size
        return cls(
            len(batch),
            df,
            np.diff(batch.matrix.indptr).astype(np.int64),
            np.concatenate(pools),
            start,
            length,
        )


@lru_cache(maxsize=4)
def _real(real_dir: str) -> dict[str, SparseBatch]:
    vocab = Vocabulary.load(DEFAULT_VOCAB_DIR)
    return {kind: read_jsonl(Path(real_dir) / name, vocab) for kind, name in _FILES.items()}


@lru_cache(maxsize=12)
def _model(real_dir: str, kind: str) -> RowModel:
    return RowModel.fit(_real(real_dir)[kind])


def _solve_scale(s: np.ndarray, w: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target y, the x >= 0 with sum_j w_j min(1, x s_j) = y (s > 0; exact, vectorized).

    The left side is increasing and piecewise linear with breakpoints at x = 1/s_j.
    """
    order = np.argsort(-s, kind="stable")
    s, w = s[order], w[order]
    cum_w = np.cumsum(w)
    tail_ws = np.concatenate([np.cumsum((w * s)[::-1])[::-1], [0.0]])  # sum over j >= k
    at_break = cum_w + tail_ws[1:] / s  # value at x = 1/s_k: first k+1 items saturated
    m = np.searchsorted(at_break, targets, side="right")  # items saturated at the solution
    m = np.minimum(m, s.size - 1)
    clipped = np.where(m > 0, cum_w[np.maximum(m - 1, 0)], 0.0)
    return np.maximum(targets - clipped, 0.0) / tail_ws[m]


@dataclass
class _Plan:
    """A calibrated sampler: term rates sorted descending in factor-2 blocks, row-class scales."""

    rates: np.ndarray  # float64 p' sorted descending
    terms: np.ndarray  # int32 term ids in that order
    bounds: np.ndarray  # int64 block boundaries into rates
    class_scale: np.ndarray  # float64 a per row-length class
    class_prob: np.ndarray  # float64 probability of each class


def _plan(model: RowModel, rng: np.random.Generator) -> _Plan:
    terms = np.flatnonzero(model.df)
    n = model.n_rows
    p = np.minimum(rng.gamma(model.df[terms].astype(np.float64)) / n, (n - 0.5) / n)
    return _calibrate(p, terms, model.lengths)


def _calibrate(p: np.ndarray, terms: np.ndarray, lengths: np.ndarray) -> _Plan:
    """Calibrate rates ``p`` (< 1) of ``terms`` and row classes to the real row ``lengths``."""
    values, counts = np.unique(lengths, return_counts=True)
    w = counts / counts.sum()
    mean = float(w @ values)
    var = float(w @ (values - mean) ** 2)
    total = float(p.sum())  # expected synthetic length; equals `mean` up to the rate jitter
    k = 1.0
    for _ in range(3):  # shrink class means so that Bernoulli noise restores the real variance
        target = np.maximum(total / mean * (mean + k * (values - mean)), 0.5)
        target *= total / float(w @ target)
        a = target / total
        for _ in range(200):
            rates = _solve_scale(a, w, p)
            a_next = _solve_scale(rates, np.ones_like(rates), target)
            done = np.max(np.abs(a_next - a) / a) < 1e-9
            a = a_next
            if done:
                break
        q = np.minimum(1.0, np.outer(a, rates))
        noise = float(w @ (q * (1.0 - q)).sum(axis=1))
        k = math.sqrt(max(var - noise, 0.0) / var) if var > 0 else 0.0
    order = np.argsort(-rates, kind="stable")
    rates = rates[order]
    level = np.floor(np.log2(rates))
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(level)) + 1, [rates.size]])
    return _Plan(rates, terms[order].astype(np.int32), bounds.astype(np.int64), a, w)


# -- sampling kernels ----------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_DIRECT = 0.25  # blocks whose top inclusion probability is above this are drawn term by term


@numba.njit(cache=True, inline="always")
def _next(state):
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return state, z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _uniform(state):
    state, z = _next(state)
    return state, np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True)
def _row_state(seed, row):
    _, z = _next(np.uint64(seed) ^ (np.uint64(row) * _MIX2))
    return z


@numba.njit(cache=True)
def _sample_row(rates, terms, bounds, a, state, out, pos, write):
    """Draw the terms of one row with scale ``a``; return (count, state), writing when ``write``."""
    n = 0
    for b in range(bounds.size - 1):
        lo, hi = bounds[b], bounds[b + 1]
        qmax = rates[lo] * a
        if qmax <= 0.0:
            continue
        if qmax >= _DIRECT:
            for i in range(lo, hi):
                state, u = _uniform(state)
                if u < rates[i] * a:
                    if write:
                        out[pos + n] = terms[i]
                    n += 1
            continue
        log_miss = math.log1p(-qmax)
        i = lo - 1
        while True:  # candidates at rate qmax (geometric gaps), kept with prob rate/qmax
            state, u = _uniform(state)
            gap = math.log(1.0 - u) / log_miss
            if gap >= hi - i - 1:
                break
            i += 1 + np.int64(gap)
            state, u = _uniform(state)
            if u * qmax < rates[i] * a:
                if write:
                    out[pos + n] = terms[i]
                n += 1
    return n, state


@numba.njit(cache=True, parallel=True)
def _count_rows(rates, terms, bounds, scales, seed):
    counts = np.empty(scales.size, np.int64)
    dummy = np.empty(0, np.int32)
    for r in numba.prange(scales.size):
        n, _ = _sample_row(rates, terms, bounds, scales[r], _row_state(seed, r), dummy, 0, False)
        counts[r] = n
    return counts


@numba.njit(cache=True, parallel=True)
def _fill_rows(
    rates, terms, bounds, scales, seed, indptr, indices, data, pool, pool_start, pool_len
):
    for r in numba.prange(scales.size):
        lo = indptr[r]
        n, state = _sample_row(
            rates, terms, bounds, scales[r], _row_state(seed, r), indices, lo, True
        )
        indices[lo : lo + n].sort()
        for k in range(lo, lo + n):
            t = indices[k]
            state, u = _uniform(state)
            data[k] = pool[pool_start[t] + np.int64(u * pool_len[t])]


def _sample(model: RowModel, n_rows: int, rng: np.random.Generator, width: int) -> sp.csr_matrix:
    plan = _plan(model, rng)
    scales = plan.class_scale[rng.choice(plan.class_scale.size, size=n_rows, p=plan.class_prob)]
    seed = np.uint64(rng.integers(0, 2**63))
    counts = _count_rows(plan.rates, plan.terms, plan.bounds, scales, seed)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], np.int32)
    data = np.empty(indptr[-1], np.float32)
    _fill_rows(
        plan.rates,
        plan.terms,
        plan.bounds,
        scales,
        seed,
        indptr,
        indices,
        data,
        model.pool,
        model.pool_start,
        model.pool_len,
    )
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, width))


# -- public API ----------------------------------------------------------------------------------
def generate_collection(
    n_docs: int = 1_000_000, *, seed: int = 0, real_dir: str | Path = DEFAULT_REAL_DIR
) -> SparseBatch:
    """``n_docs`` synthetic documents (ids ``d0000000``...) over the splade-tiny vocabulary."""
    real = _real(str(real_dir))["docs"]
    rng = np.random.default_rng([seed, 0])
    matrix = _sample(_model(str(real_dir), "docs"), n_docs, rng, len(real.vocab))
    return SparseBatch([f"d{i:07d}" for i in range(n_docs)], matrix, real.vocab)


def document_frequency(matrix: sp.csr_matrix, chunk: int = 1 << 24) -> np.ndarray:
    """Rows containing each term (int64 [columns]); chunked so no int64 copy of all indices."""
    df = np.zeros(matrix.shape[1], np.int64)
    for start in range(0, matrix.nnz, chunk):
        df += np.bincount(matrix.indices[start : start + chunk], minlength=matrix.shape[1])
    return df


def idf(collection: SparseBatch) -> np.ndarray:
    """Per-term ``ln((N - df + 0.5) / (df + 0.5) + 1)`` over ``collection`` (float64)."""
    n = collection.matrix.shape[0]
    df = document_frequency(collection.matrix)
    return np.log((n - df + 0.5) / (df + 0.5) + 1.0)


def generate_queries(
    collection: SparseBatch,
    n_queries: int = 1000,
    *,
    mode: str = "siamese",
    seed: int = 1,
    real_dir: str | Path = DEFAULT_REAL_DIR,
) -> SparseBatch:
    """``n_queries`` synthetic queries (ids ``q000``...) in ``mode`` "siamese" or "inference-free".

    Inference-free weights are the IDF of each term in ``collection`` (see :func:`idf`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rng = np.random.default_rng([seed, 1 + MODES.index(mode)])
    matrix = _sample(_model(str(real_dir), mode), n_queries, rng, collection.matrix.shape[1])
    if mode == "inference-free":
        matrix.data = idf(collection)[matrix.indices].astype(np.float32)
    width = max(3, len(str(n_queries - 1)))
    return SparseBatch([f"q{i:0{width}d}" for i in range(n_queries)], matrix, collection.vocab)


# -- topically clustered collections -------------------------------------------------------------
# Real collections cluster by topic, and doc-id reordering (e.g. graph bisection) puts documents of
# one topic into contiguous doc-id ranges, which is where block-max pruning gains. The generators
# below fit K topics to the real docs (spherical k-means on L2-normalised vectors) and give every
# topic c a per-term lift, (df_ct + m) / (n_c df_t / N + m) with prior m = LIFT_PRIOR (shrinks
# rare counts toward 1), renormalised so that sum_c (n_c / N) lift_ct = 1: a topic-c row includes
# term t with rate p_t * lift_ct (clipped at MAX_TOPIC_RATE) and the marginal df stays p_t. Each
# topic gets its own calibration (as above, against the real length distribution, so a topic's
# mean length is its summed rate) and its own random streams; weights come from the same per-term
# pools. Docs are emitted grouped by topic (contiguous doc ids, topic sizes proportional to the
# real cluster sizes). Queries pick a topic by its synthetic size and use the query model's rates
# times the same doc lift.
LIFT_PRIOR = 1.0
MAX_TOPIC_RATE = 0.95
KMEANS_ITERATIONS = 25
KMEANS_SEED = 20240601


@dataclass(frozen=True)
class TopicModel:
    """Topics fitted on the real docs."""

    assignment: np.ndarray  # int64 [real docs]: each real doc's topic
    sizes: np.ndarray  # int64 [K]: real docs per topic
    lift: np.ndarray  # float64 [K, V]: per-topic term lift, sum_c sizes_c / N * lift_ct = 1


@lru_cache(maxsize=4)
def _topics(real_dir: str, n_topics: int) -> TopicModel:
    docs = _real(real_dir)["docs"].matrix.astype(np.float64).tocsr()
    n = docs.shape[0]
    norms = np.sqrt(np.asarray(docs.multiply(docs).sum(axis=1)).ravel())
    x = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ docs).tocsr()
    rng = np.random.default_rng(KMEANS_SEED)
    centroids = x[rng.choice(n, n_topics, replace=False)].toarray()
    assign = np.full(n, -1, np.int64)
    for _ in range(KMEANS_ITERATIONS):
        sim = np.asarray(x @ centroids.T)
        new = sim.argmax(axis=1).astype(np.int64)
        sizes = np.bincount(new, minlength=n_topics)
        empty = np.flatnonzero(sizes == 0)
        if np.array_equal(new, assign) and empty.size == 0:
            break
        assign = new
        member = sp.csr_matrix((np.ones(n), (assign, np.arange(n))), shape=(n_topics, n))
        centroids = (member @ x).toarray()
        if empty.size:  # reseed empty topics with the docs farthest from their centroid
            worst = np.argsort(sim[np.arange(n), assign], kind="stable")[: empty.size]
            centroids[empty] = x[worst].toarray()
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sizes = np.bincount(assign, minlength=n_topics).astype(np.int64)
    member = sp.csr_matrix((np.ones(n), (assign, np.arange(n))), shape=(n_topics, n))
    binary = docs.copy()
    binary.data[:] = 1.0
    df_ct = (member @ binary).toarray()
    p = df_ct.sum(axis=0) / n
    lift = (df_ct + LIFT_PRIOR) / (sizes[:, None] * p[None, :] + LIFT_PRIOR)
    lift /= (sizes / n) @ lift
    return TopicModel(assign, sizes, lift)


def _apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """``total`` split proportionally to ``weights`` (largest remainder; int64)."""
    share = weights / weights.sum() * total
    out = np.floor(share).astype(np.int64)
    out[np.argsort(out - share, kind="stable")[: total - int(out.sum())]] += 1
    return out


def _sample_clustered(
    model: RowModel,
    lift: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    width: int,
) -> sp.csr_matrix:
    """``counts[c]`` rows of topic ``c`` for every topic, grouped by topic in topic order."""
    terms = np.flatnonzero(model.df)
    n = model.n_rows
    p = np.minimum(rng.gamma(model.df[terms].astype(np.float64)) / n, (n - 0.5) / n)
    seeds = rng.integers(0, 2**63, size=counts.size)
    plans: list[_Plan | None] = []
    scales: list[np.ndarray] = []
    for c, rows in enumerate(counts):
        if rows == 0:
            plans.append(None)
            scales.append(np.empty(0))
            continue
        plan = _calibrate(np.minimum(p * lift[c, terms], MAX_TOPIC_RATE), terms, model.lengths)
        plans.append(plan)
        scales.append(plan.class_scale[rng.choice(plan.class_scale.size, rows, p=plan.class_prob)])
    start = np.concatenate([[0], np.cumsum(counts)])
    indptr = np.zeros(int(start[-1]) + 1, np.int64)
    for c, plan in enumerate(plans):
        if plan is not None:
            indptr[start[c] + 1 : start[c + 1] + 1] = _count_rows(
                plan.rates, plan.terms, plan.bounds, scales[c], np.uint64(seeds[c])
            )
    np.cumsum(indptr, out=indptr)
    indices = np.empty(indptr[-1], np.int32)
    data = np.empty(indptr[-1], np.float32)
    for c, plan in enumerate(plans):
        if plan is not None:
            _fill_rows(
                plan.rates,
                plan.terms,
                plan.bounds,
                scales[c],
                np.uint64(seeds[c]),
                indptr[start[c] : start[c + 1] + 1],
                indices,
                data,
                model.pool,
                model.pool_start,
                model.pool_len,
            )
    return sp.csr_matrix((data, indices, indptr), shape=(indptr.size - 1, width))


def generate_clustered_collection(
    n_docs: int = 1_000_000,
    *,
    n_topics: int = 50,
    seed: int = 0,
    real_dir: str | Path = DEFAULT_REAL_DIR,
) -> tuple[SparseBatch, np.ndarray]:
    """``n_docs`` topically clustered docs, grouped by topic, and each doc's topic (int32 [n]).

    Docs of topic 0 come first, then topic 1, ...; topic sizes follow the real cluster sizes.
    """
    real = _real(str(real_dir))["docs"]
    topics = _topics(str(real_dir), n_topics)
    counts = _apportion(topics.sizes.astype(np.float64), n_docs)
    rng = np.random.default_rng([seed, 10])
    matrix = _sample_clustered(
        _model(str(real_dir), "docs"), topics.lift, counts, rng, len(real.vocab)
    )
    doc_topics = np.repeat(np.arange(n_topics, dtype=np.int32), counts)
    return SparseBatch([f"d{i:07d}" for i in range(n_docs)], matrix, real.vocab), doc_topics


def generate_clustered_queries(
    collection: SparseBatch,
    doc_topics: np.ndarray,
    n_queries: int = 1000,
    *,
    mode: str = "siamese",
    n_topics: int = 50,
    seed: int = 1,
    real_dir: str | Path = DEFAULT_REAL_DIR,
) -> tuple[SparseBatch, np.ndarray]:
    """Queries for :func:`generate_clustered_collection`'s output, and each query's topic.

    A query picks a topic with probability proportional to its size in ``collection``
    (``doc_topics``, from the same ``n_topics``); its terms follow the ``mode`` query model's rates
    times that topic's doc lift. Inference-free weights are IDF over ``collection``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if doc_topics.size and int(doc_topics.max()) >= n_topics:
        raise ValueError(f"doc_topics has topics >= n_topics={n_topics}")
    topics = _topics(str(real_dir), n_topics)
    rng = np.random.default_rng([seed, 11 + MODES.index(mode)])
    sizes = np.bincount(doc_topics, minlength=n_topics).astype(np.float64)
    query_topics = rng.choice(n_topics, n_queries, p=sizes / sizes.sum()).astype(np.int32)
    counts = np.bincount(query_topics, minlength=n_topics)
    grouped = _sample_clustered(
        _model(str(real_dir), mode), topics.lift, counts, rng, collection.matrix.shape[1]
    )
    order = np.argsort(query_topics, kind="stable")  # grouped row j is query order[j]
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    matrix = grouped[where]
    matrix.sort_indices()
    if mode == "inference-free":
        matrix.data = idf(collection)[matrix.indices].astype(np.float32)
    width = max(3, len(str(n_queries - 1)))
    ids = [f"q{i:0{width}d}" for i in range(n_queries)]
    return SparseBatch(ids, matrix, collection.vocab), query_topics


_QUANTILES = {"p10": 10, "p50": 50, "p90": 90, "p99": 99}


def _summary(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {k: float("nan") for k in [*_QUANTILES, "mean"]}
    out = {
        k: float(v)
        for k, v in zip(_QUANTILES, np.percentile(x, list(_QUANTILES.values())), strict=True)
    }
    out["mean"] = float(x.mean())
    return out


def _weight_sample(matrix: sp.csr_matrix, limit: int = 2_000_000) -> np.ndarray:
    if matrix.nnz <= limit:
        return matrix.data
    return matrix.data[np.random.default_rng(0).integers(0, matrix.nnz, size=limit)]


def fit_report(
    collection: SparseBatch,
    queries: dict[str, SparseBatch],
    real_dir: str | Path = DEFAULT_REAL_DIR,
) -> dict:
    """Real vs synthetic: ``{"stats": {name: {"real": q, "synthetic": q}}, "extra": {...}}``.

    Each ``q`` holds p10/p50/p90/p99/mean. Stats: doc length, doc weight, df/N of the real top-100
    and top-1000 terms (same terms on both sides), and per query mode its length and weight. Real
    IDF-query weights use df from tokenized text; synthetic ones use the synthetic collection.
    ``extra`` has row/posting/term counts and the share of query terms with a posting list.
    """
    real = _real(str(real_dir))
    docs, m = real["docs"].matrix, collection.matrix
    real_df, syn_df = document_frequency(docs), document_frequency(m)
    top = np.argsort(-real_df, kind="stable")
    stats = {
        "doc length": (np.diff(docs.indptr), np.diff(m.indptr)),
        "doc weight": (docs.data, _weight_sample(m)),
    }
    for k in (100, 1000):
        stats[f"df/N top-{k} terms"] = (
            real_df[top[:k]] / docs.shape[0],
            syn_df[top[:k]] / max(m.shape[0], 1),
        )
    extra: dict[str, dict[str, float]] = {
        "rows": {"real": docs.shape[0], "synthetic": m.shape[0]},
        "postings": {"real": docs.nnz, "synthetic": m.nnz},
        "terms in docs": {"real": int((real_df > 0).sum()), "synthetic": int((syn_df > 0).sum())},
    }
    for mode, batch in queries.items():
        rq, sq = real[mode].matrix, batch.matrix
        stats[f"{mode} query length"] = (np.diff(rq.indptr), np.diff(sq.indptr))
        stats[f"{mode} query weight"] = (rq.data, sq.data)
        extra[f"{mode} query terms with postings"] = {
            "real": float((real_df[rq.indices] > 0).mean()),
            "synthetic": float((syn_df[sq.indices] > 0).mean()) if sq.nnz else float("nan"),
        }
    summaries = {k: {"real": _summary(r), "synthetic": _summary(s)} for k, (r, s) in stats.items()}
    return {"stats": summaries, "extra": extra}


def report_markdown(report: dict) -> str:
    """:func:`fit_report`'s result as Markdown tables."""
    cols = [*_QUANTILES, "mean"]
    lines = ["| statistic | source | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for name, sides in report["stats"].items():
        for side in ("real", "synthetic"):
            cells = " | ".join(f"{sides[side][c]:.4g}" for c in cols)
            lines.append(f"| {name} | {side} | {cells} |")
    lines += ["", "| quantity | real | synthetic |", "|---|---:|---:|"]
    for name, sides in report["extra"].items():
        real, syn = (f"{v:,}" if isinstance(v, int) else f"{v:.4g}" for v in sides.values())
        lines.append(f"| {name} | {real} | {syn} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000, help="documents to generate")
    parser.add_argument("--queries", type=int, default=1000, help="queries per mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-dir", type=Path, default=DEFAULT_REAL_DIR)
    parser.add_argument("--out", type=Path, help="write the collection here (.npz)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    _model(str(args.real_dir), "docs")
    t1 = time.perf_counter()
    collection = generate_collection(args.docs, seed=args.seed, real_dir=args.real_dir)
    t2 = time.perf_counter()
    queries = {
        mode: generate_queries(
            collection, args.queries, mode=mode, seed=args.seed + 1, real_dir=args.real_dir
        )
        for mode in MODES
    }
    t3 = time.perf_counter()
    print(report_markdown(fit_report(collection, queries, args.real_dir)))
    print(
        f"\nfit (read real vectors): {t1 - t0:.1f} s; {args.docs:,} docs, "
        f"{collection.matrix.nnz:,} postings: {t2 - t1:.1f} s; "
        f"{2 * args.queries} queries: {t3 - t2:.1f} s"
    )
    if args.out:
        write_npz(collection, args.out)
        print(f"wrote {args.out} in {time.perf_counter() - t3:.1f} s")


if __name__ == "__main__":
    main()
