"""Encoding benchmark: lsr's SPLADE document encoder vs sentence-transformers' SparseEncoder.

Same model (splade-tiny), same texts (the first ``--docs`` SciFact documents, title + " " +
text), same max length (256) and batch size. Both outputs must agree per document (max abs
difference <= 1e-4) before any time is reported. sentence-transformers does not zero the
special-token columns; its output is compared after zeroing them (for splade-tiny those columns
are never positive, so nothing is removed). Each system first encodes a warm-up slice; then the
systems are timed in turns, ``--repeats`` times each, and the best pass is reported (the machine
may be shared: medians are recorded too).

Rows
  sentence-transformers    SparseEncoder(model).encode(texts, batch_size): full [B, L, V] logits
  lsr reference            our batching (length-sorted, dynamic padding) + full logits
  lsr tiled                exact float32 projection by vocabulary blocks, max taken on the fly
  lsr screened (default)   bf16 bound of every term's max logit, exact float32 recompute of the
                           terms that can be positive
plus the default at other batch sizes and one thread, a stage breakdown (tokenize / backbone /
projection), and the same on CUDA when available (fp32 outputs compared, bf16 timed).

    python -m eval.bench_encode [--docs 256] [--batch-size 32] [--batch-sizes 1,8,32,64]
                                [--repeats 3] [--out eval/results]
"""

from __future__ import annotations

import argparse
import gzip
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

from eval.bench_index import machine_info
from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.encoders.device import cpu_has_native_bf16
from lsr.encoders.projection import pool_screened
from lsr.encoders.sides import load_transformer_sides
from lsr.encoders.splade_side import SpladeSide
from lsr.sparse import read_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models" / "splade-tiny"
CORPUS = SHARED / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny" / "docs.jsonl.gz"
MAX_LENGTH = 256
TOLERANCE = 1e-4


def load_texts(n: int) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            ids.append(doc["_id"])
            texts.append(doc["title"] + " " + doc["text"])
            if len(ids) == n:
                break
    return ids, texts


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


