"""Document-id reordering (BP, recursive graph bisection) on the real-text collection, both ways.

For each block size, builds the 310k-document real-text index (``eval/realtext.py``; documents
as integer impacts 1..255, like ``eval/bench_index.py --realtext``) with ``reorder="none"`` and
``reorder="bp"``, then measures both in the same run: build time, entries, postings per entry,
bytes per posting, the share of blocks whose bound reaches the final top-10 threshold
(``pruning_headroom``), one-thread p50 / p99 latency of exhaustive, maxscore and blockmax
(heap_factor 1 and 0.9, with recall@10 against exact) per query mode, and batch q/s on all
cores. Latencies alternate between the two indexes query by query, to share the noise.

    python -m eval.bench_reorder [--queries 200] [--block-sizes 128,64] [--out eval/results]

Writes ``reorder_realtext.json`` and ``reorder_realtext.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from eval.bench_index import (
    SHARED,
    WORK,
    integer_docs,
    integer_queries,
    machine_info,
    percentile,
    pruning_headroom,
    read_vectors_dir,
)
from lsr import SparseIndex
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

K = 10
ORDERS = ("none", "bp")
RUNS: dict[str, dict[str, Any]] = {
    "exhaustive": {"algorithm": "exhaustive"},
    "maxscore": {"algorithm": "maxscore"},
    "blockmax": {"algorithm": "blockmax"},
    "blockmax hf0.9": {"algorithm": "blockmax", "heap_factor": 0.9},
}


def build(docs: SparseBatch, path: Path, block_size: int, reorder: str) -> dict[str, Any]:
    """Build one index; its size figures."""
    start = time.perf_counter()
    index = SparseIndex.build(
        docs, path, block_size=block_size, reorder=reorder, overwrite=True, progress=True
    )
    seconds = time.perf_counter() - start
    m = index.manifest
    return {
        "index": index,
        "build_s": round(seconds, 1),
        "entries": m["num_entries"],
        "postings_per_entry": round(m["num_postings"] / m["num_entries"], 3),
        "bytes_per_posting": round(index.nbytes / index.num_postings, 3),
        "posting_bytes_per_posting": round(index.posting_bytes / index.num_postings, 3),
    }


def entries_in_order(docs: SparseBatch, order: np.ndarray, block_size: int) -> int:
    """Block entries an index of ``docs`` would have with rows in ``order`` (no build)."""
    m = docs.matrix
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return len(
        np.unique(m.indices.astype(np.int64) * (m.shape[0] + 1) + position[rows] // block_size)
    )


def latencies(
    indexes: dict[str, SparseIndex], dicts: list[dict], exact: dict[str, list[set[str]]], kw: dict
) -> dict[str, dict[str, float]]:
    """One query at a time, alternating indexes: p50 / p99 ms and recall@10 vs exact."""
    for q in dicts[:10]:
        for index in indexes.values():
            index.search(q, K, **kw)
    times: dict[str, list[float]] = {name: [] for name in indexes}
    recall: dict[str, list[float]] = {name: [] for name in indexes}
    for i, q in enumerate(dicts):
        names = list(indexes) if i % 2 == 0 else list(indexes)[::-1]
        for name in names:
            t = time.perf_counter()
            hits = indexes[name].search(q, K, **kw)
            times[name].append(time.perf_counter() - t)
            want = exact[name][i]
            recall[name].append(len({h.doc_id for h in hits} & want) / max(1, len(want)))
    return {
        name: {
            "p50_ms": round(percentile(times[name], 50) * 1e3, 4),
            "p99_ms": round(percentile(times[name], 99) * 1e3, 4),
            "recall@10": round(float(np.mean(recall[name])), 4),
        }
        for name in indexes
    }


def throughput(run: Callable[[], Any], n: int, repeats: int = 3) -> float:
    """Queries per second of the best of ``repeats`` timed runs (after one warm-up)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return round(n / best, 1)


