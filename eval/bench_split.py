"""One query on several cores: exhaustive search split over doc-id ranges vs one thread.

For the real-text collection (``eval/realtext.py``) and, with ``--docs N``, the synthetic one
(``eval/synthetic.py``), both query modes: p50 / p99 latency of ``SparseIndex.search(q, k)``
with ``threads=1`` and ``threads=T`` (all cores), the two alternating query by query in one run,
and a check that both return the same hits.

    python -m eval.bench_split [--realtext DIR] [--docs 1000000] [--queries 200] [--out DIR]

Writes ``split_search.json`` and ``split_search.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numba

from eval.bench_index import (
    REPO,
    SHARED,
    WORK,
    integer_docs,
    integer_queries,
    machine_info,
    percentile,
    read_vectors_dir,
)
from lsr import SparseIndex
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

K = 10


def measure(index: SparseIndex, queries: SparseBatch, threads: int) -> dict[str, Any]:
    """p50 / p99 ms of one thread and of ``threads``, alternating; hit lists compared."""
    dicts = queries.to_dicts()
    for q in dicts[:10]:  # warm-up (compiles both paths), untimed
        index.search(q, K)
        index.search(q, K, threads=threads)
    one, many, differ = [], [], 0
    for q in dicts:
        start = time.perf_counter()
        a = index.search(q, K)
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = index.search(q, K, threads=threads)
        many.append(time.perf_counter() - start)
        differ += a != b
    row = {"queries": len(dicts), "threads": threads, "hit_lists_differing": differ}
    for name, times in (("one_thread", one), ("split", many)):
        row[name] = {
            "p50_ms": round(percentile(times, 50) * 1e3, 4),
            "p99_ms": round(percentile(times, 99) * 1e3, 4),
        }
    row["p50_speedup"] = round(row["one_thread"]["p50_ms"] / row["split"]["p50_ms"], 3)
    return row


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# One query on several cores (exhaustive, split over doc-id ranges)",
        "",
        f"Run {report['date']} on {report['machine']['cpus']} cores. k = {K}; one query at a "
        "time, end to end from a {token: weight} dict; the one-thread and split searches "
        "alternate query by query. p50 / p99 ms.",
        "",
        "| collection | mode | terms | one thread | split | threads | p50 speed-up | differing |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in report["workloads"].items():
        for mode, r in res["modes"].items():
            a, b = r["one_thread"], r["split"]
            lines.append(
                f"| {name} ({res['docs']:,} docs) | {mode} | {r['mean_terms']:.1f} | "
                f"{a['p50_ms']:.3f} / {a['p99_ms']:.3f} | {b['p50_ms']:.3f} / {b['p99_ms']:.3f} | "
                f"{r['threads']} | {r['p50_speedup']:.2f}x | {r['hit_lists_differing']} |"
            )
    return "\n".join(lines) + "\n"


def run(name: str, index: SparseIndex, queries: dict[str, SparseBatch], n: int) -> dict:
    threads = numba.config.NUMBA_NUM_THREADS
    out: dict[str, Any] = {"docs": index.num_docs, "modes": {}}
    for mode, batch in queries.items():
        iq = integer_queries(batch)
        iq = SparseBatch(iq.ids[:n], iq.matrix[:n], iq.vocab)
        row = measure(index, iq, threads)
        row["mean_terms"] = float(iq.matrix.getnnz(axis=1).mean())
        out["modes"][mode] = row
        print(f"{name} {mode}: {row}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realtext", type=Path, default=WORK / "realtext-splade-tiny")
    parser.add_argument("--docs", type=int, default=0, help="synthetic collection size (0: skip)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    vocab = Vocabulary.load(SHARED / "models" / "splade-tiny")
    workloads: dict[str, Any] = {}
    if args.realtext.exists():
        docs, queries = read_vectors_dir(args.realtext, vocab)
        index = SparseIndex.build(
            integer_docs(docs, 255), WORK / "bench_split-realtext", overwrite=True
        )
        workloads["realtext"] = run("realtext", index, queries, args.queries)
    if args.docs:
        from eval.synthetic import generate_collection, generate_queries

        docs = generate_collection(args.docs, seed=0)
        queries = {
            m: generate_queries(docs, args.queries, mode=m, seed=1)
            for m in ("siamese", "inference-free")
        }
        index = SparseIndex.build(
            integer_docs(docs, 51), WORK / f"bench_split-synth-{args.docs}", overwrite=True
        )
        workloads[f"synth-{args.docs // 1000}k"] = run("synthetic", index, queries, args.queries)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "workloads": workloads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split_search.json").write_text(json.dumps(report, indent=2))
    (args.out / "split_search.md").write_text(markdown(report))
    print(markdown(report))
    bad = sum(r["hit_lists_differing"] for w in workloads.values() for r in w["modes"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