def stage_breakdown(side: SpladeSide, texts: list[str], batch_size: int) -> dict[str, float]:
    """Seconds per stage of the screened path: windows (tokenize), backbone + MLM transform,
    bf16 screen + exact recompute, and the rest (pooling into CSR)."""
    total = timed(lambda: side.encode(texts, batch_size=batch_size))
    head = side.backbone.head()
    start = time.perf_counter()
    windows = side.windows(texts)
    tokenize = time.perf_counter() - start
    order = sorted(range(len(windows)), key=lambda w: -len(windows.ids[w]))
    backbone = projection = 0.0
    w_bf16, norms = head.screen_weights()
    keep = torch.from_numpy(side.keep_cols)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            ids, attention, pool = side._tensors(windows, order[s : s + batch_size])
            t0 = time.perf_counter()
            hidden = head.hidden(input_ids=ids, attention_mask=attention)
            t1 = time.perf_counter()
            pool_screened(hidden, pool, head.weight, head.bias, w_bf16, norms, "max", keep)
            t2 = time.perf_counter()
            backbone += t1 - t0
            projection += t2 - t1
    return {
        "total_s": total,
        "tokenize_s": tokenize,
        "backbone_s": backbone,
        "projection_s": projection,
        "other_s": max(0.0, total - tokenize - backbone - projection),
    }


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
    default = variants.get("screened", variants["tiled"])
    for name, side in variants.items():
        out = side.encode(texts, ids, batch_size=bs).matrix
        checks[f"{name}_vs_st_max_abs_diff"] = max_diff(out, st_out)
        assert checks[f"{name}_vs_st_max_abs_diff"] <= TOLERANCE, (name, checks)
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

    by_batch = []
    default_name = "screened" if "screened" in variants else "tiled"
    for batch in args.batch_sizes:
        t = race({"lsr": lambda batch=batch: default.encode(texts, batch_size=batch)}, args.repeats)
        by_batch.append(row(f"lsr {default_name}", t["lsr"], len(texts), batch_size=batch))
    report: dict[str, Any] = {
        "device": device,
        "checks": checks,
        "systems": rows,
        "batch_sizes": by_batch,
    }
    if device == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t = race(
                {
                    "lsr": lambda: default.encode(texts, batch_size=bs),
                    "st": run_st,
                },
                args.repeats,
            )
        finally:
            torch.set_num_threads(threads)
        report["one_thread"] = [
            row(f"lsr {default_name}", t["lsr"], len(texts), batch_size=bs, threads=1),
            row("sentence-transformers", t["st"], len(texts), batch_size=bs, threads=1),
        ]
        report["stages"] = min(
            (stage_breakdown(default, texts, bs) for _ in range(args.repeats)),
            key=lambda s: s["total_s"],
        )
    else:
        bf16 = SpladeSide(
            load_transformer_sides(config.model_copy(update={"dtype": "auto"}))[1].backbone,
            ours.config,
        )
        bf16.encode(warm, batch_size=bs)
        t = race({"lsr": lambda: bf16.encode(texts, batch_size=bs)}, args.repeats)
        report["systems"].append(
            row(f"lsr {bf16.projection} ({bf16.backbone.dtype})", t["lsr"], len(texts),
                batch_size=bs, speedup_vs_st=len(texts) / min(t["lsr"]) / st_rate)
        )  # fmt: skip
    return report


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Encoding benchmark: SPLADE documents, lsr vs sentence-transformers",
        "",
        f"Run {report['date']} on {m['cpus']} cores ({m['processor']}), torch {m['torch']}, "
        f"transformers {m['transformers']}, sentence-transformers {m['sentence_transformers']}, "
        f"native bf16 matmul: {m['native_bf16']}, load average at start {m['loadavg']}. "
        f"Model splade-tiny, {report['docs']} SciFact documents (title + text), max length "
        f"{MAX_LENGTH}, max pooling. Best of {report['repeats']} passes after a warm-up, systems "
        "timed in turns (median in the JSON). Outputs agree before timing: every lsr projection "
        f"vs sentence-transformers' within {TOLERANCE:g} per weight (sentence-transformers' "
        "special-token columns zeroed first; they were never positive).",
    ]
    for dev in report["devices"]:
        c = dev["checks"]
        lines += [
            "",
            f"## {dev['device'].upper()}",
            "",
            "| system | batch | docs/s | speed-up vs sentence-transformers |",
            "|---|---:|---:|---:|",
        ]
        for r in dev["systems"]:
            lines.append(
                f"| {r['system']} | {r['batch_size']} | {r['docs_per_s']:,.1f} | "
                f"{r['speedup_vs_st']:.2f}x |"
            )
        lines += [
            "",
            "Max abs difference per weight: "
            + ", ".join(f"{k.replace('_max_abs_diff', '')} {v:.2g}" for k, v in c.items()
                        if k.endswith("max_abs_diff"))
            + f" (stored vectors are rounded to 4 decimals); {c['nnz_per_doc']:.0f} terms per "
            f"document, {c['truncated_docs']} of {report['docs']} documents truncated at "
            f"{MAX_LENGTH} tokens (counted, as the stored vectors were made).",
            "",
            "| lsr default at batch size | docs/s |",
            "|---:|---:|",
        ]  # fmt: skip
        lines += [f"| {r['batch_size']} | {r['docs_per_s']:,.1f} |" for r in dev["batch_sizes"]]
        if "one_thread" in dev:
            a, b = dev["one_thread"]
            lines += [
                "",
                f"One thread (`torch.set_num_threads(1)`), batch {a['batch_size']}: lsr "
                f"{a['docs_per_s']:,.1f} docs/s, sentence-transformers {b['docs_per_s']:,.1f} "
                f"docs/s ({a['docs_per_s'] / b['docs_per_s']:.2f}x).",
            ]
        if "stages" in dev:
            s = dev["stages"]
            parts = ", ".join(
                f"{k[:-2]} {v:.2f} s ({v / s['total_s']:.0%})"
                for k, v in s.items()
                if k != "total_s"
            )
            lines += ["", f"Where lsr's time goes ({s['total_s']:.2f} s in all): {parts}."]
    if report.get("gpu_skipped"):
        lines += ["", f"GPU: skipped ({report['gpu_skipped']})."]
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
    text = markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_encode.json").write_text(json.dumps(report, indent=2, default=float))
    (args.out / "bench_encode.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
