"""Live collection benchmark: durable writes, search by layout, merges, filtered search.

Everything a live collection (lsr.collection) adds to an immutable index is timed against an
anchor measured in the same run, and reported as a ratio (absolute numbers are noisy here):

1. Upserts, vectors given, durable (each call returns after its fsync), default settings
   (flush_docs 4096: the flushes a run triggers are part of its time): docs/s at batch 1, 16
   and 256 with one writer, and 4 writer threads of batch 16 (group commit: they share fsyncs).
   Anchors: a bare ``os.write`` + ``os.fsync`` loop in the same directory (the durable-call
   ceiling) and ``SparseIndex.build`` of the same vectors (the bulk, immutable path).
   Text upserts through the model (splade-tiny, inference-free, IDF computed over the SciFact
   corpus) against the same encoder alone on the same texts: the collection's overhead.
2. Search latency (k=10, one thread, p50/p99 over the queries) over the same documents in
   several layouts: one merged segment (after ``compact()``, the anchor); the write buffer
   holding the last B documents (flush_docs huge, the rest in one segment); N equal segments
   with nothing buffered; and a plain ``SparseIndex.build`` with the same float16 codes searched
   with ``index.search`` (the immutable-index anchor). Every layout must return the merged
   collection's hits exactly (ids and scores); the plain index's ids are compared.
3. Merge: ``compact()`` of 16 (and 4) equal segments into one, docs/s against the plain build.
4. Filtered search, metadata ``r`` uniform in [0, 1), filter ``{"r": {"lt": s}}`` for
   selectivities s = 0.1 %, 1 %, 10 %, 50 %, on the merged collection: the default plan
   ("auto"), both forced plans ("taat": score all postings, keep allowed documents; "forward":
   score each allowed document's forward row), unfiltered search, and post-filtering (search
   unfiltered with k' = 2k/s, doubling k' until k matches are found, filter in Python with
   an in-memory dict: the cheapest post-filter an application could write). Whenever the
   post-filter found k matches (or saw every document), its hits must equal the in-kernel
   ones exactly; all three plans must agree always.

Workloads for 2-4: SciFact encoded by splade-tiny (5,183 docs, the 300 test queries, siamese
vectors) and a synthetic SPLADE-like collection fitted to it (eval/synthetic.py, ``--docs``).
Latency runs every system over all queries in turn, for R rounds in alternating order; each
query's time is its median over the rounds (other processes on this machine add noise).

    python -m eval.bench_live [--docs 200000] [--queries 300] [--out eval/results]
    python -m eval.bench_live --quick       # tiny sizes, < 1 minute, writes to eval/work/
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import lsr
from eval.bench_index import machine_info
from lsr.collection import Collection
from lsr.sparse import SparseBatch, TermWeights, read_jsonl
from lsr.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny"
MODEL = SHARED / "models" / "splade-tiny"
BEIR = SHARED / "data" / "beir" / "scifact"
WORK = REPO / "eval" / "work"
K = 10
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
PLANS = ("auto", "taat", "forward")
TARGET_LIVE_OVER_MERGED = 1.5
HUGE = 1 << 30  # flush_docs that never triggers: layouts flush by hand
BUILD_BATCH = 1024  # upsert batch when building layouts


@dataclass(frozen=True)
class Sizes:
    """Everything --quick shrinks."""

    scifact_docs: int | None  # None: all 5,183
    synth_docs: int
    queries: int  # SciFact test queries (at most 300)
    synth_queries: int
    rounds: int  # latency rounds (median per query)
    repeats: int  # upsert runs per configuration (median)
    batch1_docs: int  # documents upserted one per call
    text_docs: int  # texts upserted through the model
    text_batch: int
    buffers: tuple[int, ...]  # write-buffer sizes
    segments: tuple[int, ...]  # segment counts


def full_sizes(docs: int, queries: int) -> Sizes:
    return Sizes(None, docs, queries, queries, 3, 3, 2000, 256, 32, (1024, 4096), (4, 16))


def quick_sizes() -> Sizes:
    return Sizes(1000, 4000, 20, 20, 1, 1, 100, 32, 16, (128, 512), (4, 16))


# -- helpers --------------------------------------------------------------------------------------
def summarize(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": int(ms.size),
    }


def latency(
    systems: dict[str, Callable[[int], Any]], n: int, rounds: int, warmup: int = 5
) -> tuple[dict[str, dict[str, float]], dict[str, list[Any]]]:
    """Per system: p50/p99/mean over the n queries of each query's median time over ``rounds``
    (systems in turn, order reversed every other round), and the first round's answers."""
    for run in systems.values():
        for i in range(min(warmup, n)):
            run(i)
    times = {name: np.zeros((rounds, n)) for name in systems}
    answers: dict[str, list[Any]] = {name: [] for name in systems}
    names = list(systems)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            run, row = systems[name], times[name][r]
            gc.collect()
            gc.disable()
            try:
                for i in range(n):
                    t0 = time.perf_counter()
                    out = run(i)
                    row[i] = time.perf_counter() - t0
                    if r == 0:
                        answers[name].append(out)
            finally:
                gc.enable()
    return {name: summarize(np.median(t, axis=0)) for name, t in times.items()}, answers


def slices(docs: SparseBatch, start: int, stop: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(stop, a + step)) for a in range(start, stop, step)]


def part(docs: SparseBatch, a: int, b: int) -> SparseBatch:
    return SparseBatch(docs.ids[a:b], docs.matrix[a:b], docs.vocab)


