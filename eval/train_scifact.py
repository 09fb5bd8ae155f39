"""The training experiment on SciFact (issue 8): what IDF-awareness and distillation buy.

Inference-free students of splade-tiny (``lsr.train.trainer.train``) train on SciFact's train
queries (50 held out as the dev slice) for a fixed budget of steps, and are evaluated on the 300
**test** queries over the whole corpus (5,183 documents) with lsr's encoder, exact sparse dot
products and pytrec_eval: nDCG@10, R@100, FLOPS per query–document pair (Formal et al.) and mean
document / query nnz. Documents are encoded at 256 tokens for every system (the students train at
128). Nothing is tuned on test: every λ and setting is fixed before the run.

Families (all InfoNCE with in-batch negatives and one BM25 hard negative, unless stated):

* ``binary`` — binary query weights (token presence × 1) + plain FLOPS on documents;
* ``reading a`` — IDF query weights (learned, clamped ≥ 0) + plain FLOPS: the authors' code;
* ``reading b`` — the same IDF queries + FLOPS with the IDF inside the sum, Σ_j (mean_i w_ij ·
  idf_j)². Its λ grid is reading (a)'s divided by R = idf-FLOPS / FLOPS of the untrained model's
  document vectors over the corpus (measured in the run, no labels used), so that both start
  with the same penalty and the comparison is about *where* the penalty falls;
* ``KL`` — reading (a) at λ = ``--kl-lambda`` with KL distillation (T = 1) from the teacher ensemble
  (MiniLM dense + splade-tiny siamese, min-max per query over positives + BM25 top 30, equal
  weights, scale 30; precomputed by ``lsr teachers``) and from each teacher alone.

Baselines in the same table: the untrained splade-tiny (inference-free with the corpus IDF, and
siamese) and BM25 (bm25s) measured in the run; Pyserini BM25, MiniLM and the best hybrid taken
from ``eval/results/beir_scifact.json`` (same qrels, deterministic metrics).

    python -m eval.train_scifact [--steps 100] [--resume] [--only NAME ...]

Results go to eval/results/train_scifact.{json,md,png} after every run (an interrupted sweep
keeps what it did; ``--resume`` skips the runs already there).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_live import BEIR, run_header
from lsr.corpus import load_corpus, load_qrels, load_queries
from lsr.metrics import evaluate, flops
from lsr.train.trainer import exact_run

MODEL = BEIR.parents[2] / "models" / "splade-tiny"
WORK = Path("eval/work/train_scifact")
TEACHERS = Path("eval/work/teachers/scifact-train")
CONFIG = Path("eval/train_configs/scifact-splade-tiny-inference-free.yaml")
EVAL_LENGTH = 256
LAMBDAS = (0.01, 0.03, 0.1, 0.3)
KL_LAMBDA = 0.1


def score(encoder: Any, corpus: dict[str, str], queries: dict[str, str], qrels: Any) -> dict:
    """Test metrics of ``encoder`` over the whole corpus (exact sparse dot products)."""
    ids = sorted(corpus)
    t0 = time.perf_counter()
    docs = encoder.encode_document([corpus[i] for i in ids], ids)
    encode_seconds = time.perf_counter() - t0
    qids = sorted(q for q in queries if q in qrels)
    q = encoder.encode_query([queries[i] for i in qids], qids)
    run = exact_run(q.matrix, docs.matrix, qids, ids)
    ev = evaluate({k: qrels[k] for k in qids}, run, ("ndcg_cut_10", "recall_100"))
    return {
        "ndcg@10": round(ev.mean["ndcg_cut_10"], 4),
        "recall@100": round(ev.mean["recall_100"], 4),
        "flops": round(float(flops(q, docs)), 3),
        "doc_nnz": round(float(np.diff(docs.matrix.indptr).mean()), 1),
        "query_nnz": round(float(np.diff(q.matrix.indptr).mean()), 1),
        "encode_seconds": round(encode_seconds, 1),
        "_docs": docs,
    }


def idf_flops_ratio(docs: Any, idf: np.ndarray) -> float:
    """R = Σ_j (mean_i w_ij · idf_j)² / Σ_j (mean_i w_ij)² over document vectors."""
    mean = np.asarray(docs.matrix.mean(axis=0)).ravel()
    return float(((mean * idf) ** 2).sum() / (mean**2).sum())


def bm25_row(corpus: dict[str, str], queries: dict[str, str], qrels: Any) -> dict[str, Any]:
    from lsr.baselines.bm25 import Bm25sBaseline

    qids = sorted(q for q in queries if q in qrels)
    ranked = Bm25sBaseline().index(corpus).search({q: queries[q] for q in qids}, k=100)
    run = {q: dict(hits) for q, hits in ranked.items()}
    ev = evaluate({k: qrels[k] for k in qids}, run, ("ndcg_cut_10", "recall_100"))
    return {
        "system": "BM25 (bm25s)",
        "family": "baseline",
        "ndcg@10": round(ev.mean["ndcg_cut_10"], 4),
        "recall@100": round(ev.mean["recall_100"], 4),
    }


def committed_baselines() -> list[dict[str, Any]]:
    """Pyserini BM25, MiniLM and the best hybrid from the committed BEIR evaluation."""
    path = Path("eval/results/beir_scifact.json")
    if not path.is_file():
        return []
    systems = {s["name"]: s for s in json.loads(path.read_text())["systems"]}
    hybrids = [s for n, s in systems.items() if n.startswith("hybrid")]
    picks = [systems.get("BM25 (pyserini)"), systems.get("dense (all-MiniLM-L6-v2)")]
    if hybrids:
        picks.append(max(hybrids, key=lambda s: s["metrics"]["ndcg@10"]))
    return [
        {
            "system": s["name"] + " [beir_scifact.json]",
            "family": "baseline",
            "ndcg@10": round(s["metrics"]["ndcg@10"], 4),
            "recall@100": round(s["metrics"]["recall@100"], 4),
        }
        for s in picks
        if s is not None
    ]


def plan(ratio: float, kl_lambda: float) -> list[dict[str, Any]]:
    """Every training run: name, family, λ_d and config overrides."""
    runs = []
    for lam in LAMBDAS:
        runs.append(
            {
                "name": f"binary-{lam:g}",
                "family": "binary",
                "lambda_d": lam,
                "set": [
                    "sparsity.reading_a=false",
                    "student.query_mode=inference-free",
                    "student.query_weights=binary",
                    "student.learn_idf=false",
                    "student.idf_lr=null",
                    "sparsity.regularizer=flops",
                ],
            }
        )
        runs.append({"name": f"a-{lam:g}", "family": "reading a", "lambda_d": lam, "set": []})
        lam_b = float(f"{lam / ratio:.2g}")
        runs.append(
            {
                "name": f"b-{lam_b:g}",
                "family": "reading b",
                "lambda_d": lam_b,
                "set": [
                    "sparsity.reading_a=false",
                    "student.query_mode=inference-free",
                    "sparsity.regularizer=idf_flops",
                ],
            }
        )
    for teachers, weights in (("ensemble", None), ("minilm", "splade"), ("splade", "minilm")):
        runs.append(
            {
                "name": f"kl-{teachers}",
                "family": f"KL, {teachers}",
                "lambda_d": kl_lambda,
                "teachers": teachers,
                "zero_weight": weights,
                "set": ["loss.name=kl", "loss.temperature=1.0"],
            }
        )
    return runs


def teacher_dir(run: dict[str, Any]) -> Path:
    """The precomputed scores, reweighted for a single teacher when the run asks for one."""
    from lsr.train.teachers import TeacherScores

    if run.get("zero_weight") is None:
        return TEACHERS
    target = WORK / f"teachers-{run['teachers']}"
    if not (target / "manifest.json").is_file():
        scores = TeacherScores.load(TEACHERS)
        weights = {n: (0.0 if n == run["zero_weight"] else 1.0) for n in scores.teachers}
        scores.reweighted(weights).save(target)
    return target


def train_one(run: dict[str, Any], steps: int, seed: int) -> tuple[Any, dict[str, Any]]:
    from lsr.encoders import load_encoder
    from lsr.train.config import load_config
    from lsr.train.trainer import train

    overrides = [
        f"student.model={MODEL}",
        f"data.beir={BEIR}",
        f"sparsity.lambda_d={run['lambda_d']}",
        f"train.max_steps={steps}",
        f"train.eval_steps={steps}",
        "train.final_model=last",
        f"train.seed={seed}",
        f"train.output_dir={WORK / run['name']}",
        *run["set"],
    ]
    if "teachers" in run:
        overrides.append(f"loss.teachers={teacher_dir(run)}")
    result = train(load_config(CONFIG, overrides))
    info = {
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "precision": result.precision,
        "dev_ndcg@10": round(result.final_metrics.get("dev_ndcg_cut_10", float("nan")), 4),
    }
    return load_encoder(result.model_dir, document={"max_length": EVAL_LENGTH}), info


def markdown(result: dict[str, Any]) -> str:
    h = result["header"]
    lines = [
        "# SciFact training experiment: inference-free splade-tiny students",
        "",
        f"{h['date']}, {h['machine']['cpus']} CPUs. {result['steps']} steps of batch 16 "
        "(document length 128, ~1.7 epochs over the 759 training queries' positives), InfoNCE "
        "with in-batch and one BM25 hard negative unless stated; the model after the last step "
        "(no selection). Evaluated on the 300 test queries over all 5,183 documents (documents at "
        f"{EVAL_LENGTH} tokens for every system). FLOPS: expected shared non-zeros per "
        "query–document pair. Reading (b)'s λ = reading (a)'s / R, "
        f"R = {result.get('ratio', float('nan')):.1f} (idf-FLOPS / FLOPS of the untrained "
        "model's documents).",
        "",
        "| system | family | λ_d | nDCG@10 | R@100 | FLOPS | doc nnz | query nnz | dev nDCG@10 "
        "| train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(row: dict[str, Any], key: str, fmt: str = "{}") -> str:
        value = row.get(key)
        return "" if value is None else fmt.format(value)

    for row in result["runs"]:
        lines.append(
            f"| {row['system']} | {row.get('family', '')} | {cell(row, 'lambda_d', '{:g}')} | "
            f"{row['ndcg@10']:.4f} | {cell(row, 'recall@100', '{:.4f}')} | "
            f"{cell(row, 'flops', '{:.3f}')} | {cell(row, 'doc_nnz')} | {cell(row, 'query_nnz')} "
            f"| {cell(row, 'dev_ndcg@10', '{:.4f}')} | {cell(row, 'train_seconds')} |"
        )
    matched = at_matched_flops(result)
    if matched:
        lines += [
            "",
            "nDCG@10 at matched FLOPS (linear interpolation along each family's λ curve, seed 42):",
            "",
            "| FLOPS | " + " | ".join(matched) + " |",
            "|---:|" + "---:|" * len(matched),
        ]
        for level in MATCHED_FLOPS:
            cells = [matched[f].get(level) for f in matched]
            lines.append(
                f"| {level} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |"
            )
    return "\n".join(lines) + "\n"


MATCHED_FLOPS = (0.6, 0.8, 1.0)


def at_matched_flops(result: dict[str, Any]) -> dict[str, dict[float, float]]:
    """Per λ-swept family, nDCG@10 interpolated at the MATCHED_FLOPS levels it spans."""
    out: dict[str, dict[float, float]] = {}
    for fam in ("binary", "reading a", "reading b"):
        rows = sorted(
            (
                (r["flops"], r["ndcg@10"])
                for r in result["runs"]
                if r.get("family") == fam and r.get("seed", 42) == 42
            ),
        )
        if len(rows) < 2:
            continue
        xs, ys = zip(*rows, strict=True)
        out[fam] = {
            level: round(float(np.interp(level, xs, ys)), 4)
            for level in MATCHED_FLOPS
            if xs[0] <= level <= xs[-1]
        }
    return out


def plot(result: dict[str, Any], target: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    families = ["binary", "reading a", "reading b"]
    for ax, key, label in (
        (axes[0], "flops", "FLOPS per query–document pair"),
        (axes[1], "doc_nnz", "mean document nnz"),
    ):
        for fam in families:
            rows = sorted(
                (
                    r
                    for r in result["runs"]
                    if r.get("family") == fam and key in r and r.get("seed", 42) == 42
                ),
                key=lambda r: r[key],
            )
            if rows:
                line = ax.plot(
                    [r[key] for r in rows], [r["ndcg@10"] for r in rows], "o-", label=fam
                )
                reps = [
                    r
                    for r in result["runs"]
                    if r.get("family") == fam and key in r and r.get("seed", 42) != 42
                ]
                ax.plot(
                    [r[key] for r in reps],
                    [r["ndcg@10"] for r in reps],
                    "x",
                    color=line[0].get_color(),
                )
        for r in result["runs"]:
            if r.get("family", "").startswith("KL") and key in r:
                ax.plot(r[key], r["ndcg@10"], "^", label=r["family"])
            if r.get("family") == "anchor" and key in r:
                marker = "k*" if "binary" not in r["system"] else "kP"
                ax.plot(r[key], r["ndcg@10"], marker, markersize=9, label=r["system"])
        for r in result["runs"]:
            if "Pyserini" in r["system"] or "pyserini" in r["system"]:
                ax.axhline(r["ndcg@10"], color="gray", ls="--", lw=1, label="BM25 (Pyserini)")
        ax.set_xlabel(label)
        ax.set_ylabel("test nDCG@10")
    axes[0].axvline(0.67, color="gray", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--kl-lambda", type=float, default=KL_LAMBDA)
    parser.add_argument("--only", nargs="+", help="run only these names (see plan())")
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="training seed (mining, dev split, order, init); other than 42: a replicate, named "
        "NAME-sSEED",
    )
    parser.add_argument("--resume", action="store_true", help="keep runs already in the JSON")
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--render", action="store_true", help="only redraw md/png from the JSON")
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads((args.out / "train_scifact.json").read_text())
        (args.out / "train_scifact.md").write_text(markdown(report))
        plot(report, args.out / "train_scifact.png")
        return
    from lsr.encoders import compute_idf, load_encoder

    corpus = load_corpus(BEIR)
    queries = load_queries(BEIR)
    qrels = load_qrels(BEIR, "test")
    path = args.out / "train_scifact.json"
    previous = json.loads(path.read_text()) if args.resume and path.is_file() else None
    if previous is not None and previous.get("steps") != args.steps:
        raise SystemExit(f"--resume: the JSON has {previous.get('steps')} steps, not {args.steps}")
    result: dict[str, Any] = previous or {"steps": args.steps, "runs": []}
    result["header"] = run_header(False)

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        (args.out / "train_scifact.md").write_text(markdown(result))
        plot(result, args.out / "train_scifact.png")

    def done(name: str) -> bool:
        return any(r.get("name") == name for r in result["runs"])

    def add(row: dict[str, Any]) -> None:
        row = {k: v for k, v in row.items() if not k.startswith("_")}
        result["runs"] = [r for r in result["runs"] if r.get("name") != row["name"]] + [row]
        print(json.dumps(row), flush=True)
        save()

    if not done("untrained-if") or "ratio" not in result:
        table = compute_idf(str(MODEL), corpus.values(), query_mode="inference-free")
        encoder = load_encoder(str(MODEL), query_mode="inference-free", idf_table=table)
        row = score(encoder, corpus, queries, qrels)
        result["ratio"] = round(idf_flops_ratio(row["_docs"], table.weights), 2)
        add(
            {
                "name": "untrained-if",
                "system": "splade-tiny inference-free, untrained (corpus IDF)",
                "family": "anchor",
                **row,
            }
        )
    if not done("untrained-binary"):
        from lsr.encoders.idf_table import IdfTable

        table = compute_idf(str(MODEL), corpus.values(), query_mode="inference-free")
        ones = IdfTable(table.vocab, (table.weights > 0).astype(np.float32))
        encoder = load_encoder(str(MODEL), query_mode="inference-free", idf_table=ones)
        row = score(encoder, corpus, queries, qrels)
        add(
            {
                "name": "untrained-binary",
                "system": "splade-tiny inference-free, untrained, binary queries",
                "family": "anchor",
                **row,
            }
        )
    if not done("untrained-siamese"):
        row = score(load_encoder(str(MODEL)), corpus, queries, qrels)
        add(
            {
                "name": "untrained-siamese",
                "system": "splade-tiny siamese (teacher)",
                "family": "baseline",
                **row,
            }
        )
    if not done("bm25s"):
        add({"name": "bm25s", **bm25_row(corpus, queries, qrels)})
    for i, row in enumerate(committed_baselines()):
        if not done(f"committed-{i}"):
            add({"name": f"committed-{i}", **row})
    for run in plan(result["ratio"], args.kl_lambda):
        if args.only and run["name"] not in args.only:
            continue
        if args.seed != 42:
            run = {**run, "name": f"{run['name']}-s{args.seed}"}
        if args.resume and done(run["name"]):
            continue
        if "teachers" in run and not (TEACHERS / "manifest.json").is_file():
            print(f"skip {run['name']}: no teacher scores in {TEACHERS} (run `lsr teachers`)")
            continue
        encoder, info = train_one(run, args.steps, args.seed)
        row = score(encoder, corpus, queries, qrels)
        system = "student, " + run["family"]
        add(
            {
                "name": run["name"],
                "system": system + (f" (seed {args.seed})" if args.seed != 42 else ""),
                "family": run["family"],
                "lambda_d": run["lambda_d"],
                "seed": args.seed,
                **info,
                **row,
            }
        )


if __name__ == "__main__":
    main()
