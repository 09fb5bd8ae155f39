"""One query on several cores: a search split over runs of doc-id blocks vs one thread.

For the real-text collection (``eval/realtext.py``) and, with ``--docs N`` / ``--clustered N``,
the synthetic and topically clustered ones (``eval/synthetic.py``, fitted to ``--fit``), both
query modes and each of ``--algorithms`` (exhaustive, exact blockmax, approximate): p50 / p99
latency of ``SparseIndex.search(q, k, algorithm=...)`` with ``threads=1`` and ``threads=T``
(all cores), the two alternating query by query in one run. Exact algorithms must return the
same hits both ways; for approximate search both recalls against exact search are reported
(a returned document counts when its score reaches the exact k-th score: ties are not misses).

    python -m eval.bench_split [--realtext DIR] [--docs 5000000] [--clustered 5000000]
        [--fit DIR] [--algorithms exhaustive,blockmax,approximate] [--queries 200] [--out DIR]

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


def measure(
    index: SparseIndex, queries: SparseBatch, threads: int, algorithm: str
) -> dict[str, Any]:
    """p50 / p99 ms of one thread and of ``threads``, alternating; hit lists compared, and each
    side's recall@K against exhaustive search."""
    dicts = queries.to_dicts()
    for q in dicts[:10]:  # warm-up (compiles both paths), untimed
        index.search(q, K, algorithm=algorithm)
        index.search(q, K, algorithm=algorithm, threads=threads)
    exact = index.batch_search(queries, K)
    one, many, differ = [], [], 0
    recall: tuple[list[float], list[float]] = ([], [])
    for q, want in zip(dicts, exact, strict=True):
        start = time.perf_counter()
        a = index.search(q, K, algorithm=algorithm)
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = index.search(q, K, algorithm=algorithm, threads=threads)
        many.append(time.perf_counter() - start)
        differ += a != b
        if want:
            for side, hits in zip(recall, (a, b), strict=True):
                side.append(sum(h.score >= want[-1].score for h in hits) / len(want))
    row: dict[str, Any] = {
        "algorithm": algorithm,
        "queries": len(dicts),
        "threads": threads,
        "hit_lists_differing": differ,
    }
    for name, times, rec in (("one_thread", one, recall[0]), ("split", many, recall[1])):
        row[name] = {
            "p50_ms": round(percentile(times, 50) * 1e3, 4),
            "p99_ms": round(percentile(times, 99) * 1e3, 4),
            "recall@10": round(sum(rec) / max(1, len(rec)), 4),
        }
    row["p50_speedup"] = round(row["one_thread"]["p50_ms"] / row["split"]["p50_ms"], 3)
    return row


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# One query on several cores (split over runs of doc-id blocks)",
        "",
        f"Run {report['date']} on {report['machine']['cpus']} cores. k = {K}; one query at a "
        "time, end to end from a {token: weight} dict; the one-thread and split searches "
        "alternate query by query. p50 / p99 ms. Recall@10 against exhaustive search (a hit "
        "counts when its score reaches the exact 10th score). Differing: hit lists that are "
        "not the same both ways (must be 0 for the exact algorithms; approximate search split "
        "over threads stops each part on its own k-th score, so it may find more).",
        "",
        "| collection | mode | terms | algorithm | one thread | split | threads | p50 speed-up "
        "| recall one / split | differing |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, res in report["workloads"].items():
        for mode, block in res["modes"].items():
            for r in block["rows"]:
                a, b = r["one_thread"], r["split"]
                lines.append(
                    f"| {name} ({res['docs']:,} docs) | {mode} | {block['mean_terms']:.1f} | "
                    f"{r['algorithm']} | {a['p50_ms']:.3f} / {a['p99_ms']:.3f} | "
                    f"{b['p50_ms']:.3f} / {b['p99_ms']:.3f} | {r['threads']} | "
                    f"{r['p50_speedup']:.2f}x | {a['recall@10']:.4f} / {b['recall@10']:.4f} | "
                    f"{r['hit_lists_differing']} |"
                )
    return "\n".join(lines) + "\n"


