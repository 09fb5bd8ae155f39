"""Index benchmark: lsr's exact searches (exhaustive, MaxScore, block-max) vs scipy and Lucene.

Every system answers the same queries over the same integer-quantised vectors, and every system's
top-k must equal lsr's exhaustive scorer's (checked, and the mismatch count is recorded). Timings
are ratios taken in one run on one machine: absolute numbers are noisy here.

Workloads
  scifact   the real SciFact vectors encoded by splade-tiny (5,183 docs) and its 1,109 queries,
            siamese (model-encoded) and inference-free (IDF) — docs quantised to 255 levels.
  realtext  (with --realtext DIR) a vectors directory in the same layout, as written by
            ``python -m eval.realtext encode``: WordNet + GCIDE definitions (310,496 short
            documents) and 1,000 headword queries of both modes — docs quantised to 255 levels.
  synth-1m  eval/synthetic.py: 1,000,000 documents fitted to those vectors (df, length, weight),
            queries of both modes drawn the same way — docs quantised to 51 levels, because
            Anserini indexes an impact by repeating the term that many times (build time grows
            with the weight sum); 51 divides 255, so lsr's uint8 codes are exactly 5× the impacts.
Query weights are rounded to integers (×100) for every system, so all scores are exact sums.

Measured per workload and query mode: single-thread latency (p50, p99, mean) end to end from a
{token: weight} dict to ranked (doc id, score) hits; batch throughput on all cores; build time;
index bytes per posting.

    python -m eval.bench_index [--docs 1000000] [--queries 200] [--no-lucene] [--out eval/results]
                               [--realtext eval/work/realtext-splade-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from lsr import SparseIndex
from lsr.index import kernels
from lsr.sparse import SparseBatch, read_jsonl
from lsr.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny"
WORK = REPO / "eval" / "work"
K = 10
QUERY_SCALE = 100.0


def integer_docs(batch: SparseBatch, levels: int) -> SparseBatch:
    """Quantise document weights to integers 1..levels (linear, by the collection maximum)."""
    m = batch.matrix.copy()
    m.data = np.maximum(1.0, np.rint(m.data / m.data.max() * levels)).astype(np.float32)
    return SparseBatch(batch.ids, m, batch.vocab)


def integer_queries(batch: SparseBatch) -> SparseBatch:
    m = batch.matrix.copy()
    m.data = np.rint(m.data * QUERY_SCALE).astype(np.float32)
    m.eliminate_zeros()
    return SparseBatch(batch.ids, m, batch.vocab)


def machine_info() -> dict[str, Any]:
    """What a benchmark report records about the machine and the numeric stack."""
    import scipy

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_each(run: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 5) -> list[float]:
    for item in inputs[:warmup]:
        run(item)
    out = []
    for item in inputs:
        start = time.perf_counter()
        run(item)
        out.append(time.perf_counter() - start)
    return out


class ScipySearch:
    """Brute force: sparse D @ q, argpartition, sort (the textbook numpy/scipy approach)."""

    def __init__(self, docs: SparseBatch):
        self.matrix = docs.matrix.astype(np.float32).tocsr()
        self.ids = docs.ids
        self.vocab = docs.vocab

    def search(self, query: dict[str, float], k: int) -> list[tuple[str, float]]:
        q = np.zeros(self.matrix.shape[1], dtype=np.float32)
        for token, weight in query.items():
            q[self.vocab.get(token)] = weight
        scores = self.matrix @ q
        return self._top(scores, k)

    def _top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = min(k, scores.size)
        kth = np.partition(scores, scores.size - k)[scores.size - k]
        top = np.flatnonzero(scores >= kth)  # all documents tied at the cut-off; ids decide
        top = top[np.lexsort((top, -scores[top]))][:k]
        return [(self.ids[j], float(scores[j])) for j in top if scores[j] > 0]

    def batch_search(
        self, queries: SparseBatch, k: int, chunk: int = 64
    ) -> list[list[tuple[str, float]]]:
        out = []
        for start in range(0, len(queries), chunk):
            block = (queries.matrix[start : start + chunk] @ self.matrix.T).toarray()
            out.extend(self._top(row, k) for row in block)
        return out


def hit_ids(hits: Sequence[Any]) -> list[str]:
    return [h[0] for h in hits]


def mismatches(reference: list[list[str]], other: list[list[str]]) -> int:
    return sum(a != b for a, b in zip(reference, other, strict=True))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_vectors_dir(path: Path, vocab: Vocabulary) -> tuple[SparseBatch, dict[str, SparseBatch]]:
    """Documents and both query modes of a directory laid out as scifact-splade-tiny."""
    docs = read_jsonl(path / "docs.jsonl.gz", vocab)
    queries = {
        "siamese": read_jsonl(path / "queries-siamese.jsonl.gz", vocab),
        "inference-free": read_jsonl(path / "queries-idf.jsonl.gz", vocab),
    }
    return docs, queries


def lucene_index(
    idocs: SparseBatch, lucene_dir: Path, levels: int, *, rebuild: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Anserini impact index of ``idocs`` at ``lucene_dir``: reused when its stamp matches these
    integer vectors (and not ``rebuild``), else built; the searcher and its build info."""
    from lsr.baselines.lucene_impact import LuceneImpactSearch, build_impact_index

    stamp = lucene_dir / "lsr_bench_stamp.json"
    fingerprint = {
        "docs": len(idocs),
        "postings": int(idocs.matrix.nnz),
        "sum": float(idocs.matrix.data.sum()),
        "levels": levels,
    }
    cached = stamp.exists() and json.loads(stamp.read_text()) == fingerprint and not rebuild
    if cached:
        build_s = json.loads((lucene_dir / "lsr_bench_build.json").read_text())["build_s"]
        print(f"   reusing Lucene index {lucene_dir} (built in {build_s:.0f} s)", flush=True)
    else:
        shutil.rmtree(lucene_dir, ignore_errors=True)
        print(f"   building Lucene impact index at {lucene_dir} ...", flush=True)
        start = time.perf_counter()
        build_impact_index(idocs.ids, idocs.matrix, idocs.vocab.tokens, lucene_dir, threads=1)
        build_s = time.perf_counter() - start
        (lucene_dir / "lsr_bench_build.json").write_text(json.dumps({"build_s": build_s}))
        stamp.write_text(json.dumps(fingerprint))
    size = dir_bytes(lucene_dir) - stamp.stat().st_size
    return LuceneImpactSearch(lucene_dir), {
        "build_s": build_s,
        "bytes_per_posting": size / idocs.matrix.nnz,
        "build_reused_from_earlier_run": cached,
    }


