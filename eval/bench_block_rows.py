"""Block rows (``BuildConfig.block_rows``): what they cost in bytes and build time, and what they
buy in blockmax and approximate search, against the same index built without them.

For the real-text collection (``eval/realtext.py``; input order and, with ``--bp``, BP order)
and SciFact: the index is built with and without block rows from the same integer vectors,
then each query of both modes is searched on both, alternating query by query over 3 rounds
(these hosts drift; a ratio from one alternating run is what to read). Exact blockmax,
blockmax at ``heap_factor`` 0.85 and ``algorithm="approximate"``, end to end from a
{token: weight} dict. Every hit list must be the same on both indexes (block rows change where
bounds and postings are read from, never a bound or a score).

    python -m eval.bench_block_rows [--realtext DIR] [--bp] [--shares 0.25,0.5] [--queries 200]
        [--out DIR]

Writes ``block_rows.json`` and ``block_rows.md``; exits 1 if any hit list differs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from eval.bench_index import (
    REPO,
    SHARED,
    VECTORS,
    WORK,
    integer_docs,
    integer_queries,
    machine_info,
    percentile,
    read_vectors_dir,
)
from lsr import SparseIndex
from lsr.index.builder import BuildConfig
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

K = 10
SEARCHES = (("blockmax", 1.0), ("blockmax", 0.85), ("approximate", 1.0))


def bytes_per_posting(index: SparseIndex) -> float:
    return index.nbytes / max(1, index.num_postings)


def compare(
    plain: SparseIndex, rows: SparseIndex, queries: SparseBatch, rounds: int = 3
) -> list[dict[str, Any]]:
    """Each search of :data:`SEARCHES` on both indexes, alternating query by query: p50 / p99
    ms per side, the p50 ratio (plain / rows) and how many hit lists differ."""
    dicts = queries.to_dicts()
    out = []
    for algorithm, heap_factor in SEARCHES:
        opts = {"algorithm": algorithm}
        if algorithm == "blockmax":
            opts["heap_factor"] = heap_factor
        for q in dicts[:10]:  # warm-up (compiles), untimed
            plain.search(q, K, **opts)
            rows.search(q, K, **opts)
        differing = sum(plain.search(q, K, **opts) != rows.search(q, K, **opts) for q in dicts)
        times: tuple[list[float], list[float]] = ([], [])
        for r in range(rounds):
            for i, q in enumerate(dicts):
                for side in (0, 1) if (i + r) % 2 == 0 else (1, 0):
                    index = (plain, rows)[side]
                    start = time.perf_counter()
                    index.search(q, K, **opts)
                    times[side].append(time.perf_counter() - start)
        p50 = [percentile(t, 50) * 1e3 for t in times]
        out.append(
            {
                "algorithm": algorithm,
                "heap_factor": heap_factor if algorithm == "blockmax" else None,
                "plain_ms": {
                    "p50": round(p50[0], 4),
                    "p99": round(percentile(times[0], 99) * 1e3, 4),
                },
                "rows_ms": {
                    "p50": round(p50[1], 4),
                    "p99": round(percentile(times[1], 99) * 1e3, 4),
                },
                "speedup_p50": round(p50[0] / p50[1], 3),
                "differing": differing,
            }
        )
    return out


def run_workload(
    name: str, docs: SparseBatch, queries: dict[str, SparseBatch], args: argparse.Namespace
) -> dict[str, Any]:
    """Build the plain index and one with rows per share, then compare each with the plain."""
    idocs = integer_docs(docs, 255)
    reorder = "bp" if name.endswith("-bp") else "none"
    started = time.perf_counter()
    plain = SparseIndex.build(
        idocs, WORK / f"block_rows-{name}-plain", config=BuildConfig(reorder=reorder),
        overwrite=True,
    )  # fmt: skip
    plain_seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "docs": plain.num_docs,
        "postings": plain.num_postings,
        "plain": {"bytes_per_posting": round(bytes_per_posting(plain), 3),
                  "build_s": round(plain_seconds, 1)},
        "shares": [],
    }  # fmt: skip
    for share in args.shares:
        started = time.perf_counter()
        rows = SparseIndex.build(
            idocs, WORK / f"block_rows-{name}-{share}",
            config=BuildConfig(reorder=reorder, block_rows=share), overwrite=True,
        )  # fmt: skip
        block: dict[str, Any] = {
            "share": share,
            "rows": rows.manifest["num_block_rows"],
            "bytes_per_posting": round(bytes_per_posting(rows), 3),
            "build_s": round(time.perf_counter() - started, 1),
            "modes": {},
        }
        for mode, batch in queries.items():
            iq = integer_queries(batch)
            iq = SparseBatch(iq.ids[: args.queries], iq.matrix[: args.queries], iq.vocab)
            block["modes"][mode] = {
                "mean_terms": round(float(iq.matrix.getnnz(axis=1).mean()), 2),
                "searches": compare(plain, rows, iq),
            }
            print(f"{name} share {share} {mode}: {block['modes'][mode]}", flush=True)
        result["shares"].append(block)
    return result


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Block rows: blockmax with and without them, on the same vectors",
        "",
        f"Run {report['date']} on {report['machine']['cpus']} cores. k = {K}, one query at a "
        "time, end to end from a {token: weight} dict; the two indexes alternate query by "
        "query, 3 rounds. p50 / p99 ms; speed-up = p50 without ÷ p50 with. Differing: hit "
        "lists not the same on both (must be 0).",
        "",
        "| collection | share | rows | B/posting (plain → rows) | build s | mode | terms | search "
        "| plain | rows | speed-up | differing |",
        "|---|---:|---:|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, res in report["workloads"].items():
        for block in res["shares"]:
            for mode, m in block["modes"].items():
                for s in m["searches"]:
                    what = s["algorithm"] + (
                        f" hf {s['heap_factor']}" if s["heap_factor"] is not None else ""
                    )
                    lines.append(
                        f"| {name} ({res['docs']:,} docs) | {block['share']} | {block['rows']:,} "
                        f"| {res['plain']['bytes_per_posting']:.2f} → "
                        f"{block['bytes_per_posting']:.2f} | {res['plain']['build_s']} → "
                        f"{block['build_s']} | {mode} | {m['mean_terms']:.1f} | {what} | "
                        f"{s['plain_ms']['p50']:.3f} / {s['plain_ms']['p99']:.3f} | "
                        f"{s['rows_ms']['p50']:.3f} / {s['rows_ms']['p99']:.3f} | "
                        f"{s['speedup_p50']:.2f}x | {s['differing']} |"
                    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realtext", type=Path, default=WORK / "realtext-splade-tiny")
    parser.add_argument("--bp", action="store_true", help="also the real text in BP order")
    parser.add_argument("--shares", default="0.25,0.5", help="block_rows values to build")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    try:
        args.shares = [float(s) for s in args.shares.split(",") if s]
        for share in args.shares:
            BuildConfig(block_rows=share)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        parser.error(f"--shares: {exc}".splitlines()[0])
    vocab = Vocabulary.load(SHARED / "models" / "splade-tiny")
    workloads: dict[str, Any] = {}
    sources = [("scifact", VECTORS)]
    if args.realtext.exists():
        sources.append(("realtext", args.realtext))
        if args.bp:
            sources.append(("realtext-bp", args.realtext))
    for name, path in sources:
        docs, queries = read_vectors_dir(path, vocab)
        workloads[name] = run_workload(name, docs, queries, args)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "workloads": workloads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "block_rows.json").write_text(json.dumps(report, indent=2))
    (args.out / "block_rows.md").write_text(markdown(report))
    print(markdown(report))
    bad = sum(
        s["differing"]
        for w in workloads.values()
        for block in w["shares"]
        for m in block["modes"].values()
        for s in m["searches"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