def run(
    name: str, index: SparseIndex, queries: dict[str, SparseBatch], n: int, algorithms: list[str]
) -> dict:
    threads = numba.config.NUMBA_NUM_THREADS
    out: dict[str, Any] = {"docs": index.num_docs, "modes": {}}
    for mode, batch in queries.items():
        iq = integer_queries(batch)
        iq = SparseBatch(iq.ids[:n], iq.matrix[:n], iq.vocab)
        block: dict[str, Any] = {"mean_terms": float(iq.matrix.getnnz(axis=1).mean()), "rows": []}
        for algorithm in algorithms:
            row = measure(index, iq, threads, algorithm)
            block["rows"].append(row)
            print(f"{name} {mode}: {row}", flush=True)
        out["modes"][mode] = block
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realtext", type=Path, default=WORK / "realtext-splade-tiny")
    parser.add_argument("--docs", type=int, default=0, help="synthetic collection size (0: skip)")
    parser.add_argument(
        "--clustered", type=int, default=0, help="clustered synthetic collection size (0: skip)"
    )
    parser.add_argument(
        "--fit", type=Path, default=None, help="vectors the synthetic collections are fitted to"
    )
    parser.add_argument("--algorithms", default="exhaustive,blockmax,approximate")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    algorithms = [a for a in args.algorithms.split(",") if a]
    unknown = set(algorithms) - {"exhaustive", "blockmax", "approximate"}
    if unknown:
        parser.error(f"unknown --algorithms {sorted(unknown)}")
    vocab = Vocabulary.load(SHARED / "models" / "splade-tiny")
    workloads: dict[str, Any] = {}
    if args.realtext.exists():
        docs, queries = read_vectors_dir(args.realtext, vocab)
        index = SparseIndex.build(
            integer_docs(docs, 255), WORK / "bench_split-realtext", overwrite=True
        )
        workloads["realtext"] = run("realtext", index, queries, args.queries, algorithms)
    fit = args.fit or (args.realtext if args.realtext.exists() else None)
    fitted = {} if fit is None else {"real_dir": fit}
    if args.docs:
        from eval.synthetic import MODES, generate_collection, generate_queries

        docs = generate_collection(args.docs, seed=0, **fitted)
        queries = {m: generate_queries(docs, args.queries, mode=m, seed=1, **fitted) for m in MODES}
        index = SparseIndex.build(
            integer_docs(docs, 255), WORK / f"bench_split-synth-{args.docs}", overwrite=True
        )
        del docs
        name = f"synth-{args.docs // 1000}k"
        workloads[name] = run(name, index, queries, args.queries, algorithms)
    if args.clustered:
        from eval.synthetic import MODES, generate_clustered_collection, generate_clustered_queries

        docs, topics = generate_clustered_collection(args.clustered, seed=0, **fitted)
        queries = {
            m: generate_clustered_queries(docs, topics, args.queries, mode=m, **fitted)[0]
            for m in MODES
        }
        index = SparseIndex.build(
            integer_docs(docs, 255), WORK / f"bench_split-clustered-{args.clustered}",
            overwrite=True,
        )  # fmt: skip
        del docs
        name = f"clustered-{args.clustered // 1000}k"
        workloads[name] = run(name, index, queries, args.queries, algorithms)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "source": f"synthetic collections fitted to {fit.name if fit else 'the default vectors'}",
        "workloads": workloads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split_search.json").write_text(json.dumps(report, indent=2))
    (args.out / "split_search.md").write_text(markdown(report))
    print(markdown(report))
    bad = sum(
        r["hit_lists_differing"]
        for w in workloads.values()
        for block in w["modes"].values()
        for r in block["rows"]
        if r["algorithm"] != "approximate"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
