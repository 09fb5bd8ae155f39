"""Encoding benchmark: lsr's SPLADE encoders vs sentence-transformers' SparseEncoder.

Same model (splade-tiny), same texts, same max lengths. Outputs must agree (max abs difference
per weight <= 1e-4) before any time is reported. sentence-transformers does not zero the
special-token columns; its output is compared after zeroing them (for splade-tiny those columns
are never positive, so nothing is removed).

Documents (the first ``--docs`` SciFact documents, title + " " + text, max length 256): each
system first encodes a warm-up slice; then the systems are timed in turns, ``--repeats`` times
each, and the best pass is reported (the machine may be shared: medians are recorded too).

  sentence-transformers    SparseEncoder(model).encode(texts, batch_size): full [B, L, V] logits
  lsr reference            full logits (the plain computation), per window
  lsr tiled                exact float32 projection by vocabulary blocks, max taken on the fly
  lsr screened (default)   bf16 bound of every term's max logit, exact float32 recompute of the
                           terms that can be positive
  lsr screened, padded     the opt-in ``batching="padded"``: length-sorted padded batches on
                           torch's threads (a vector's last bits then depend on its batch)
The lsr rows but the last use the default ``batching="invariant"``: every window alone, on
one-thread workers, one worker per core. Plus both batchings at other batch sizes, one
worker / one thread, a stage breakdown, and the same on CUDA when available.

Single queries (the first ``--queries`` SciFact queries, max length 64), one at a time, the
systems taking turns a block of queries at a time: lsr's ``side.encode_one(text)`` (what
Retriever.search calls) vs sentence-transformers' ``encode_query([text])``, p50 and p99, on an
idle machine and while a competing process spins on one core (started by the bench, bounded in
time, killed at the end). Also timed: the padded batching (the calling thread, torch's threads:
how lsr encoded single queries before) and the other projections at batch 1.

    python -m eval.bench_encode [--docs 256] [--batch-size 32] [--batch-sizes 1,8,32,64]
                                [--queries 200] [--repeats 3] [--out eval/results]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from eval.bench_index import machine_info, percentile
from eval.cpu_load import competing_load
from lsr.corpus import iter_corpus, load_queries
from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.encoders.device import ForwardPool, cpu_has_native_bf16
from lsr.encoders.projection import pool_screened
from lsr.encoders.sides import load_transformer_sides
from lsr.encoders.splade_side import SpladeSide
from lsr.sparse import read_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models" / "splade-tiny"
SCIFACT = SHARED / "data" / "beir" / "scifact"
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny" / "docs.jsonl.gz"
MAX_LENGTH = 256
QUERY_MAX_LENGTH = 64
TOLERANCE = 1e-4


def load_texts(n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` SciFact documents as lsr indexes them (title + " " + text)."""
    ids, texts = zip(*itertools.islice(iter_corpus(SCIFACT), n), strict=True)
    return list(ids), list(texts)


def first_queries(n: int) -> list[str]:
    return list(load_queries(SCIFACT).values())[:n]


def st_matrix(encoded: torch.Tensor, special: Sequence[int]) -> sp.csr_matrix:
    """sentence-transformers' (sparse) output as CSR, special-token columns zeroed."""
    dense = (encoded.to_dense() if encoded.is_sparse else encoded).float().cpu().numpy()
    dense[:, list(special)] = 0
    return sp.csr_matrix(dense)


def max_diff(a: sp.csr_matrix, b: sp.csr_matrix) -> float:
    d = (a - b).tocsr()
    return float(np.abs(d.data).max()) if d.nnz else 0.0


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # sentence-transformers may return tensors still being computed
    return time.perf_counter() - start