def run_workload(
    name: str,
    docs: SparseBatch,
    queries: dict[str, SparseBatch],
    levels: int,
    args: argparse.Namespace,
    work: Path | None = None,
) -> dict[str, Any]:
    print(f"\n== {name}: {len(docs):,} docs, {docs.matrix.nnz:,} postings", flush=True)
    result: dict[str, Any] = {
        "docs": len(docs),
        "postings": int(docs.matrix.nnz),
        "impact_levels": levels,
    }
    work = WORK / name if work is None else work
    work.mkdir(parents=True, exist_ok=True)

    # bytes per posting of lsr built from the original float vectors
    start = time.perf_counter()
    index_f = SparseIndex.build(
        docs, work / "lsr-u8-float-input", quantization="uint8", overwrite=True
    )
    result["lsr_uint8_from_float"] = {
        "build_s": time.perf_counter() - start,
        "bytes_per_posting": index_f.nbytes / index_f.num_postings,
        "posting_bytes_per_posting": index_f.posting_bytes / index_f.num_postings,
    }
    del index_f

    idocs = integer_docs(docs, levels)
    start = time.perf_counter()
    index = SparseIndex.build(idocs, work / "lsr-u8", quantization="uint8", overwrite=True)
    build = {
        "lsr": {
            "build_s": time.perf_counter() - start,
            "bytes_per_posting": index.nbytes / index.num_postings,
        }
    }
    scipy_search = ScipySearch(idocs)
    lucene = None
    if not args.no_lucene:
        lucene, build["lucene"] = lucene_index(
            idocs, work / f"lucene-{levels}", levels, rebuild=args.rebuild_lucene
        )
    result["build"] = build

    threads = numba.config.NUMBA_NUM_THREADS
    result["modes"] = {}
    for mode, qbatch in queries.items():
        iq = integer_queries(qbatch)
        n = min(args.queries, len(iq))
        iq = SparseBatch(iq.ids[:n], iq.matrix[:n], iq.vocab)
        dicts = iq.to_dicts()
        row: dict[str, Any] = {"queries": n, "mean_terms": float(np.diff(iq.matrix.indptr).mean())}
        # correctness: everyone's top-k against the exhaustive scorer
        reference = [hit_ids(h) for h in index.batch_search(iq, K, algorithm="exhaustive")]
        answers = {
            "lsr-maxscore": [hit_ids(h) for h in index.batch_search(iq, K, algorithm="maxscore")],
            "lsr-blockmax": [hit_ids(h) for h in index.batch_search(iq, K, algorithm="blockmax")],
            "scipy": [hit_ids(h) for h in scipy_search.batch_search(iq, K)],
        }
        if lucene is not None:
            answers["lucene"] = [hit_ids(h) for h in lucene.batch_search(dicts, iq.ids, K).values()]
        row["topk_mismatches_vs_exhaustive"] = {
            s: mismatches(reference, a) for s, a in answers.items()
        }
        row["pruning_headroom"] = pruning_headroom(index, iq)

        systems: dict[str, Callable[[dict[str, float]], Any]] = {
            "lsr": lambda q: index.search(q, K),
            "lsr-maxscore": lambda q: index.search(q, K, algorithm="maxscore"),
            "lsr-blockmax": lambda q: index.search(q, K, algorithm="blockmax"),
            "scipy": lambda q: scipy_search.search(q, K),
        }
        if lucene is not None:
            systems["lucene"] = lambda q: lucene.search(q, K)
        latency = {}
        for system, run in systems.items():
            subset = dicts if system != "scipy" or len(docs) < 100_000 else dicts[: max(20, n // 4)]
            times = time_each(run, subset)
            latency[system] = {
                "p50_ms": percentile(times, 50) * 1e3,
                "p99_ms": percentile(times, 99) * 1e3,
                "mean_ms": statistics.fmean(times) * 1e3,
                "n": len(times),
            }
            print(
                f"   {mode:15s} {system:15s} p50 {latency[system]['p50_ms']:8.3f} ms  "
                f"p99 {latency[system]['p99_ms']:8.3f} ms",
                flush=True,
            )
        row["latency_single_thread"] = latency

        throughput = {}
        batch_runs: dict[str, Callable[[], Any]] = {
            "lsr": lambda iq=iq: index.batch_search(iq, K, threads=threads),
            "lsr-maxscore": lambda iq=iq: index.batch_search(
                iq, K, threads=threads, algorithm="maxscore"
            ),
            "lsr-blockmax": lambda iq=iq: index.batch_search(
                iq, K, threads=threads, algorithm="blockmax"
            ),
            "scipy": lambda iq=iq: scipy_search.batch_search(iq, K),
        }
        if lucene is not None:
            batch_runs["lucene"] = lambda d=dicts, iq=iq: lucene.batch_search(
                d, iq.ids, K, threads=threads
            )
        for system, run in batch_runs.items():
            run()
            start = time.perf_counter()
            run()
            throughput[system] = n / (time.perf_counter() - start)
        row["throughput_qps_all_cores"] = throughput
        row["threads"] = threads
        result["modes"][mode] = row
    if lucene is not None:
        lucene.close()
    return result


def pruning_headroom(index: SparseIndex, queries: SparseBatch, n: int = 50) -> dict[str, float]:
    """How much any exact bound-based pruning could skip, given the final top-k threshold θ.

    essential_postings: share of the query's postings in the terms MaxScore must read in full
    (the other terms' bounds sum below θ); blocks_reaching_theta: share of doc-id blocks whose
    summed block maxima reach θ (block-max pruning can only skip the others).
    """
    a = index._a
    entry_block = kernels.blocks_from_gaps(
        a["term_entry_ptr"], a["term_far_ptr"], a["entry_gap"], a["far_gap"]
    )
    df = np.diff(a["term_post_ptr"])
    lut = index._lut
    theta_share, essential, blocks = [], [], []
    q = index.prepare_queries(SparseBatch(queries.ids[:n], queries.matrix[:n], queries.vocab))
    _, scores, counts = index.search_arrays(q, K, algorithm="exhaustive")
    for i in range(len(q.ptr) - 1):
        if counts[i] < K:
            continue
        terms = q.terms[q.ptr[i] : q.ptr[i + 1]]
        weights = q.weights[q.ptr[i] : q.ptr[i + 1]]
        theta = scores[i][K - 1] / index.codec.score_scale
        ub = weights * index._term_bound[terms]
        suffix = np.cumsum(ub[::-1])[::-1]  # terms come in descending-bound order
        n_ess = int(np.sum(suffix >= theta))
        essential.append(df[terms[:n_ess]].sum() / max(df[terms].sum(), 1))
        theta_share.append(theta / ub.sum())
        block_ub = np.zeros(index.num_blocks)
        for t, w in zip(terms, weights, strict=True):
            e0, e1 = a["term_entry_ptr"][t], a["term_entry_ptr"][t + 1]
            maxima = a["entry_max"][e0:e1]
            block_ub[entry_block[e0:e1]] += w * (maxima if lut is None else lut[maxima])
        blocks.append(float(np.mean(block_ub >= theta)))
    return {
        "queries": len(essential),
        "theta_over_sum_of_term_bounds": float(np.mean(theta_share)),
        "essential_postings": float(np.mean(essential)),
        "blocks_reaching_theta": float(np.mean(blocks)),
    }


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for mode, row in result["modes"].items():
        lat = row["latency_single_thread"]
        ours = lat["lsr"]["p50_ms"]
        out[mode] = {f"{s}_p50_over_lsr": lat[s]["p50_ms"] / ours for s in lat if s != "lsr"}
    return out


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Index benchmark",
        "",
        f"Run {report['date']} on {machine['cpus']} cores ({machine['processor']}), "
        f"Python {machine['python']}, numba {machine['numba']}. "
        "k = 10. Latency: one thread, end to end from a {token: weight} dict to ranked hits. "
        f"Throughput: batch over all {machine['cpus']} cores. Ratios are the other system's "
        "p50 latency divided by lsr's (higher = lsr faster). `lsr` is the default exact search "
        "(exhaustive term-at-a-time, the reference every other answer is checked against), "
        "`lsr-maxscore` the exact dynamic-pruning search (MaxScore over doc-id blocks), "
        "`lsr-blockmax` the exact best-first block-max search (blocks in descending order of "
        "their upper bound).",
        "",
    ]
    for name, res in report["workloads"].items():
        lines += [
            f"## {name}: {res['docs']:,} documents, {res['postings']:,} postings "
            f"(impacts 1..{res['impact_levels']})",
            "",
        ]
        lines += [
            "| mode | system | p50 ms | p99 ms | mean ms | batch q/s | p50 ratio vs lsr "
            "| top-k mismatches |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, row in res["modes"].items():
            ours = row["latency_single_thread"]["lsr"]["p50_ms"]
            for system, lat in row["latency_single_thread"].items():
                mism = row["topk_mismatches_vs_exhaustive"].get(
                    system, 0 if system == "lsr" else "-"
                )
                lines.append(
                    f"| {mode} ({row['mean_terms']:.0f} terms) | {system} | {lat['p50_ms']:.3f} | "
                    f"{lat['p99_ms']:.3f} | {lat['mean_ms']:.3f} | "
                    f"{row['throughput_qps_all_cores'][system]:,.0f} | "
                    f"{lat['p50_ms'] / ours:.2f} | {mism} |"
                )
        lines += [
            "",
            "Pruning headroom, from the exact top-10 threshold θ (see `pruning_headroom`):",
            "",
            "| mode | θ / Σ term bounds | postings in essential terms | blocks with bound ≥ θ |",
            "|---|---:|---:|---:|",
        ]
        for mode, row in res["modes"].items():
            h = row["pruning_headroom"]
            lines.append(
                f"| {mode} | {h['theta_over_sum_of_term_bounds']:.2f} | "
                f"{h['essential_postings']:.2f} | {h['blocks_reaching_theta']:.2f} |"
            )
        lines += ["", "| system | build s | bytes / posting |", "|---|---:|---:|"]
        for system, b in res["build"].items():
            reused = b.get("build_reused_from_earlier_run")
            note = " (index reused; time from the run that built it)" if reused else ""
            lines.append(
                f"| {system} (integer impacts){note} | {b['build_s']:.1f} | "
                f"{b['bytes_per_posting']:.2f} |"
            )
        f = res["lsr_uint8_from_float"]
        lines.append(
            f"| lsr uint8 from float vectors | {f['build_s']:.1f} | {f['bytes_per_posting']:.2f} "
            f"(postings only {f['posting_bytes_per_posting']:.2f}) |"
        )
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(w, m) for w, r in report["workloads"].items() for m in r["modes"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (workload, mode) in zip(axes[0], panels, strict=True):
        lat = report["workloads"][workload]["modes"][mode]["latency_single_thread"]
        systems = list(lat)
        p50 = [lat[s]["p50_ms"] for s in systems]
        p99 = [lat[s]["p99_ms"] for s in systems]
        x = np.arange(len(systems))
        ax.bar(x - 0.2, p50, 0.4, label="p50")
        ax.bar(x + 0.2, p99, 0.4, label="p99")
        ax.set_xticks(x, systems, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(p50) / 3)
        ax.set_ylabel("ms per query (1 thread)")
        ax.set_title(f"{workload} / {mode}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=int, default=1_000_000, help="synthetic collection size (0: skip)"
    )
    parser.add_argument("--queries", type=int, default=200, help="queries per mode")
    parser.add_argument(
        "--levels", type=int, default=51, help="impact levels for the synthetic workload"
    )
    parser.add_argument("--no-lucene", action="store_true", help="skip the Lucene anchor")
    parser.add_argument(
        "--rebuild-lucene", action="store_true", help="ignore a cached Lucene index"
    )
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    parser.add_argument(
        "--realtext",
        type=Path,
        default=None,
        help="vectors directory (python -m eval.realtext encode): adds the realtext workload",
    )
    parser.add_argument(
        "--render", action="store_true", help="only redraw md/png from --out's JSON"
    )
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads((args.out / "bench_index.json").read_text())
        (args.out / "bench_index.md").write_text(markdown(report))
        plot(report, args.out / "bench_index.png")
        return 0

    vocab = Vocabulary.load(SHARED / "models" / "splade-tiny")
    workloads: dict[str, dict[str, Any]] = {}
    real_docs, real_queries = read_vectors_dir(VECTORS, vocab)
    workloads["scifact"] = run_workload("scifact", real_docs, real_queries, 255, args)
    if args.realtext is not None:
        text_docs, text_queries = read_vectors_dir(args.realtext, vocab)
        # eval/work/realtext is the BEIR collection itself: the indexes go next to it
        workloads["realtext"] = run_workload(
            "realtext", text_docs, text_queries, 255, args, work=WORK / "bench_index-realtext"
        )
    fit = None
    if args.docs:
        from eval.synthetic import fit_report, generate_collection, generate_queries

        start = time.perf_counter()
        docs = generate_collection(args.docs, seed=0)
        queries = {
            m: generate_queries(docs, args.queries, mode=m, seed=1)
            for m in ("siamese", "inference-free")
        }
        print(
            f"generated {len(docs):,} synthetic docs in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        fit = fit_report(docs, queries)
        workloads[f"synth-{args.docs // 1000}k"] = run_workload(
            f"synth-{args.docs // 1000}k", docs, queries, args.levels, args
        )

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "k": K,
        "workloads": workloads,
        "ratios": {name: ratios(res) for name, res in workloads.items()},
        "synthetic_fit": fit,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_index.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / "bench_index.md").write_text(markdown(report))
    plot(report, args.out / "bench_index.png")
    print(markdown(report))
    bad = {
        (w, m): r["topk_mismatches_vs_exhaustive"]
        for w, res in workloads.items()
        for m, r in res["modes"].items()
        if any(r["topk_mismatches_vs_exhaustive"].values())
    }
    if bad:
        print(f"TOP-K MISMATCHES: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