def meta(r: np.ndarray, a: int, b: int) -> list[dict[str, float]]:
    return [{"r": float(x)} for x in r[a:b].tolist()]


def count_fsyncs(collection: Collection) -> list[int] | None:
    """Count the log's fsyncs from now on (wraps the WAL's one fsync call site, a private
    method: None when it is not there)."""
    wal = getattr(collection, "_wal", None)
    real = getattr(wal, "_fsync_current", None)
    if real is None:
        return None
    counter = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return real(*args, **kwargs)

    wal._fsync_current = counted  # type: ignore[method-assign]
    return counter


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"lsr": lsr.__version__, "git_commit": git_commit()}
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    import sqlite3

    out["sqlite"] = sqlite3.sqlite_version
    return out


def run_header(quick: bool) -> dict[str, Any]:
    """What every benchmark report starts with: when, where, which versions, how busy."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "quick": quick,
    }


# -- 1. upserts -----------------------------------------------------------------------------------
def raw_fsync_rate(directory: Path, payload: int, n: int) -> dict[str, float]:
    """The durable-call ceiling: append ``payload`` bytes and fsync, ``n`` times."""
    path = directory / "raw-fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    data = b"x" * payload
    try:
        for _ in range(20):
            os.write(fd, data)
            os.fsync(fd)
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, data)
            os.fsync(fd)
        seconds = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"calls": n, "payload_bytes": payload, "seconds": seconds, "calls_per_s": n / seconds}


def upsert_run(
    docs: SparseBatch, r: np.ndarray, path: Path, batch: int, writers: int, n_docs: int
) -> dict[str, Any]:
    """Durable vector upserts of the first ``n_docs`` documents, ``batch`` per call, by
    ``writers`` threads (call j goes to thread j mod writers), into a fresh default collection."""
    calls = [
        (part(docs, a, b), meta(r, a, b)) for a, b in slices(docs, 0, min(n_docs, len(docs)), batch)
    ]
    collection = Collection.create(fresh(path), vocab=docs.vocab, schema={"r": "number"})
    try:
        warm = part(docs, len(docs) - 4, len(docs))  # first-call costs, ids not in the timed run
        for i in range(2):
            collection.upsert([f"warm-{i}-{d}" for d in warm.ids], vectors=warm)
        fsyncs = count_fsyncs(collection)
        per_call = [0.0] * len(calls)
        barrier = threading.Barrier(writers + 1)
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            barrier.wait()
            try:
                for j in range(w, len(calls), writers):
                    vectors, metadata = calls[j]
                    t0 = time.perf_counter()
                    collection.upsert(vectors.ids, vectors=vectors, metadata=metadata)
                    per_call[j] = time.perf_counter() - t0
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        gc.collect()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        if errors:
            raise errors[0]
        n = sum(len(v) for v, _ in calls)
        info = collection.info()
        assert info["live_docs"] == n + 2 * len(warm), info["live_docs"]
        return {
            "writers": writers,
            "batch": batch,
            "docs": n,
            "calls": len(calls),
            "seconds": seconds,
            "docs_per_s": n / seconds,
            "calls_per_s": len(calls) / seconds,
            "call_latency": summarize(per_call),
            "fsyncs": None if fsyncs is None else fsyncs[0],
            "fsyncs_per_call": None if fsyncs is None else fsyncs[0] / len(calls),
            "flushes": len(info["segments"]),
        }
    finally:
        collection.close()
        shutil.rmtree(path, ignore_errors=True)


UPSERT_CONFIGS = ((1, 1), (16, 1), (256, 1), (16, 4))  # (batch, writers)


def median_run(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The repeat with the median ``key``, with every repeat's ``key`` beside it."""
    ranked = sorted(rows, key=lambda x: x[key])
    return {**ranked[(len(ranked) - 1) // 2], f"{key}_repeats": [x[key] for x in rows]}


def bench_upserts(docs: SparseBatch, r: np.ndarray, sizes: Sizes, work: Path) -> dict[str, Any]:
    """Each configuration and both anchors, ``sizes.repeats`` times in turn; the median repeat."""
    from lsr import SparseIndex

    n = len(docs)
    print(f"== upserts: {n:,} SciFact vectors, durable, {sizes.repeats} repeat(s)")
    SparseIndex.build(part(docs, 0, 64), fresh(work / "warm-index"), quantization="float16")
    shutil.rmtree(work / "warm-index", ignore_errors=True)  # compiles the build kernels
    avg_record = int(docs.matrix.nnz / n * 6 + 40)  # int32 term + float16 code + header/meta
    builds, fsyncs = [], []
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in UPSERT_CONFIGS}
    for _ in range(sizes.repeats):
        t0 = time.perf_counter()
        SparseIndex.build(docs, fresh(work / "upsert-index"), quantization="float16")
        build_s = time.perf_counter() - t0
        shutil.rmtree(work / "upsert-index", ignore_errors=True)
        builds.append({"docs": n, "seconds": build_s, "docs_per_s": n / build_s})
        fsyncs.append(raw_fsync_rate(work, avg_record, max(100, sizes.batch1_docs // 4)))
        for batch, writers in UPSERT_CONFIGS:
            count = sizes.batch1_docs if batch == 1 else n
            path = work / f"upsert-b{batch}-w{writers}"
            runs[(batch, writers)].append(upsert_run(docs, r, path, batch, writers, count))
    out: dict[str, Any] = {
        "docs_available": n,
        "repeats": sizes.repeats,
        "sparse_index_build": median_run(builds, "docs_per_s"),
        "raw_fsync": median_run(fsyncs, "calls_per_s"),
        "runs": [],
    }
    build_rate = out["sparse_index_build"]["docs_per_s"]
    for batch, writers in UPSERT_CONFIGS:
        row = median_run(runs[(batch, writers)], "docs_per_s")
        row["docs_per_s_over_index_build"] = row["docs_per_s"] / build_rate
        row["calls_per_s_over_raw_fsync"] = row["calls_per_s"] / out["raw_fsync"]["calls_per_s"]
        out["runs"].append(row)
        fs = "?" if row["fsyncs_per_call"] is None else f"{row['fsyncs_per_call']:.2f}"
        print(
            f"   {writers} writer(s) x batch {batch:4d}: {row['docs_per_s']:9,.0f} docs/s "
            f"{row['calls_per_s']:8,.0f} calls/s, call p50 {row['call_latency']['p50_ms']:.2f} ms, "
            f"{fs} fsyncs/call, {row['flushes']} flush(es)"
        )
    print(
        f"   anchors: SparseIndex.build {build_rate:,.0f} docs/s, raw write+fsync "
        f"{out['raw_fsync']['calls_per_s']:,.0f} calls/s"
    )
    by = {(x["batch"], x["writers"]): x for x in out["runs"]}
    out["ratios"] = {
        "batch1_calls_over_raw_fsync_calls": by[(1, 1)]["calls_per_s_over_raw_fsync"],
        "batch256_docs_over_index_build_docs": by[(256, 1)]["docs_per_s_over_index_build"],
        "four_writers_over_one_writer_batch16": by[(16, 4)]["docs_per_s"]
        / by[(16, 1)]["docs_per_s"],
    }
    return out


def idf_file(work: Path) -> Path:
    """IDF over the SciFact corpus with splade-tiny's tokenizer (the model ships no idf.json;
    computed once, kept in ``work``)."""
    path = work / "scifact-splade-tiny-idf.json"
    if not path.is_file():
        from lsr.corpus import load_corpus
        from lsr.encoders.config import EncoderConfig
        from lsr.encoders.loading import compute_idf

        config = EncoderConfig(model=str(MODEL), query_mode="inference-free")
        table = compute_idf(config, load_corpus(BEIR).values())
        path.parent.mkdir(parents=True, exist_ok=True)
        table.save(path)
    return path


def bench_text_upserts(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Text upserts through the collection's model vs its encoder alone, chunk by chunk."""
    from lsr.corpus import load_corpus

    corpus = load_corpus(BEIR)
    n = min(sizes.text_docs, len(corpus) - 2 * sizes.text_batch)
    items = list(corpus.items())
    warm, items = items[-2 * sizes.text_batch :], items[:n]
    print(f"== text upserts: {n} SciFact texts, batch {sizes.text_batch}")
    idf = idf_file(WORK / "bench_live-cache")
    path = fresh(work / "text-collection")
    t0 = time.perf_counter()
    collection = Collection.create(path, model=str(MODEL), query_mode="inference-free", idf=idf)
    create_s = time.perf_counter() - t0
    try:
        encoder = collection.encoder
        for a in range(0, len(warm), sizes.text_batch):  # loads the model, first-call costs
            chunk = warm[a : a + sizes.text_batch]
            collection.upsert([f"warm-{i}" for i, _ in chunk], texts=[t for _, t in chunk])
            encoder.encode_document([t for _, t in chunk], [i for i, _ in chunk])
        encode_s = upsert_s = 0.0
        for j, a in enumerate(range(0, n, sizes.text_batch)):
            # chunk by chunk, the order alternating: drift and warm caches hit both alike
            chunk = items[a : a + sizes.text_batch]
            ids, texts = [i for i, _ in chunk], [t for _, t in chunk]
            for step in ("encode", "upsert") if j % 2 == 0 else ("upsert", "encode"):
                t0 = time.perf_counter()
                if step == "encode":
                    encoder.encode_document(texts, ids)
                    encode_s += time.perf_counter() - t0
                else:
                    collection.upsert(ids, texts=texts)
                    upsert_s += time.perf_counter() - t0
        assert len(collection) == n + len(warm)
        out = {
            "texts": n,
            "batch": sizes.text_batch,
            "query_mode": "inference-free",
            "idf": "computed over the SciFact corpus (lsr.encoders.loading.compute_idf)",
            "encoder_alone": {"seconds": encode_s, "docs_per_s": n / encode_s},
            "collection": {"seconds": upsert_s, "docs_per_s": n / upsert_s},
            "collection_time_over_encoder_time": upsert_s / encode_s,
            "create_seconds": create_s,
        }
    finally:
        collection.close()
        shutil.rmtree(path, ignore_errors=True)
    print(
        f"   encoder alone {out['encoder_alone']['docs_per_s']:,.1f} docs/s, collection "
        f"{out['collection']['docs_per_s']:,.1f} docs/s "
        f"({out['collection_time_over_encoder_time']:.3f}x the encoder's time)",
    )
    return out


# -- 2-4. one workload ---------------------------------------------------------------------------
def build_layout(
    docs: SparseBatch, r: np.ndarray, path: Path, cuts: Sequence[int], buffered_from: int | None
) -> tuple[Collection, float]:
    """A collection whose segments hold docs[cuts[i]:cuts[i+1]] and whose write buffer holds
    docs[buffered_from:] (flushes by hand only, no merges)."""
    t0 = time.perf_counter()
    collection = Collection.create(
        fresh(path), vocab=docs.vocab, schema={"r": "number"}, flush_docs=HUGE
    )
    for lo, hi in itertools.pairwise(cuts):
        for a, b in slices(docs, lo, hi, BUILD_BATCH):
            collection.upsert(docs.ids[a:b], vectors=part(docs, a, b), metadata=meta(r, a, b))
        collection.flush()
    if buffered_from is not None:
        for a, b in slices(docs, buffered_from, len(docs), BUILD_BATCH):
            collection.upsert(docs.ids[a:b], vectors=part(docs, a, b), metadata=meta(r, a, b))
    return collection, time.perf_counter() - t0


def post_filter(
    collection: Collection, query: TermWeights, k: int, sel: float, r_of: dict[str, float], n: int
) -> tuple[list[Any], int, int]:
    """Unfiltered top k' (k' = 2k/sel, doubled until k matches), filtered in Python."""
    kk = min(n, math.ceil(k / sel * 2))
    rounds = 0
    while True:
        rounds += 1
        hits = collection.search(query, kk)
        got = [h for h in hits if r_of[h.doc_id] < sel]
        if len(got) >= k or kk >= n or len(hits) < kk:
            return got[:k], kk, rounds
        kk = min(n, kk * 2)


def hits_key(hits: Sequence[Any]) -> list[tuple[str, float]]:
    return [(h.doc_id, h.score) for h in hits]


def bench_workload(
    name: str, docs: SparseBatch, queries: SparseBatch, sizes: Sizes, seed: int, work: Path
) -> dict[str, Any]:
    from lsr import SparseIndex

    n = len(docs)
    phases: dict[str, float] = {}
    print(f"== {name}: {n:,} docs, {docs.matrix.nnz:,} postings, {len(queries)} queries")
    r = np.random.default_rng(seed).random(n)
    r_of = dict(zip(docs.ids, r.tolist(), strict=True))
    qs = [queries.row(i) for i in range(len(queries))]
    nq = len(qs)
    result: dict[str, Any] = {
        "docs": n,
        "postings": int(docs.matrix.nnz),
        "queries": nq,
        "mean_query_terms": float(np.diff(queries.matrix.indptr).mean()),
        "metadata_seed": seed,
    }
    work = work / name

    # layouts
    t_phase = time.perf_counter()
    t0 = time.perf_counter()
    index = SparseIndex.build(docs, fresh(work / "sparse-index"), quantization="float16")
    index_build_s = time.perf_counter() - t0
    layouts: dict[str, Collection] = {}
    layout_info: dict[str, dict[str, Any]] = {}
    built: dict[str, float] = {}
    merges: dict[str, dict[str, Any]] = {}
    n_max = max(sizes.segments)
    for label, cuts, buffered in [
        (f"merged (from {n_max} segments)", np.linspace(0, n, n_max + 1), None),
        *((f"{s} segments", np.linspace(0, n, s + 1), None) for s in sizes.segments),
        *((f"buffer {b}", [0, n - b], n - b) for b in sizes.buffers if b < n),
    ]:
        cuts = [round(float(c)) for c in cuts]
        key = label.split(" (")[0]
        collection, seconds = build_layout(docs, r, work / key.replace(" ", "-"), cuts, buffered)
        built[key] = seconds
        if key == "merged":
            t0 = time.perf_counter()
            collection.compact()
            merge_s = time.perf_counter() - t0
            merges[f"{n_max} -> 1"] = {
                "segments_in": n_max,
                "docs": n,
                "seconds": merge_s,
                "docs_per_s": n / merge_s,
            }
        info = collection.info()
        layouts[key] = collection
        layout_info[key] = {
            "segments": len(info["segments"]),
            "segment_docs": [s["docs"] for s in info["segments"]],
            "buffered_docs": info["buffered_docs"],
            "build_seconds": seconds,
            "build_docs_per_s": n / seconds,
        }
        assert info["live_docs"] == n, (key, info["live_docs"])
        print(
            f"   built {key}: {len(info['segments'])} segment(s), {info['buffered_docs']} "
            f"buffered, {seconds:.1f} s ({n / seconds:,.0f} docs/s with flushes)",
        )
    phases["build"] = time.perf_counter() - t_phase
    result["sparse_index_build"] = {"seconds": index_build_s, "docs_per_s": n / index_build_s}
    result["layout_build"] = layout_info

    # latency by layout
    t_phase = time.perf_counter()
    systems: dict[str, Callable[[int], Any]] = {
        "sparse index": lambda i: index.search(qs[i], K),
        **{key: (lambda i, c=c: c.search(qs[i], K)) for key, c in layouts.items()},
    }
    lat, answers = latency(systems, nq, sizes.rounds)
    merged = lat["merged"]
    reference = [hits_key(h) for h in answers["merged"]]
    rows = {}
    for key, stats in lat.items():
        got = [hits_key(h) for h in answers[key]]
        pairs = zip(got, reference, strict=True)
        if key == "sparse index":
            same = sum([d for d, _ in a] == [d for d, _ in b] for a, b in pairs)
        else:
            same = sum(a == b for a, b in pairs)
        rows[key] = {
            **stats,
            **({} if key == "sparse index" else layout_info[key]),
            "p50_over_merged": stats["p50_ms"] / merged["p50_ms"],
            "p99_over_merged": stats["p99_ms"] / merged["p99_ms"],
            "topk_equal_to_merged": same,
            "topk_compared": nq,
            "compares": "ids" if key == "sparse index" else "ids and scores",
        }
        print(
            f"   {key:16s} p50 {stats['p50_ms']:8.3f} ms  p99 {stats['p99_ms']:8.3f} ms  "
            f"{stats['p50_ms'] / merged['p50_ms']:5.2f}x merged  equal {same}/{nq}",
        )
    result["latency"] = rows
    live = [k for k in rows if k not in ("merged", "sparse index")]
    result["ratios"] = {
        "merged_over_sparse_index_p50": merged["p50_ms"] / lat["sparse index"]["p50_ms"],
        "worst_live_over_merged_p50": max(rows[k]["p50_over_merged"] for k in live),
        "worst_live_layout": max(live, key=lambda k: rows[k]["p50_over_merged"]),
        "target_live_over_merged": TARGET_LIVE_OVER_MERGED,
    }
    result["ratios"]["target_met"] = (
        result["ratios"]["worst_live_over_merged_p50"] <= TARGET_LIVE_OVER_MERGED
    )
    phases["latency"] = time.perf_counter() - t_phase

    # filtered search on the merged collection
    t_phase = time.perf_counter()
    coll = layouts["merged"]
    post_stats: dict[float, list[tuple[int, int]]] = {s: [] for s in SELECTIVITIES}
    fsystems: dict[str, Callable[[int], Any]] = {"unfiltered": lambda i: coll.search(qs[i], K)}
    for sel in SELECTIVITIES:
        flt = {"r": {"lt": sel}}
        for plan in PLANS:
            fsystems[f"{sel}/{plan}"] = lambda i, f=flt, p=plan: coll.search(
                qs[i], K, filter=f, plan=p
            )

        def post(i: int, sel: float = sel) -> Any:
            hits, kk, rounds = post_filter(coll, qs[i], K, sel, r_of, n)
            return hits, kk, rounds

        fsystems[f"{sel}/post-filter"] = post
    flat, fanswers = latency(fsystems, nq, sizes.rounds)
    filtered: dict[str, Any] = {"unfiltered": flat["unfiltered"], "selectivities": {}}
    for sel in SELECTIVITIES:
        flt = {"r": {"lt": sel}}
        matching = coll.count(flt)
        auto = [hits_key(h) for h in fanswers[f"{sel}/auto"]]
        plans_agree = sum(
            auto[i] == hits_key(fanswers[f"{sel}/{p}"][i]) for p in ("taat", "forward")
            for i in range(nq)
        )  # fmt: skip
        checked = equal = found_k = 0
        for i, (hits, kk, rounds) in enumerate(fanswers[f"{sel}/post-filter"]):
            post_stats[sel].append((kk, rounds))
            complete = len(hits) >= K or kk >= n
            found_k += len(hits) >= K
            if complete:
                checked += 1
                equal += hits_key(hits) == auto[i]
        forced = {p: flat[f"{sel}/{p}"] for p in ("taat", "forward")}
        best = min(forced, key=lambda p: forced[p]["p50_ms"])
        row = {
            "selectivity": sel,
            "matching_docs": matching,
            **{p: flat[f"{sel}/{p}"] for p in PLANS},
            "post_filter": {
                **flat[f"{sel}/post-filter"],
                "k_prime_mean": float(np.mean([kk for kk, _ in post_stats[sel]])),
                "search_calls_mean": float(np.mean([x for _, x in post_stats[sel]])),
                "found_k": found_k,
            },
            "fastest_forced_plan": best,
            "auto_over_best_forced_p50": flat[f"{sel}/auto"]["p50_ms"] / forced[best]["p50_ms"],
            "auto_over_unfiltered_p50": flat[f"{sel}/auto"]["p50_ms"]
            / flat["unfiltered"]["p50_ms"],
            "post_filter_over_auto_p50": flat[f"{sel}/post-filter"]["p50_ms"]
            / flat[f"{sel}/auto"]["p50_ms"],
            "plans_agree": plans_agree,
            "plans_compared": 2 * nq,
            "post_filter_checked": checked,
            "post_filter_equal": equal,
        }
        filtered["selectivities"][str(sel)] = row
        print(
            f"   filter r<{sel:<5} ({matching:>7,} docs): auto {row['auto']['p50_ms']:8.3f} ms "
            f"({row['auto_over_unfiltered_p50']:.2f}x unfiltered), taat "
            f"{row['taat']['p50_ms']:8.3f}, forward {row['forward']['p50_ms']:8.3f}, post-filter "
            f"{row['post_filter']['p50_ms']:8.3f} ms; exact {equal}/{checked}, plans agree "
            f"{plans_agree}/{2 * nq}",
        )
    one_pct = filtered["selectivities"][str(0.01)]
    filtered["target_1pct_faster_than_unfiltered"] = one_pct["auto_over_unfiltered_p50"] < 1.0
    result["filtered"] = filtered
    phases["filtered"] = time.perf_counter() - t_phase

    # a second merge size, then clean up
    t_phase = time.perf_counter()
    small = min(sizes.segments)
    t0 = time.perf_counter()
    layouts[f"{small} segments"].compact()
    seconds = time.perf_counter() - t0
    merges[f"{small} -> 1"] = {
        "segments_in": small,
        "docs": n,
        "seconds": seconds,
        "docs_per_s": n / seconds,
    }
    for m in merges.values():
        m["over_sparse_index_build_docs_per_s"] = m["docs_per_s"] / (n / index_build_s)
    result["merge"] = merges
    for key, m in merges.items():
        print(f"   compact {key}: {m['seconds']:.2f} s, {m['docs_per_s']:,.0f} docs/s")
    for collection in layouts.values():
        collection.close()
    shutil.rmtree(work, ignore_errors=True)
    phases["merge_and_cleanup"] = time.perf_counter() - t_phase
    result["phase_seconds"] = phases
    return result


# -- data -----------------------------------------------------------------------------------------
def load_scifact(sizes: Sizes) -> tuple[SparseBatch, SparseBatch]:
    from lsr.corpus import load_qrels

    vocab = Vocabulary.load(MODEL)
    docs = read_jsonl(VECTORS / "docs.jsonl.gz", vocab)
    if sizes.scifact_docs is not None:
        docs = part(docs, 0, sizes.scifact_docs)
    queries = read_jsonl(VECTORS / "queries-siamese.jsonl.gz", vocab)
    test = set(load_qrels(BEIR, "test"))
    rows = [i for i, q in enumerate(queries.ids) if q in test][: sizes.queries]
    return docs, SparseBatch([queries.ids[i] for i in rows], queries.matrix[rows], vocab)


def load_synthetic(sizes: Sizes) -> tuple[SparseBatch, SparseBatch, float]:
    from eval.synthetic import generate_collection, generate_queries

    t0 = time.perf_counter()
    docs = generate_collection(sizes.synth_docs, seed=0)
    queries = generate_queries(docs, sizes.synth_queries, mode="siamese", seed=1)
    return docs, queries, time.perf_counter() - t0


# -- report ---------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    up = report["upserts"]
    lines = [
        "# Live collection benchmark (`eval/bench_live.py`)",
        "",
        *(
            ["**Quick run (tiny sizes): a smoke test, not a measurement.**", ""]
            if report["quick"]
            else []
        ),
        f"Run {report['date']} on {m['cpus']} cores ({m['processor']}), Python {m['python']}, "
        f"numba {m['numba']}, lsr {report['versions']['lsr']}; load average before "
        f"{report['load_average_before']}. Every number is compared with an anchor measured in "
        "the same run; read the ratios, not the absolute times (this machine is shared).",
        "",
        "What is measured: (1) durable upserts (every call returns after its fsync) against a "
        "bare write+fsync loop and `SparseIndex.build` of the same vectors, and text upserts "
        "against the encoder alone; (2) search latency of the same documents in several layouts "
        "against the collection merged into one segment and against a plain `SparseIndex`; (3) "
        "`compact()` time; (4) metadata-filtered search at four selectivities against "
        "unfiltered search and against post-filtering.",
        "",
        "Latency: every system answers all queries in turn, for "
        f"{report['sizes']['rounds']} round(s) in alternating order; a query's time is its "
        "median over the rounds, p50/p99 are over queries. *merged*: the collection after "
        f"`compact()` of {max(report['sizes']['segments'])} equal segments (the anchor); *N "
        "segments*: the documents split evenly into N flushed segments, nothing buffered; "
        "*buffer B*: the last B documents in the write buffer (flush_docs huge), the rest in one "
        "segment; *sparse index*: `SparseIndex.build` of the same vectors, float16, "
        "`index.search` (scores may differ in the last bits: it sums terms in another order, so "
        "only ids are compared). Every collection layout must return the merged hits exactly. "
        "Filtered: *auto* is lsr's default plan; *taat* scores every posting of the query terms "
        "and keeps allowed documents; *forward* scores only the allowed documents from their "
        "forward rows; *post-filter* searches unfiltered with k' = 2k/s (doubling until k "
        "matches or every document) and filters with a Python dict of `r` — *exact* counts the "
        "queries whose post-filtered hits equal lsr's, out of those where it found k or saw "
        "everything. The three plans must agree on every query.",
        "",
        "## 1. Durable upserts, vectors given",
        "",
        f"Median of {up['repeats']} repeat(s), configurations and anchors in turn. "
        "Default settings (float16, flush_docs 4096: the flushes a run triggers are in its time), "
        'metadata `{"r": float}` on every document, each call returns after its fsync. '
        f"Anchors: `os.write` + `os.fsync` of {up['raw_fsync']['payload_bytes']} bytes in the "
        f"same directory: {up['raw_fsync']['calls_per_s']:,.0f} calls/s; `SparseIndex.build` of "
        f"the same {up['docs_available']:,} vectors: "
        f"{up['sparse_index_build']['docs_per_s']:,.0f} docs/s.",
        "",
        "| writers | batch | docs | docs/s | calls/s | call p50 ms | call p99 ms | fsyncs/call "
        "| flushes | docs/s ÷ index build | calls/s ÷ raw fsync |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in up["runs"]:
        lines.append(
            f"| {row['writers']} | {row['batch']} | {row['docs']:,} | {row['docs_per_s']:,.0f} "
            f"| {row['calls_per_s']:,.0f} | {row['call_latency']['p50_ms']:.3f} "
            f"| {row['call_latency']['p99_ms']:.3f} | {_fmt(row['fsyncs_per_call'], '.2f')} "
            f"| {row['flushes']} | {row['docs_per_s_over_index_build']:.3f} "
            f"| {row['calls_per_s_over_raw_fsync']:.3f} |"
        )
    lines += [
        "",
        f"4 writers of batch 16 vs 1: {up['ratios']['four_writers_over_one_writer_batch16']:.2f}x "
        "the docs/s (group commit: fewer than one fsync per call when they overlap).",
        "",
    ]
    text = report.get("text_upserts")
    if text:
        lines += [
            f"Text upserts through the model (splade-tiny, {text['query_mode']}, IDF "
            f"{text['idf']}), {text['texts']} SciFact texts in calls of {text['batch']}, "
            "interleaved chunk by chunk with the same encoder alone on the same texts:",
            "",
            "| path | seconds | docs/s |",
            "|---|---:|---:|",
            f"| encoder alone (`encode_document`) | {text['encoder_alone']['seconds']:.2f} "
            f"| {text['encoder_alone']['docs_per_s']:,.1f} |",
            f"| collection `upsert(texts=)` | {text['collection']['seconds']:.2f} "
            f"| {text['collection']['docs_per_s']:,.1f} |",
            "",
            f"Collection time ÷ encoder time: {text['collection_time_over_encoder_time']:.3f}x "
            f"(creating the collection, which loads the model: {text['create_seconds']:.1f} s, "
            "not counted).",
            "",
        ]
    for name, w in report["workloads"].items():
        lines += [
            f"## {name}: {w['docs']:,} documents, {w['postings']:,} postings, {w['queries']} "
            f"queries ({w['mean_query_terms']:.0f} terms on average)",
            "",
            "### 2. Search latency by layout (k = 10, one thread)",
            "",
            "| layout | segments | buffered | p50 ms | p99 ms | mean ms | p50 ÷ merged "
            "| p99 ÷ merged | top-k = merged |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, row in w["latency"].items():
            lines.append(
                f"| {key} | {row.get('segments', '–')} | {row.get('buffered_docs', '–')} "
                f"| {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['mean_ms']:.3f} "
                f"| {row['p50_over_merged']:.2f} | {row['p99_over_merged']:.2f} "
                f"| {row['topk_equal_to_merged']}/{row['topk_compared']} ({row['compares']}) |"
            )
        ratios = w["ratios"]
        verdict = "met" if ratios["target_met"] else "**missed**"
        lines += [
            "",
            f"Worst live layout: {ratios['worst_live_layout']}, "
            f"{ratios['worst_live_over_merged_p50']:.2f}x the merged p50 (target ≤ "
            f"{ratios['target_live_over_merged']}x: {verdict}). Merged collection ÷ plain "
            f"`SparseIndex`: {ratios['merged_over_sparse_index_p50']:.2f}x.",
            "",
            "### 3. Merge (`compact()`)",
            "",
            "| merge | docs | seconds | docs/s | ÷ SparseIndex.build docs/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, mrow in w["merge"].items():
            lines.append(
                f"| {key} segments | {mrow['docs']:,} | {mrow['seconds']:.2f} "
                f"| {mrow['docs_per_s']:,.0f} | {mrow['over_sparse_index_build_docs_per_s']:.2f} |"
            )
        f = w["filtered"]
        lines += [
            "",
            f'### 4. Filtered search, `{{"r": {{"lt": s}}}}` (merged collection; unfiltered '
            f"p50 {f['unfiltered']['p50_ms']:.3f} ms, p99 {f['unfiltered']['p99_ms']:.3f} ms)",
            "",
            "| s | matching | auto p50 | auto p99 | taat p50 | forward p50 | post-filter p50 "
            "| post-filter p99 | auto ÷ unfiltered | post-filter ÷ auto | faster forced plan "
            "| auto ÷ it | post-filter k' (calls) | exact |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for row in f["selectivities"].values():
            pf = row["post_filter"]
            lines.append(
                f"| {row['selectivity'] * 100:g} % | {row['matching_docs']:,} "
                f"| {row['auto']['p50_ms']:.3f} | {row['auto']['p99_ms']:.3f} "
                f"| {row['taat']['p50_ms']:.3f} | {row['forward']['p50_ms']:.3f} "
                f"| {pf['p50_ms']:.3f} | {pf['p99_ms']:.3f} "
                f"| {row['auto_over_unfiltered_p50']:.2f} | {row['post_filter_over_auto_p50']:.2f} "
                f"| {row['fastest_forced_plan']} | {row['auto_over_best_forced_p50']:.2f} "
                f"| {pf['k_prime_mean']:,.0f} ({pf['search_calls_mean']:.2f}) "
                f"| {row['post_filter_equal']}/{row['post_filter_checked']} |"
            )
        target = "met" if f["target_1pct_faster_than_unfiltered"] else "**missed**"
        lines += ["", f"Target: filtered search at 1 % faster than unfiltered: {target}.", ""]
    lines += ["![latency by selectivity and by layout](bench_live.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
    except ImportError:
        return False
    names = list(report["workloads"])
    fig, axes = plt.subplots(2, len(names), figsize=(6 * len(names), 8), squeeze=False)
    for col, name in enumerate(names):
        w = report["workloads"][name]
        ax = axes[0][col]
        sels = list(w["filtered"]["selectivities"].values())
        x = [s["selectivity"] * 100 for s in sels]
        for label, get, style in (
            ("auto (lsr)", lambda s: s["auto"], "o-"),
            ("taat (forced)", lambda s: s["taat"], "s--"),
            ("forward (forced)", lambda s: s["forward"], "^--"),
            ("post-filter", lambda s: s["post_filter"], "x:"),
        ):
            ax.plot(x, [get(s)["p50_ms"] for s in sels], style, label=label)
        ax.axhline(w["filtered"]["unfiltered"]["p50_ms"], color="gray", ls="-.", label="unfiltered")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("filter selectivity, % of documents allowed")
        ax.set_ylabel("p50 ms per query (1 thread)")
        ax.set_title(f"{name}: filtered search, k={K}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        keys = list(w["latency"])
        p50 = [w["latency"][k]["p50_ms"] for k in keys]
        p99 = [w["latency"][k]["p99_ms"] for k in keys]
        xs = np.arange(len(keys))
        ax.bar(xs - 0.2, p50, 0.4, label="p50")
        ax.bar(xs + 0.2, p99, 0.4, label="p99")
        ax.axhline(
            w["latency"]["merged"]["p50_ms"] * TARGET_LIVE_OVER_MERGED,
            color="red",
            ls=":",
            label=f"{TARGET_LIVE_OVER_MERGED}x merged p50",
        )
        ax.set_xticks(xs, keys, rotation=25, ha="right")
        ax.set_ylabel("ms per query (1 thread)")
        ax.set_title(f"{name}: latency by layout")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summary_line(report: dict[str, Any]) -> str:
    up = report["upserts"]
    b = {(x["writers"], x["batch"]): x["docs_per_s"] for x in up["runs"]}
    parts = [
        f"upserts {b[(1, 1)]:,.0f}/{b[(1, 16)]:,.0f}/{b[(1, 256)]:,.0f} docs/s (batch 1/16/256), "
        f"4 writers {up['ratios']['four_writers_over_one_writer_batch16']:.2f}x"
    ]
    if report.get("text_upserts"):
        parts.append(
            f"text {report['text_upserts']['collection_time_over_encoder_time']:.2f}x encoder"
        )
    for name, w in report["workloads"].items():
        ra, f = w["ratios"], w["filtered"]["selectivities"]
        parts.append(
            f"{name}: worst live {ra['worst_live_over_merged_p50']:.2f}x merged "
            f"({'ok' if ra['target_met'] else 'MISSED'}), merged "
            f"{ra['merged_over_sparse_index_p50']:.2f}x index, filter 1% "
            f"{f['0.01']['auto_over_unfiltered_p50']:.2f}x unfiltered"
        )
    parts.append(f"{report['problems'] or 'all answers exact'}; {report['seconds']:.0f} s")
    return "bench_live: " + "; ".join(parts)


def problems(report: dict[str, Any]) -> list[str]:
    out = []
    for name, w in report["workloads"].items():
        for key, row in w["latency"].items():
            if key != "sparse index" and row["topk_equal_to_merged"] != row["topk_compared"]:
                out.append(f"{name}/{key}: {row['topk_compared'] - row['topk_equal_to_merged']} "
                           "queries differ from merged")  # fmt: skip
        for sel, row in w["filtered"]["selectivities"].items():
            if row["plans_agree"] != row["plans_compared"]:
                out.append(f"{name}/r<{sel}: plans disagree")
            if row["post_filter_equal"] != row["post_filter_checked"]:
                out.append(f"{name}/r<{sel}: post-filter differs")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, results in eval/work/")
    parser.add_argument(
        "--docs", type=int, default=None, help="synthetic docs (200000; quick 4000; 0: skip)"
    )
    parser.add_argument(
        "--queries", type=int, default=None, help="queries per workload (default 300, quick 20)"
    )
    parser.add_argument("--no-text", action="store_true", help="skip the text upserts")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument(
        "--render", action="store_true", help="only redraw md/png from --out's JSON"
    )
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows through a pipe
    sizes = quick_sizes() if args.quick else full_sizes(200_000, 300)
    if args.docs is not None:
        sizes = Sizes(**{**asdict(sizes), "synth_docs": args.docs})
    if args.queries is not None:
        sizes = Sizes(**{**asdict(sizes), "queries": args.queries, "synth_queries": args.queries})
    out = args.out or (WORK / "bench_live-quick" if args.quick else REPO / "eval" / "results")
    if args.render:
        report = json.loads((out / "bench_live.json").read_text())
        (out / "bench_live.md").write_text(markdown(report))
        plot(report, out / "bench_live.png")
        return 0
    work = WORK / ("bench_live-quick" if args.quick else "bench_live") / "scratch"
    started = time.perf_counter()
    report: dict[str, Any] = {
        **run_header(args.quick),
        "k": K,
        "sizes": asdict(sizes),
        "seeds": {
            "synthetic_docs": 0,
            "synthetic_queries": 1,
            "metadata_r": {"scifact": 11, "synthetic": 12, "upserts": 13},
        },
        "selectivities": list(SELECTIVITIES),
        "phase_seconds": {},
    }
    phases = report["phase_seconds"]
    t0 = time.perf_counter()
    docs, queries = load_scifact(sizes)
    phases["load_scifact"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    r_upserts = np.random.default_rng(13).random(len(docs))
    report["upserts"] = bench_upserts(docs, r_upserts, sizes, work)
    phases["upserts"] = time.perf_counter() - t0
    if not args.no_text:
        t0 = time.perf_counter()
        report["text_upserts"] = bench_text_upserts(sizes, work)
        phases["text_upserts"] = time.perf_counter() - t0
    report["workloads"] = {}
    t0 = time.perf_counter()
    report["workloads"]["scifact"] = bench_workload("scifact", docs, queries, sizes, 11, work)
    phases["scifact"] = time.perf_counter() - t0
    if sizes.synth_docs:
        sdocs, squeries, gen_s = load_synthetic(sizes)
        phases["generate_synthetic"] = gen_s
        print(f"generated {len(sdocs):,} synthetic docs in {gen_s:.1f} s")
        n = sizes.synth_docs
        name = f"synth-{n // 1000}k" if n % 1000 == 0 else f"synth-{n}"
        t0 = time.perf_counter()
        report["workloads"][name] = bench_workload(name, sdocs, squeries, sizes, 12, work)
        phases[name] = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = time.perf_counter() - started
    report["problems"] = problems(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_live.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_live.md").write_text(markdown(report))
    plot(report, out / "bench_live.png")
    print(f"wrote {out / 'bench_live.json'}, .md, .png")
    print(summary_line(report))
    if report["problems"]:
        print("PROBLEMS: " + "; ".join(report["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