def race(systems: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time every system ``repeats`` times, in turns (so load from elsewhere hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, run in systems.items():
            times[name].append(timed(run))
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def row(name: str, seconds: list[float], n_docs: int, **extra: Any) -> dict[str, Any]:
    best, median = min(seconds), float(np.median(seconds))
    return {
        "system": name,
        "docs": n_docs,
        "best_s": best,
        "median_s": median,
        "docs_per_s": n_docs / best,
        "docs_per_s_median": n_docs / median,
        **extra,
    }


def stage_breakdown(side: SpladeSide, texts: list[str]) -> dict[str, float]:
    """Seconds per stage of the default path on one worker (one intra-op thread), window by
    window: windows (tokenize), backbone + MLM transform, bf16 screen + exact recompute, and the
    rest of a one-worker encode (pooling into CSR, hand-offs)."""
    pool = ForwardPool(1)
    alone = SpladeSide(side.backbone, side.config)
    alone.pool = pool
    try:
        total = timed(lambda: alone.encode(texts))
        start = time.perf_counter()
        windows = alone.windows(texts)
        tokenize = time.perf_counter() - start
        head = side.backbone.head()
        w_bf16, norms = head.screen_weights()
        keep = torch.from_numpy(side.keep_cols)

        def forward_and_projection() -> tuple[float, float]:
            backbone = projection = 0.0
            with torch.inference_mode():
                for w in range(len(windows)):
                    ids, attention, mask = alone._tensors(windows, [w])
                    t0 = time.perf_counter()
                    hidden = head.hidden(input_ids=ids, attention_mask=attention)
                    t1 = time.perf_counter()
                    pool_screened(hidden, mask, head.weight, head.bias, w_bf16, norms, "max", keep)
                    backbone += t1 - t0
                    projection += time.perf_counter() - t1
            return backbone, projection

        backbone, projection = pool.run(forward_and_projection)
    finally:
        pool.shutdown()
    return {
        "total_s": total,
        "tokenize_s": tokenize,
        "backbone_s": backbone,
        "projection_s": projection,
        "other_s": max(0.0, total - tokenize - backbone - projection),
    }


def padded(side: SpladeSide, **update: Any) -> SpladeSide:
    """The same side with ``batching="padded"`` (and ``update``)."""
    config = side.config.model_copy(update={"batching": "padded", **update})
    return SpladeSide(side.backbone, config, echo=side.echo)


def bench_device(
    device: str, texts: list[str], ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    from sentence_transformers import SparseEncoder

    bs = args.batch_size
    dtype = "float32"
    config = EncoderConfig(
        model=str(MODEL),
        query_mode="inference-free",
        document=SideConfig(max_length=MAX_LENGTH),
        device=device,
        dtype=dtype,
    )
    _, ours = load_transformer_sides(config)
    assert isinstance(ours, SpladeSide)
    backbone = ours.backbone
    variants = {
        name: SpladeSide(backbone, ours.config, projection=name)
        for name in ("reference", "tiled", "screened")
        if device == "cpu" or name != "screened"
    }
    default_name = "screened" if "screened" in variants else "tiled"
    default = variants[default_name]
    variants[f"{default_name}, padded"] = padded(default)
    st = SparseEncoder(str(MODEL), device=device)
    st.max_seq_length = MAX_LENGTH

    def run_st(batch: int = bs) -> torch.Tensor:
        return st.encode(texts, batch_size=batch, show_progress_bar=False)

    # correctness first: every variant and ST agree (and with the stored reference vectors)
    warm = texts[: 2 * bs]
    for side in variants.values():
        side.encode(warm, batch_size=bs)
    st.encode(warm, batch_size=bs, show_progress_bar=False)
    st_out = st_matrix(run_st(), backbone.special_ids)
    checks: dict[str, Any] = {}
    for name, side in variants.items():
        out = side.encode(texts, ids, batch_size=bs).matrix
        key = name.replace(", ", "_")
        checks[f"{key}_vs_st_max_abs_diff"] = max_diff(out, st_out)
        assert checks[f"{key}_vs_st_max_abs_diff"] <= TOLERANCE, (name, checks)
    truncated_before = default.stats.truncated
    out = default.encode(texts, ids, batch_size=bs)
    truncated = default.stats.truncated - truncated_before
    ref = read_jsonl(VECTORS, backbone.vocab)
    pos = {doc_id: i for i, doc_id in enumerate(ref.ids)}
    stored = ref.matrix[[pos[i] for i in ids]]
    checks["default_vs_stored_vectors_max_abs_diff"] = max_diff(out.matrix, stored)
    checks["stored_vectors_rounding"] = 5e-5
    checks["st_special_columns_nonzero_before_zeroing"] = int(
        (run_st().to_dense()[:, backbone.special_ids] > 0).sum()
    )
    checks["nnz_per_doc"] = out.matrix.nnz / len(texts)
    checks["truncated_docs"] = truncated

    systems: dict[str, Callable[[], Any]] = {"sentence-transformers": run_st}
    for name, side in variants.items():
        systems[f"lsr {name}"] = lambda side=side: side.encode(texts, batch_size=bs)
    times = race(systems, args.repeats)
    rows = [row(name, t, len(texts), batch_size=bs) for name, t in times.items()]
    st_rate = rows[0]["docs_per_s"]
    for r in rows:
        r["speedup_vs_st"] = r["docs_per_s"] / st_rate

    # batch size changes nothing in the invariant batching (each window alone) but the chunking
    by_batch = []
    for batch in args.batch_sizes:
        t = race(
            {
                "invariant": lambda batch=batch: default.encode(texts, batch_size=batch),
                "padded": lambda batch=batch: variants[f"{default_name}, padded"].encode(
                    texts, batch_size=batch
                ),
            },
            args.repeats,
        )
        for batching, seconds in t.items():
            by_batch.append(
                row(f"lsr {default_name}", seconds, len(texts), batch_size=batch, batching=batching)
            )
    report: dict[str, Any] = {
        "device": device,
        "checks": checks,
        "systems": rows,
        "batch_sizes": by_batch,
    }
    if device == "cpu":
        one_worker = SpladeSide(backbone, default.config)
        one_worker.pool = ForwardPool(1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t = race(
                {
                    "lsr": lambda: one_worker.encode(texts, batch_size=bs),
                    "lsr padded": lambda: variants[f"{default_name}, padded"].encode(
                        texts, batch_size=bs
                    ),
                    "st": run_st,
                },
                args.repeats,
            )
        finally:
            torch.set_num_threads(threads)
            one_worker.pool.shutdown()
        report["one_thread"] = [
            row(f"lsr {default_name}", t["lsr"], len(texts), batch_size=bs, threads=1),
            row(f"lsr {default_name}, padded", t["lsr padded"], len(texts), batch_size=bs,
                threads=1),
            row("sentence-transformers", t["st"], len(texts), batch_size=bs, threads=1),
        ]  # fmt: skip
        report["stages"] = min(
            (stage_breakdown(default, texts) for _ in range(args.repeats)),
            key=lambda s: s["total_s"],
        )
    else:  # GPU bulk encoding: bf16, padded batches (the opt-in)
        gpu_config = config.model_copy(update={"dtype": "auto"})
        bf16 = padded(SpladeSide(load_transformer_sides(gpu_config)[1].backbone, ours.config))
        bf16.encode(warm, batch_size=bs)
        t = race({"lsr": lambda: bf16.encode(texts, batch_size=bs)}, args.repeats)
        report["systems"].append(
            row(f"lsr {bf16.projection}, padded ({bf16.backbone.dtype})", t["lsr"], len(texts),
                batch_size=bs, speedup_vs_st=len(texts) / min(t["lsr"]) / st_rate)
        )  # fmt: skip
    return report


def latency_rows(
    systems: dict[str, Callable[[str], Any]], queries: list[str], blocks: int = 4
) -> list[dict[str, Any]]:
    """Milliseconds per query. The systems take turns a block of queries at a time (load from
    elsewhere hits all alike), with a pause between turns: threads that one system leaves
    spinning (OpenMP waits actively for a while after a parallel region) would otherwise slow
    down the next system's first queries."""
    for run in systems.values():
        for query in queries[:20]:
            run(query)
    times: dict[str, list[float]] = {name: [] for name in systems}
    size = -(-len(queries) // blocks)
    for first in range(0, len(queries), size):
        for name, run in systems.items():
            time.sleep(0.05)
            for query in queries[first : first + size]:
                start = time.perf_counter()
                run(query)
                times[name].append(1e3 * (time.perf_counter() - start))
    out = []
    for name, ms in times.items():
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        out.append(
            {"system": name, "queries": len(ms), "p50_ms": p50, "p99_ms": p99,
             "mean_ms": float(np.mean(ms)), "max_ms": max(ms), "p99_over_p50": p99 / p50}
        )  # fmt: skip
    return out


def bench_single_queries(args: argparse.Namespace) -> dict[str, Any]:
    """One query at a time: lsr's encode_one vs sentence-transformers' encode_query."""
    from sentence_transformers import SparseEncoder

    queries = first_queries(args.queries)
    config = EncoderConfig(
        model=str(MODEL), query=SideConfig(max_length=QUERY_MAX_LENGTH), device="cpu"
    )
    ours, _ = load_transformer_sides(config, document=False)
    assert isinstance(ours, SpladeSide)
    st = SparseEncoder(str(MODEL), device="cpu")
    st.max_seq_length = QUERY_MAX_LENGTH
    before = padded(ours)  # the calling thread, torch's threads: how single queries ran before

    def run_st(query: str) -> Any:
        return st.encode_query([query], show_progress_bar=False)

    st_out = st_matrix(
        st.encode_query(queries, batch_size=32, show_progress_bar=False), ours.backbone.special_ids
    )
    checks: dict[str, Any] = {}
    for name, side in (("lsr", ours), ("lsr_padded", before)):
        rows = [side.encode_one(q) for q in queries]
        mine = sp.csr_matrix(
            (np.concatenate([r.weights for r in rows]), np.concatenate([r.terms for r in rows]),
             np.cumsum([0] + [r.terms.size for r in rows])),
            shape=st_out.shape,
        )  # fmt: skip
        checks[f"{name}_vs_st_max_abs_diff"] = max_diff(mine, st_out)
        assert checks[f"{name}_vs_st_max_abs_diff"] <= TOLERANCE, checks
    systems = {
        "lsr encode_one": ours.encode_one,
        "lsr encode_one, padded batching": before.encode_one,
        "sentence-transformers encode_query": run_st,
    }
    report: dict[str, Any] = {"checks": checks, "torch_threads": torch.get_num_threads()}
    report["idle"] = latency_rows(systems, queries)
    with competing_load():
        report["loaded"] = latency_rows(systems, queries)
    projections = {
        f"lsr encode_one, {name} projection": SpladeSide(
            ours.backbone, ours.config, projection=name
        ).encode_one
        for name in ("screened", "tiled", "reference")
    }
    report["projections_idle"] = latency_rows(projections, queries)
    return report


def latency_table(
    rows: list[dict[str, Any]], base_p50: float, base: str = "sentence-transformers"
) -> list[str]:
    lines = [
        f"| system | p50 ms | p99 ms | p99 / p50 | p50 / {base} p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['p99_over_p50']:.1f} | {r['p50_ms'] / base_p50:.2f} |"
        )
    return lines


def single_query_markdown(q: dict[str, Any]) -> list[str]:
    def st_p50(rows: list[dict[str, Any]]) -> float:
        return next(r["p50_ms"] for r in rows if r["system"].startswith("sentence-transformers"))

    n = q["idle"][0]["queries"]
    diffs = ", ".join(f"{k.replace('_max_abs_diff', '')} {v:.2g}" for k, v in q["checks"].items())
    lines = [
        "",
        "## Single queries (CPU)",
        "",
        f"{n} SciFact queries one at a time (max length {QUERY_MAX_LENGTH}), after 20 warm-up "
        "queries; the systems take turns, 4 blocks of queries each, with a 50 ms pause between "
        "turns (threads left spinning by one system would slow the next). `lsr encode_one` is "
        "what `Retriever.search` calls: invariant batching, the forward pass in the calling "
        "thread switched to one intra-op thread; `padded batching` runs it on torch's "
        f"{q['torch_threads']} threads, as lsr did before. Max abs difference per weight vs "
        f"sentence-transformers: {diffs}.",
        "",
        "Idle machine:",
        "",
        *latency_table(q["idle"], st_p50(q["idle"])),
        "",
        "While another process spins on one core (`while True: pass`, started and killed by "
        "the bench):",
        "",
        *latency_table(q["loaded"], st_p50(q["loaded"])),
        "",
        "lsr's projections for one query (idle), the path chosen by this measurement:",
        "",
        *latency_table(q["projections_idle"], q["projections_idle"][0]["p50_ms"], "screened"),
    ]
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Encoding benchmark: SPLADE, lsr vs sentence-transformers",
        "",
        f"Run {report['date']} on {m['cpus']} cores ({m['processor']}), torch {m['torch']}, "
        f"transformers {m['transformers']}, sentence-transformers {m['sentence_transformers']}, "
        f"native bf16 matmul: {m['native_bf16']}, load average at start {m['loadavg']}. "
        f"Model splade-tiny, max pooling.",
        "",
        "## Documents",
        "",
        f"{report['docs']} SciFact documents (title + text), max length {MAX_LENGTH}. Best of "
        f"{report['repeats']} passes after a warm-up, systems timed in turns (median in the "
        "JSON). Outputs agree before timing: every lsr variant vs sentence-transformers' within "
        f"{TOLERANCE:g} per weight (sentence-transformers' special-token columns zeroed first; "
        "they were never positive). lsr rows use the default invariant batching (each window "
        "alone, one-thread workers, one per core) unless marked padded.",
    ]
    for dev in report["devices"]:
        c = dev["checks"]
        lines += [
            "",
            f"### {dev['device'].upper()}",
            "",
            "| system | batch | docs/s | speed-up vs sentence-transformers |",
            "|---|---:|---:|---:|",
        ]
        for r in dev["systems"]:
            lines.append(
                f"| {r['system']} | {r['batch_size']} | {r['docs_per_s']:,.1f} | "
                f"{r['speedup_vs_st']:.2f}x |"
            )
        by_batch: dict[int, dict[str, float]] = {}
        for r in dev["batch_sizes"]:
            by_batch.setdefault(r["batch_size"], {})[r["batching"]] = r["docs_per_s"]
        lines += [
            "",
            "Max abs difference per weight: "
            + ", ".join(f"{k.replace('_max_abs_diff', '')} {v:.2g}" for k, v in c.items()
                        if k.endswith("max_abs_diff"))
            + f" (stored vectors are rounded to 4 decimals); {c['nnz_per_doc']:.0f} terms per "
            f"document, {c['truncated_docs']} of {report['docs']} documents truncated at "
            f"{MAX_LENGTH} tokens (counted, as the stored vectors were made).",
            "",
            "| lsr default projection at batch size | invariant docs/s | padded docs/s | "
            "invariant / padded |",
            "|---:|---:|---:|---:|",
        ]  # fmt: skip
        lines += [
            f"| {b} | {v['invariant']:,.1f} | {v['padded']:,.1f} | "
            f"{v['invariant'] / v['padded']:.2f} |"
            for b, v in by_batch.items()
        ]
        if "one_thread" in dev:
            a, p, b = dev["one_thread"]
            ratio = a["docs_per_s"] / b["docs_per_s"]
            lines += [
                "",
                f"One thread, batch {a['batch_size']}: lsr invariant on one worker "
                f"{a['docs_per_s']:,.1f} docs/s, lsr padded {p['docs_per_s']:,.1f} docs/s, "
                f"sentence-transformers {b['docs_per_s']:,.1f} docs/s "
                f"(`torch.set_num_threads(1)`; lsr invariant {ratio:.2f}x).",
            ]
        if "stages" in dev:
            s = dev["stages"]
            parts = ", ".join(
                f"{k[:-2]} {v:.2f} s ({v / s['total_s']:.0%})"
                for k, v in s.items()
                if k != "total_s"
            )
            lines += [
                "",
                f"Where lsr's time goes on one worker ({s['total_s']:.2f} s in all): {parts}.",
            ]
    if report.get("gpu_skipped"):
        lines += ["", f"GPU: skipped ({report['gpu_skipped']})."]
    if "single_query" in report:
        lines += single_query_markdown(report["single_query"])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64]
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    import sentence_transformers
    import transformers

    ids, texts = load_texts(args.docs)
    machine = machine_info() | {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "docs": len(texts),
        "repeats": args.repeats,
        "devices": [bench_device("cpu", texts, ids, args)],
    }
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
        report["devices"].append(bench_device("cuda", texts, ids, args))
    else:
        report["gpu_skipped"] = "torch.cuda.is_available() is False"
    if args.queries > 0:
        report["single_query"] = bench_single_queries(args)
    text = markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_encode.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / "bench_encode.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