def measure_mode(indexes: dict[str, SparseIndex], iq: SparseBatch) -> dict[str, Any]:
    """All figures of one query mode for both indexes."""
    dicts = iq.to_dicts()
    threads, n_q = numba.config.NUMBA_NUM_THREADS, len(iq)
    exact, scores = {}, {}
    for name, index in indexes.items():
        hits = index.batch_search(iq, K, algorithm="exhaustive")
        exact[name] = [{h.doc_id for h in row} for row in hits]
        scores[name] = [sorted(h.score for h in row) for row in hits]
    row: dict[str, Any] = {
        "queries": len(dicts),
        "same_scores_none_vs_bp": scores["none"] == scores["bp"],
        "headroom": {n: pruning_headroom(ix, iq) for n, ix in indexes.items()},
        "latency": {},
        "qps": {},
    }
    for run_name, kw in RUNS.items():
        row["latency"][run_name] = latencies(indexes, dicts, exact, kw)
        row["qps"][run_name] = {
            n: throughput(lambda ix=ix, kw=kw: ix.batch_search(iq, K, threads=threads, **kw), n_q)
            for n, ix in indexes.items()
        }
        print(f"   {run_name:15s} {row['latency'][run_name]}", flush=True)
    return row


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Document-id reordering (BP) on real text",
        "",
        f"Run {report['date']} on {report['machine']['cpus']} cores (shared); "
        f"{report['docs']:,} documents, {report['postings']:,} postings, "
        f"{report['queries']} queries per mode, k = {K}. Latency: one thread, p50 / p99 ms, "
        "the two indexes alternating query by query; q/s: batch on all cores, best of 3. "
        "BP time = bp build - plain build.",
        "",
        "## Size",
        "",
        "| block | order | build s | entries | postings/entry | B/posting | posting B/posting |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for bs, res in report["block_sizes"].items():
        for order in ORDERS:
            s = res["size"][order]
            lines.append(
                f"| {bs} | {order} | {s['build_s']} | {s['entries']:,} | "
                f"{s['postings_per_entry']} | {s['bytes_per_posting']} | "
                f"{s['posting_bytes_per_posting']} |"
            )
    lines.append("")
    lines += [
        f"Block {bs}: a random document order would have {res['size']['random_order_entries']:,}"
        " entries (the input order is already partly clustered)."
        for bs, res in report["block_sizes"].items()
        if "random_order_entries" in res["size"]
    ]
    lines += [
        "",
        "## Search",
        "",
        "| block | mode | run | none p50 / p99 | bp p50 / p99 | p50 speed-up | recall none / bp "
        "| q/s none / bp |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for bs, res in report["block_sizes"].items():
        for mode, row in res["modes"].items():
            for run_name, lat in row["latency"].items():
                a, b = lat["none"], lat["bp"]
                q = row["qps"][run_name]
                lines.append(
                    f"| {bs} | {mode} | {run_name} | {a['p50_ms']:.3f} / {a['p99_ms']:.3f} | "
                    f"{b['p50_ms']:.3f} / {b['p99_ms']:.3f} | {a['p50_ms'] / b['p50_ms']:.2f}x | "
                    f"{a['recall@10']:.3f} / {b['recall@10']:.3f} | {q['none']} / {q['bp']} |"
                )
    lines += [
        "",
        "## Blocks that can reach the top-10 threshold θ (pruning_headroom, 50 queries)",
        "",
        "| block | mode | none | bp |",
        "|---:|---|---:|---:|",
    ]
    for bs, res in report["block_sizes"].items():
        for mode, row in res["modes"].items():
            h = row["headroom"]
            lines.append(
                f"| {bs} | {mode} | {h['none']['blocks_reaching_theta']:.3f} | "
                f"{h['bp']['blocks_reaching_theta']:.3f} |"
            )
    checks = [
        f"{bs}/{mode}: {row['same_scores_none_vs_bp']}"
        for bs, res in report["block_sizes"].items()
        for mode, row in res["modes"].items()
    ]
    lines += ["", "Same exact top-10 scores, none vs bp: " + ", ".join(checks), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--block-sizes", default="128,64")
    parser.add_argument("--vectors", type=Path, default=WORK / "realtext-splade-tiny")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    vocab = Vocabulary.load(SHARED / "models" / "splade-tiny")
    docs, queries = read_vectors_dir(args.vectors, vocab)
    docs = integer_docs(docs, 255)
    work = WORK / f"bench_reorder-{args.vectors.name}"
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "docs": len(docs),
        "postings": int(docs.matrix.nnz),
        "queries": args.queries,
        "block_sizes": {},
    }
    iqs = {}
    for mode, batch in queries.items():
        iq = integer_queries(batch)
        n = min(args.queries, len(iq))
        iqs[mode] = SparseBatch(iq.ids[:n], iq.matrix[:n], iq.vocab)
    for bs in (int(b) for b in args.block_sizes.split(",")):
        print(f"== block_size {bs}", flush=True)
        size = {o: build(docs, work / f"{o}-{bs}", bs, o) for o in ORDERS}
        indexes = {o: size[o].pop("index") for o in ORDERS}
        size["bp_seconds"] = round(size["bp"]["build_s"] - size["none"]["build_s"], 1)
        shuffled = np.random.default_rng(0).permutation(len(docs))
        size["random_order_entries"] = entries_in_order(docs, shuffled, bs)
        print(f"   {size}", flush=True)
        res: dict[str, Any] = {"size": size, "modes": {}}
        for mode, iq in iqs.items():
            res["modes"][mode] = measure_mode(indexes, iq)
        report["block_sizes"][str(bs)] = res
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reorder_realtext.json").write_text(json.dumps(report, indent=2))
        (args.out / "reorder_realtext.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
