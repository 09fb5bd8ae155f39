"""Training-step benchmark: the fast SPLADE head (lsr.train.splade_head) vs sentence-transformers'
stock fill-mask ``Transformer`` + ``SpladePooling`` (issue #8, training speed).

One step = forward + backward of 32 SciFact documents (title + text, truncated / padded to 256
tokens) through splade-tiny in train mode (dropout on, seeded identically for both paths), loss
FLOPS + 1e-3·sum (``sum_v (mean_b w_bv)^2 + 1e-3·sum w``: every document and every active
weight carries gradient). Both paths run the same ``SparseEncoder`` weights; the fast one is
``fast_splade_encoder(stock)`` (one module, backbone + head transform + chunked max pooling with
a sparse backward). Variants: float32 and bf16 autocast (``torch.autocast("cpu", bfloat16)``
around the forward), 1 and 2 intra-op threads.

Each (path, precision, threads) runs in a fresh subprocess so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the RSS after loading the model is
recorded too. Seconds per step: median of ``--steps`` steps after one warm-up step, wall and
process CPU time (CPU time is the steadier number on a shared machine). Correctness: each worker
saves the first step's embeddings and gradients; the parent reports whether the embeddings are
bit-identical and the largest |gradient difference| over all parameters (absolute, and relative
to the largest gradient).

    python -m eval.bench_train [--steps 4] [--out eval/results]
    python -m eval.bench_train --quick      # 8 docs x 64 tokens, 2 steps, writes to eval/work/
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.bench_live import run_header

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models" / "splade-tiny"
SCIFACT = SHARED / "data" / "beir" / "scifact"
WORK = REPO / "eval" / "work"
TARGET = 3.0  # steps/s of the fast head over the stock path, float32, CPU
PATHS = ("stock", "fast")
PRECISIONS = ("fp32", "bf16")
THREADS = (1, 2)


# -- worker (one fresh process per variant) -------------------------------------------------------
def load_texts(n: int) -> list[str]:
    from lsr.corpus import iter_corpus

    return [text for _, text in itertools.islice(iter_corpus(SCIFACT), n)]


def worker(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from sentence_transformers import SparseEncoder

    from lsr.train.splade_head import fast_splade_encoder

    torch.set_num_threads(args.threads)
    stock = SparseEncoder(str(MODEL), device="cpu")
    stock[0].max_seq_length = args.length
    model = stock if args.path == "stock" else fast_splade_encoder(stock)
    model.train()
    texts = load_texts(args.docs)
    features = model.preprocess(texts)
    length = features["input_ids"].shape[1]
    if length < args.length:  # pad every batch to the full length: the same shape for all runs
        pad = args.length - length
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in features:
                features[key] = torch.nn.functional.pad(features[key], (0, pad))
    params = dict(model.named_parameters())
    autocast = args.precision == "bf16"
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step() -> Any:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks in every step and both paths
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            emb = model(dict(features))["sentence_embedding"]
            loss = (emb.float().mean(0) ** 2).sum() + 1e-3 * emb.float().sum()
        loss.backward()
        return emb.detach()

    emb = step()  # warm-up, and the step whose outputs are compared
    torch.save(
        {
            "embeddings": emb.float(),
            "grads": {n: p.grad.float().clone() for n, p in params.items() if p.grad is not None},
        },
        args.dump,
    )
    wall, cpu = [], []
    for _ in range(args.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {
        "path": args.path,
        "precision": args.precision,
        "threads": args.threads,
        "docs": len(texts),
        "length": int(features["input_ids"].shape[1]),
        "real_tokens": int(features["attention_mask"].sum()),
        "active_weights_per_doc": float((emb > 0).sum(1).float().mean()),
        "steps": args.steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "median_wall_s": statistics.median(wall),
        "median_cpu_s": statistics.median(cpu),
        "rss_after_load_mb": rss_loaded / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- parent ---------------------------------------------------------------------------------------
def run_variant(path: str, precision: str, threads: int, sizes: dict, dump: Path) -> dict:
    cmd = [
        sys.executable, "-m", "eval.bench_train", "--worker", path, "--precision", precision,
        "--threads", str(threads), "--docs", str(sizes["docs"]), "--length",
        str(sizes["length"]), "--steps", str(sizes["steps"]), "--dump", str(dump),
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {path}/{precision}/{threads} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(stock_dump: Path, fast_dump: Path) -> dict[str, Any]:
    import torch

    a, b = torch.load(stock_dump), torch.load(fast_dump)
    emb_diff = float((a["embeddings"] - b["embeddings"]).abs().max())
    assert a["grads"].keys() == b["grads"].keys()
    top = max(float(g.abs().max()) for g in a["grads"].values())
    worst_name, worst = "", 0.0
    for name, g in a["grads"].items():
        d = float((g - b["grads"][name]).abs().max())
        if d > worst:
            worst_name, worst = name, d
    return {
        "embeddings_identical": bool(torch.equal(a["embeddings"], b["embeddings"])),
        "max_abs_embedding_diff": emb_diff,
        "max_abs_grad_diff": worst,
        "max_abs_grad": top,
        "max_grad_diff_relative": worst / top if top else 0.0,
        "worst_parameter": worst_name,
        "parameters_compared": len(a["grads"]),
    }


def native_bf16() -> bool:
    from lsr.encoders.device import cpu_has_native_bf16

    return cpu_has_native_bf16()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=PATHS)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(argparse.Namespace(**{**vars(args), "path": args.worker}))))
        return
    if args.quick:
        args.docs, args.length, args.steps = 8, 64, 2
    out_dir = args.out or (WORK if args.quick else REPO / "eval" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {"docs": args.docs, "length": args.length, "steps": args.steps}
    report: dict[str, Any] = {
        "header": run_header(args.quick),
        "sizes": sizes,
        "native_bf16": native_bf16(),
        "target_speedup_fp32": TARGET,
        "runs": [],
        "comparisons": [],
    }
    with tempfile.TemporaryDirectory(dir=WORK if WORK.exists() else None) as tmp:
        for precision, threads in itertools.product(PRECISIONS, THREADS):
            dumps = {path: Path(tmp) / f"{path}-{precision}-{threads}.pt" for path in PATHS}
            for path in PATHS:
                run = run_variant(path, precision, threads, sizes, dumps[path])
                report["runs"].append(run)
                print(
                    f"{path:5s} {precision} t={threads}: {run['median_wall_s']:.2f} s/step wall, "
                    f"{run['median_cpu_s']:.2f} s cpu, peak {run['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            cmp = compare(dumps["stock"], dumps["fast"])
            if precision != "fp32":  # both bf16 paths against the float32 stock gradients
                fp32 = Path(tmp) / f"stock-fp32-{threads}.pt"
                for path in PATHS:
                    rel = compare(fp32, dumps[path])["max_grad_diff_relative"]
                    cmp[f"{path}_vs_fp32_stock_grad_relative"] = rel
            report["comparisons"].append({"precision": precision, "threads": threads, **cmp})
    report["summary"] = summarise(report)
    (out_dir / "bench_train.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "bench_train.md").write_text(markdown(report))
    print(markdown(report))


def find(report: dict, path: str, precision: str, threads: int) -> dict:
    return next(
        r
        for r in report["runs"]
        if (r["path"], r["precision"], r["threads"]) == (path, precision, threads)
    )


def summarise(report: dict) -> list[dict[str, Any]]:
    rows = []
    base = {t: find(report, "stock", "fp32", t) for t in THREADS}
    for precision, threads, path in itertools.product(PRECISIONS, THREADS, PATHS):
        r = find(report, path, precision, threads)
        ref = base[threads]
        rows.append(
            {
                "path": path,
                "precision": precision,
                "threads": threads,
                "s_per_step": r["median_wall_s"],
                "cpu_s_per_step": r["median_cpu_s"],
                "steps_per_s": 1 / r["median_wall_s"],
                "speedup_wall": ref["median_wall_s"] / r["median_wall_s"],
                "speedup_cpu": ref["median_cpu_s"] / r["median_cpu_s"],
                "peak_rss_mb": r["peak_rss_mb"],
                "peak_over_load_mb": r["peak_rss_mb"] - r["rss_after_load_mb"],
            }
        )
    return rows


def markdown(report: dict) -> str:
    h = report["header"]
    s = report["sizes"]
    m = h["machine"]
    v = h["versions"]
    lines = [
        "# Training-step benchmark: fast SPLADE head vs sentence-transformers' SpladePooling",
        "",
        f"Run {h['date']} on {m['cpus']} cores ({m['processor']}), torch {v.get('torch')}, "
        f"lsr {v['lsr']} (commit {v.get('git_commit')}), native bf16 matmul: "
        f"{report['native_bf16']}, load average at start {h['load_average_before']}"
        + (" (quick run)" if h["quick"] else "")
        + ".",
        "",
        f"One step: forward + backward of {s['docs']} SciFact documents × {s['length']} tokens "
        "through splade-tiny in train mode, loss FLOPS + 1e-3·sum of the embeddings. Median of "
        f"{s['steps']} steps after a warm-up step, each variant in a fresh process (peak RSS = "
        "ru_maxrss of that process; 'over load' = peak minus RSS after loading the model). "
        "Speed-ups are against the stock path in float32 at the same thread count; wall and "
        f"process CPU time. Target: ≥ {report['target_speedup_fp32']:.0f}× in float32.",
        "",
        "| path | precision | threads | s/step | steps/s | speed-up (wall) | speed-up (CPU) "
        "| peak RSS MB | over load MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["summary"]:
        lines.append(
            f"| {r['path']} | {r['precision']} | {r['threads']} | {r['s_per_step']:.2f} | "
            f"{r['steps_per_s']:.2f} | {r['speedup_wall']:.2f}× | {r['speedup_cpu']:.2f}× | "
            f"{r['peak_rss_mb']:.0f} | {r['peak_over_load_mb']:.0f} |"
        )
    lines += [
        "",
        "Fast over stock at the same precision and threads (wall): "
        + ", ".join(
            f"{p} {t} thread{'s' if t > 1 else ''} "
            f"{find(report, 'stock', p, t)['median_wall_s'] / find(report, 'fast', p, t)['median_wall_s']:.2f}×"  # noqa: E501
            for p, t in itertools.product(PRECISIONS, THREADS)
        )
        + ".",
        "",
        "## Same outputs, same gradients",
        "",
        "First step of each variant, stock vs fast (all parameters, the tied word-embedding / "
        "decoder matrix included):",
        "",
        "| precision | threads | embeddings identical | max abs emb diff | max abs grad diff "
        "| relative to max grad | worst parameter |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for c in report["comparisons"]:
        lines.append(
            f"| {c['precision']} | {c['threads']} | {c['embeddings_identical']} | "
            f"{c['max_abs_embedding_diff']:.2e} | {c['max_abs_grad_diff']:.2e} | "
            f"{c['max_grad_diff_relative']:.2e} | {c['worst_parameter']} |"
        )
    bf16 = [c for c in report["comparisons"] if "fast_vs_fp32_stock_grad_relative" in c]
    if bf16:
        lines += [
            "",
            "bf16 gradients against the float32 stock gradients (max abs diff / max abs grad): "
            + ", ".join(
                f"{c['threads']} thread{'s' if c['threads'] > 1 else ''}: stock "
                f"{c['stock_vs_fp32_stock_grad_relative']:.2e}, fast "
                f"{c['fast_vs_fp32_stock_grad_relative']:.2e}"
                for c in bf16
            )
            + ". The fast head's backward runs in float32 (bf16 only in the forward's logits "
            "matmul); the stock path's logits backward runs in bf16.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
