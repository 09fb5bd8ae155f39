"""blockmax's recall knob on the real-text collection: latency and recall@10 against exact.

For each query mode (siamese, inference-free) of the real-text collection (``eval/realtext.py``;
the index ``eval/bench_index.py --realtext`` builds), one thread, ``k`` = 10: exhaustive and
MaxScore (both exact) as anchors in the same run, then ``algorithm="blockmax"`` at several
``heap_factor`` values (1.0 is exact). Recall@10 is the overlap with the exhaustive top 10.

    python -m eval.bench_blockmax_knob [--queries 200] [--out eval/results]

Writes ``blockmax_knob.json`` and ``blockmax_knob.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_index import SHARED, WORK, integer_queries, machine_info, percentile
from lsr import SparseIndex
from lsr.sparse import SparseBatch, read_jsonl
from lsr.vocab import Vocabulary

K = 10
FACTORS = (1.0, 0.95, 0.9, 0.8, 0.7, 0.5)


def measure(index: SparseIndex, dicts: list[dict], exact: list[list[str]], **kw: Any) -> dict:
    """p50 / p99 / mean latency (ms, one query at a time) and mean recall@10 vs ``exact``."""
    for q in dicts[:10]:  # warm-up, untimed
        index.search(q, K, **kw)
    times, recall = [], []
    for q, want in zip(dicts, exact, strict=True):
        t = time.perf_counter()
        hits = index.search(q, K, **kw)
        times.append(time.perf_counter() - t)
        got = {h.doc_id for h in hits}
        recall.append(len(got & set(want)) / max(1, len(want)))
    return {
        "p50_ms": round(percentile(times, 50) * 1e3, 4),
        "p99_ms": round(percentile(times, 99) * 1e3, 4),
        "mean_ms": round(float(np.mean(times)) * 1e3, 4),
        "recall@10": round(float(np.mean(recall)), 4),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# blockmax recall knob (real text)",
        "",
        f"Run {report['date']} on {report['machine']['cpus']} cores; {report['docs']:,} "
        f"documents, {report['queries']} queries per mode, k = {K}, one thread, p50/p99 ms. "
        "Recall@10 against the exhaustive top 10 (exact).",
        "",
        "| mode | algorithm | heap_factor | p50 ms | p99 ms | recall@10 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['mode']} | {row['algorithm']} | {row['heap_factor']} | {row['p50_ms']:.3f} | "
            f"{row['p99_ms']:.3f} | {row['recall@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index", type=Path, default=WORK / "bench_index-realtext" / "lsr-u8")
    parser.add_argument("--vectors", type=Path, default=WORK / "realtext-splade-tiny")
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    args = parser.parse_args(argv)
    vocab = Vocabulary.load(SHARED / "models" / "splade-tiny")
    index = SparseIndex.open(args.index, verify=False)
    files = {"siamese": "queries-siamese.jsonl.gz", "inference-free": "queries-idf.jsonl.gz"}
    rows = []
    for mode, name in files.items():
        iq = integer_queries(read_jsonl(args.vectors / name, vocab))
        iq = SparseBatch(iq.ids[: args.queries], iq.matrix[: args.queries], iq.vocab)
        dicts = iq.to_dicts()
        exact = [[h.doc_id for h in index.search(q, K)] for q in dicts]
        configs = [("exhaustive", 1.0), ("maxscore", 1.0)]
        configs += [("blockmax", f) for f in FACTORS]
        for algorithm, factor in configs:
            row = measure(index, dicts, exact, algorithm=algorithm, heap_factor=factor)
            rows.append({"mode": mode, "algorithm": algorithm, "heap_factor": factor, **row})
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "docs": index.num_docs,
        "queries": args.queries,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "blockmax_knob.json").write_text(json.dumps(report, indent=1))
    (args.out / "blockmax_knob.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
