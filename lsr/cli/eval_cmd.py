"""``lsr eval``: evaluation runs (BEIR datasets) with metrics, latency and reports."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lsr.cli.common import friendly_errors, log
from lsr.encoders.config import DEFAULT_DENSE_MODEL
from lsr.errors import InputError

app = typer.Typer(help="Evaluate retrieval on BEIR datasets.", no_args_is_help=True)


def _pair(text: str, flag: str) -> tuple[float, float]:
    try:
        first, second = (float(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes two numbers as 'A,B', got {text!r}") from None
    return first, second


@app.command("beir")
@friendly_errors
def eval_beir(
    data: Annotated[Path, typer.Option(help="BEIR dataset directory (corpus, queries, qrels/)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="directory for runs and reports")],
    model: Annotated[
        str | None, typer.Option(help="sparse encoder: local path or hub id (sparse, hybrid)")
    ] = None,
    mode: Annotated[str, typer.Option(help="sparse, dense or hybrid")] = "sparse",
    query_mode: Annotated[
        list[str] | None,
        typer.Option(help="siamese and/or inference-free (repeat the flag for both)"),
    ] = None,
    dense_model: Annotated[
        str, typer.Option(help="sentence-transformers model for dense and hybrid")
    ] = DEFAULT_DENSE_MODEL,
    split: Annotated[str, typer.Option(help="qrels split to evaluate")] = "test",
    tune_split: Annotated[
        str, typer.Option(help="qrels split that tunes the convex fusion weight, or 'none'")
    ] = "train",
    alpha: Annotated[
        float | None,
        typer.Option(help="fixed convex fusion weight of the sparse run (0-1): no tuning"),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="bm25s and/or pyserini (repeat); default both, 'none' for neither"),
    ] = None,
    fusion: Annotated[
        list[str] | None, typer.Option(help="minmax, zscore, rrf (repeat); default all")
    ] = None,
    rrf_k: Annotated[int, typer.Option(help="RRF constant k")] = 60,
    rrf_weights: Annotated[
        str, typer.Option(help="RRF weights of the sparse and dense runs, 'SPARSE,DENSE'")
    ] = "1,1",
    query_max_length: Annotated[int, typer.Option(help="query tokens per pass")] = 64,
    doc_max_length: Annotated[int, typer.Option(help="document tokens per pass")] = 256,
    doc_stride: Annotated[
        int | None, typer.Option(help="chunk long documents with this overlap")
    ] = None,
    quantization: Annotated[str, typer.Option(help="sparse index weights")] = "uint8",
    depth: Annotated[int, typer.Option(help="hits per query in the runs")] = 1000,
    batch_size: Annotated[int, typer.Option(help="texts per encoder batch")] = 8,
    cache: Annotated[
        Path | None, typer.Option(help="index cache directory (default: OUTPUT/cache)")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(help="evaluate only the first n queries")
    ] = None,
    progress: Annotated[bool | None, typer.Option(help="show progress bars")] = None,
) -> None:
    """Encode, index, search and score a BEIR dataset; write TREC runs, JSON, Markdown, plot."""
    from lsr.beir_eval import BeirEvalConfig, run_beir

    baselines = ["bm25s", "pyserini"] if baseline is None else baseline
    config = BeirEvalConfig(
        data=data,
        output=output,
        cache=cache,
        mode=mode,
        model=model,
        query_modes=query_mode or ["siamese"],
        dense_model=dense_model,
        split=split,
        tune_split=None if tune_split.lower() == "none" else tune_split,
        alpha=alpha,
        baselines=[b for b in baselines if b != "none"],
        fusions=fusion or ["minmax", "zscore", "rrf"],
        rrf_k=rrf_k,
        rrf_weights=_pair(rrf_weights, "--rrf-weights"),
        query_max_length=query_max_length,
        doc_max_length=doc_max_length,
        doc_stride=doc_stride,
        quantization=quantization,
        depth=depth,
        batch_size=batch_size,
        max_queries=max_queries,
    )
    started = time.perf_counter()
    report = run_beir(
        config,
        log=log,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    best = max(report["systems"], key=lambda s: s["metrics"]["ndcg@10"])
    typer.echo(
        f"evaluated {len(report['systems'])} systems on {report['dataset']} {split} "
        f"({report['queries']} queries) in {time.perf_counter() - started:.0f} s; best nDCG@10 "
        f"{best['metrics']['ndcg@10']:.4f} ({best['name']}); report in {output}/results.md"
    )


@app.command("runs")
@friendly_errors
def eval_runs(
    runs: Annotated[list[Path], typer.Argument(help="TREC run files to score")],
    qrels: Annotated[Path, typer.Option(help="qrels file, or a BEIR directory (with --split)")],
    split: Annotated[str, typer.Option(help="qrels split of a BEIR directory")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as JSON")] = False,
) -> None:
    """Score TREC runs against qrels (nDCG@10, R@100, MRR@10 via pytrec_eval)."""
    import json

    from lsr.corpus import load_qrels
    from lsr.extras import require
    from lsr.metrics import DEFAULT_METRICS, evaluate
    from lsr.runs import read_trec_run

    require("scoring runs", "pytrec_eval")
    judgements = load_qrels(qrels, split)
    scores = {}
    for path in runs:
        result = evaluate(judgements, read_trec_run(path))
        scores[str(path)] = {"queries": result.n_queries, **result.mean}
    if as_json:
        typer.echo(json.dumps(scores, indent=2))
        return
    names = {"ndcg_cut_10": "nDCG@10", "recall_100": "R@100", "mrr_10": "MRR@10"}
    width = max(len(p) for p in scores)
    typer.echo(f"{'run':<{width}}  queries  " + "  ".join(names[m] for m in DEFAULT_METRICS))
    for path, row in scores.items():
        values = "  ".join(f"{row[m]:>{len(names[m])}.4f}" for m in DEFAULT_METRICS)
        typer.echo(f"{path:<{width}}  {row['queries']:>7}  {values}")
