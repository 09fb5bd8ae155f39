"""Does exact dynamic pruning (MaxScore) pay off on a topically clustered collection?

On the independent-terms synthetic collection (``generate_collection``) the top-k threshold is far
below the summed term bounds and almost every doc-id block can still reach it, so MaxScore loses
to the exhaustive scorer. Real collections cluster by topic, and after doc-id reordering documents
of a topic sit in contiguous doc-id ranges. This benchmark builds a uint8 index (block size 128)
of ``generate_clustered_collection`` (docs grouped by topic) and, side by side in the same run, of
``generate_collection`` at the same size, and reports for each workload and query mode the
single-thread latency of ``algorithm="exhaustive"`` and ``algorithm="maxscore"`` (k = 10), the
top-k mismatches between them (must be 0), and ``pruning_headroom`` from ``bench_index``.

Usage: ``PYTHONPATH=. python eval/bench_pruning.py [--docs 1000000] [--queries 200]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_index import WORK, K, machine_info, percentile, pruning_headroom, time_each
from eval.synthetic import (
    DEFAULT_REAL_DIR,
    MODES,
    _real,
    _topics,
    document_frequency,
    fit_report,
    generate_clustered_collection,
    generate_clustered_queries,
    generate_collection,
    generate_queries,
)
from lsr import SparseIndex
from lsr.sparse import SparseBatch

REPO = Path(__file__).resolve().parents[1]
ALGORITHMS = ("exhaustive", "maxscore")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_workload(
    name: str, docs: SparseBatch, queries: dict[str, SparseBatch], n_queries: int
) -> dict[str, Any]:
    print(f"\n== {name}: {len(docs):,} docs, {docs.matrix.nnz:,} postings", flush=True)
    start = time.perf_counter()
    index = SparseIndex.build(docs, WORK / f"pruning-{name}", quantization="uint8", overwrite=True)
    out: dict[str, Any] = {
        "docs": len(docs),
        "postings": int(docs.matrix.nnz),
        "build_s": time.perf_counter() - start,
        "blocks": int(index.num_blocks),
        "modes": {},
    }
    for mode, batch in queries.items():
        n = min(n_queries, len(batch))
        batch = SparseBatch(batch.ids[:n], batch.matrix[:n], batch.vocab)
        dicts = batch.to_dicts()
        hits = {a: [index.search(q, K, algorithm=a) for q in dicts] for a in ALGORITHMS}
        mismatched = sum(
            [tuple(h) for h in x] != [tuple(h) for h in y]
            for x, y in zip(hits["exhaustive"], hits["maxscore"], strict=True)
        )
        row: dict[str, Any] = {
            "queries": n,
            "mean_terms": float(np.diff(batch.matrix.indptr).mean()),
            "topk_mismatches": int(mismatched),
            "pruning_headroom": pruning_headroom(index, batch),
            "latency_single_thread": {},
        }
        for algorithm in ALGORITHMS:
            times = time_each(lambda q, a=algorithm: index.search(q, K, algorithm=a), dicts)
            row["latency_single_thread"][algorithm] = {
                "p50_ms": percentile(times, 50) * 1e3,
                "p99_ms": percentile(times, 99) * 1e3,
                "mean_ms": float(np.mean(times)) * 1e3,
            }
        lat = row["latency_single_thread"]
        row["speedup_p50"] = lat["exhaustive"]["p50_ms"] / lat["maxscore"]["p50_ms"]
        row["speedup_mean"] = lat["exhaustive"]["mean_ms"] / lat["maxscore"]["mean_ms"]
        print(
            f"   {mode:15s} exhaustive p50 {lat['exhaustive']['p50_ms']:7.2f} ms  "
            f"maxscore p50 {lat['maxscore']['p50_ms']:7.2f} ms  "
            f"speed-up {row['speedup_p50']:.2f}x  mismatches {mismatched}",
            flush=True,
        )
        out["modes"][mode] = row
    return out


def df_fit(docs: SparseBatch) -> dict[str, float]:
    """Synthetic vs real df/N over the real top-k terms (k = 100, 1000)."""
    real = _real(str(DEFAULT_REAL_DIR))
    real_df = document_frequency(real["docs"].matrix) / len(real["docs"])
    syn_df = document_frequency(docs.matrix) / len(docs)
    top = np.argsort(-real_df, kind="stable")
    out = {}
    for k in (100, 1000):
        t = top[:k]
        out[f"top{k}_sum_ratio"] = float(syn_df[t].sum() / real_df[t].sum())
        out[f"top{k}_median_ratio"] = float(np.median(syn_df[t] / real_df[t]))
    common = real_df * len(real["docs"]) >= 10
    out["all_terms_mean_abs_log_ratio_df_ge_10"] = float(
        np.mean(np.abs(np.log(np.maximum(syn_df[common], 1e-12) / real_df[common])))
    )
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Dynamic pruning on a topically clustered collection",
        "",
        f"Run {report['date']} on {m['cpus']} cores ({m['processor']}), numba {m['numba']}. "
        f"{report['docs']:,} docs per workload, {report['queries']} queries per mode, k = {K}, "
        "uint8 index, 128-doc blocks. "
        "Latency: one thread, `index.search(dict, 10, algorithm=...)`. "
        "`clustered`: `generate_clustered_collection` "
        f"({report['n_topics']} topics, doc ids grouped by topic); `independent`: "
        "`generate_collection` (terms drawn independently). Headroom (from `bench_index`): "
        "θ / Σ term bounds, share of postings in MaxScore's essential lists, share of blocks "
        "whose summed block maxima reach θ.",
        "",
        "| workload | mode | terms | exhaustive p50 / p99 ms | maxscore p50 / p99 ms "
        "| speed-up p50 (mean) | θ/Σub | essential postings | blocks ≥ θ | mismatches |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, w in report["workloads"].items():
        for mode, r in w["modes"].items():
            lat, h = r["latency_single_thread"], r["pruning_headroom"]
            ex, ms = lat["exhaustive"], lat["maxscore"]
            lines.append(
                f"| {name} | {mode} | {r['mean_terms']:.1f} "
                f"| {ex['p50_ms']:.2f} / {ex['p99_ms']:.2f} "
                f"| {ms['p50_ms']:.2f} / {ms['p99_ms']:.2f} "
                f"| {r['speedup_p50']:.2f}x ({r['speedup_mean']:.2f}x) "
                f"| {h['theta_over_sum_of_term_bounds']:.3f} | {h['essential_postings']:.3f} "
                f"| {h['blocks_reaching_theta']:.3f} | {r['topk_mismatches']} |"
            )
    lines += [
        "",
        "| workload | docs | postings | generation s | index build s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, w in report["workloads"].items():
        lines.append(
            f"| {name} | {w['docs']:,} | {w['postings']:,} | {w['generation_s']:.1f} "
            f"| {w['build_s']:.1f} |"
        )
    lines += [
        "",
        "Fit of the synthetic marginals to the real SciFact docs (ratios synthetic / real df/N "
        "over the real top-k terms; mean |ln ratio| over terms with real df ≥ 10):",
        "",
        "| workload | top-100 sum | top-100 median | top-1000 sum | top-1000 median "
        "| mean abs ln ratio | mean doc length (real) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, w in report["workloads"].items():
        f = w["df_fit"]
        dl = w["doc_length"]
        lines.append(
            f"| {name} | {f['top100_sum_ratio']:.3f} | {f['top100_median_ratio']:.3f} "
            f"| {f['top1000_sum_ratio']:.3f} | {f['top1000_median_ratio']:.3f} "
            f"| {f['all_terms_mean_abs_log_ratio_df_ge_10']:.3f} "
            f"| {dl['synthetic']:.1f} ({dl['real']:.1f}) |"
        )
    lines.append("")
    lines.append(f"Peak RSS of the whole run: {report['peak_rss_gb']:.1f} GB.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="queries per mode")
    parser.add_argument("--topics", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    real_docs = _real(str(DEFAULT_REAL_DIR))["docs"]
    workloads: dict[str, Any] = {}
    for name in ("clustered", "independent"):
        start = time.perf_counter()
        if name == "clustered":
            _topics(
                str(DEFAULT_REAL_DIR),
                args.topics,
            )
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            docs, topics = generate_clustered_collection(args.docs, n_topics=args.topics, seed=0)
            generation_s = time.perf_counter() - start
            queries = {
                m: generate_clustered_queries(
                    docs, topics, args.queries, mode=m, n_topics=args.topics, seed=1
                )[0]
                for m in MODES
            }
        else:
            fit_s = 0.0
            docs = generate_collection(args.docs, seed=0)
            generation_s = time.perf_counter() - start
            queries = {m: generate_queries(docs, args.queries, mode=m, seed=1) for m in MODES}
        print(
            f"{name}: generated {len(docs):,} docs in {generation_s:.1f} s "
            f"(topic fit {fit_s:.1f} s), peak RSS so far {_peak_rss_gb():.1f} GB",
            flush=True,
        )
        result = run_workload(name, docs, queries, args.queries)
        result["generation_s"] = generation_s
        result["topic_fit_s"] = fit_s
        result["df_fit"] = df_fit(docs)
        result["doc_length"] = {
            "synthetic": docs.matrix.nnz / len(docs),
            "real": real_docs.matrix.nnz / len(real_docs),
        }
        fit = fit_report(docs, queries)
        result["query_length_mean"] = {
            m: fit["stats"][f"{m} query length"]["synthetic"]["mean"] for m in MODES
        }
        result["real_query_length_mean"] = {
            m: fit["stats"][f"{m} query length"]["real"]["mean"] for m in MODES
        }
        workloads[name] = result
        del docs, queries
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "k": K,
        "docs": args.docs,
        "queries": args.queries,
        "n_topics": args.topics,
        "workloads": workloads,
        "peak_rss_gb": _peak_rss_gb(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_pruning.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / "bench_pruning.md").write_text(markdown(report) + "\n")
    print(markdown(report))
    bad = {
        (w, m): r["topk_mismatches"]
        for w, res in workloads.items()
        for m, r in res["modes"].items()
        if r["topk_mismatches"]
    }
    if bad:
        print(f"TOP-K MISMATCHES: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
