"""Single-query latency end to end, text in, hits out, through ``Retriever.search``.

For each query mode (siamese: the model encodes the query; inference-free: tokenizer x IDF) the
SciFact test queries run one at a time, and each query's time is split into its stages, measured
in the same run: encoding (``encode_one``), preparing (``prepare_queries``: checks, pruning,
canonical term order), the kernel (``search_arrays``: the Numba scorer and top-k) and the rest
(hit objects, the call path). The same is measured again while another process keeps one of the
two cores busy (eval/cpu_load.py). The anchor is the kernel itself: what a query costs beyond
it is the glue this benchmark watches.

    python -m eval.bench_query [--siamese indexes/scifact] [--inference-free indexes/scifact-if]
                               [--queries 300] [--out eval/results]

The default indexes are the demo's (scripts/demo.sh builds them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_index import machine_info
from eval.cpu_load import competing_load
from lsr.corpus import load_beir
from lsr.retrieval import Retriever

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "beir" / "scifact"
K = 10


def _ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def measure(retriever: Retriever, texts: Sequence[str]) -> dict[str, Any]:
    """Per-stage and end-to-end latency of each text, one at a time (after a warm-up)."""
    encoder, index = retriever.query_encoder, retriever.sparse
    retriever.warm_up(K)
    for text in texts[:10]:
        retriever.search(text, K)
    stages: dict[str, list[float]] = {
        "encode": [], "prepare": [], "kernel": [], "index_search": [], "total": [],
    }  # fmt: skip
    for text in texts:
        t0 = time.perf_counter()
        query = encoder.encode_one(text)
        t1 = time.perf_counter()
        prepared = index.prepare_queries(query)
        t2 = time.perf_counter()
        index.search_arrays(prepared, K)
        t3 = time.perf_counter()
        stages["encode"].append(t1 - t0)
        stages["prepare"].append(t2 - t1)
        stages["kernel"].append(t3 - t2)
    for query in [encoder.encode_one(text) for text in texts]:
        t0 = time.perf_counter()
        index.search(query, K)
        stages["index_search"].append(time.perf_counter() - t0)
    for text in texts:  # end to end, separately, so no stage's timer is inside it
        t0 = time.perf_counter()
        retriever.search(text, K)
        stages["total"].append(time.perf_counter() - t0)
    out = {name: {"p50_ms": _ms(v, 50), "p99_ms": _ms(v, 99)} for name, v in stages.items()}
    out["total_over_kernel_p50"] = out["total"]["p50_ms"] / out["kernel"]["p50_ms"]
    out["total_over_index_search_p50"] = out["total"]["p50_ms"] / out["index_search"]["p50_ms"]
    out["p99_over_p50"] = out["total"]["p99_ms"] / out["total"]["p50_ms"]
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Single-query latency, text to hits (`eval/bench_query.py`)",
        "",
        f"{report['queries']} SciFact test queries, one at a time, k={K}; {report['date']}, "
        f"{report['machine']['cpus']} CPUs, load average before the run "
        f"{report['load_average_before']}.",
        "",
        "| query mode | load | encode p50 | prepare p50 | kernel p50 | index search p50 "
        "| total p50 | total p99 | total / kernel | total / index search | p99 / p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, runs in report["modes"].items():
        for load, r in runs.items():
            lines.append(
                f"| {mode} | {load} | {r['encode']['p50_ms']:.3f} | {r['prepare']['p50_ms']:.3f} "
                f"| {r['kernel']['p50_ms']:.3f} | {r['index_search']['p50_ms']:.3f} "
                f"| {r['total']['p50_ms']:.3f} | {r['total']['p99_ms']:.3f} "
                f"| {r['total_over_kernel_p50']:.2f}x | {r['total_over_index_search_p50']:.2f}x "
                f"| {r['p99_over_p50']:.2f}x |"
            )
    lines += [
        "",
        "Milliseconds. *kernel* is `SparseIndex.search_arrays` on a prepared query (the Numba "
        "scorer, top-k selection and its output arrays); *index search* is `SparseIndex.search` "
        "of the encoded query (preparation, kernel and hit objects: what eval/bench_index.py "
        "times from a dict); *total* is `Retriever.search(text)`, "
        "timed in a separate pass. *competing* runs the same while another process spins on one "
        "of the two cores.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--siamese", type=Path, default=REPO / "indexes" / "scifact")
    parser.add_argument("--inference-free", type=Path, default=REPO / "indexes" / "scifact-if")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    data = load_beir(DATA, "test")
    texts = [data.queries[q] for q in sorted(data.queries)][: args.queries]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "queries": len(texts),
        "modes": {},
    }
    for mode, path in (("siamese", args.siamese), ("inference-free", args.inference_free)):
        retriever = Retriever.open(path)
        idle = measure(retriever, texts)
        with competing_load():
            loaded = measure(retriever, texts)
        report["modes"][mode] = {"idle": idle, "competing": loaded}
        idle_t, loaded_t = idle["total"], loaded["total"]
        print(
            f"{mode}: p50 / p99 idle {idle_t['p50_ms']:.3f} / {idle_t['p99_ms']:.3f} ms, "
            f"competing {loaded_t['p50_ms']:.3f} / {loaded_t['p99_ms']:.3f} ms"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_query.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench_query.md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
