"""``lsr teachers --beir DIR --out DIR --teacher NAME=KIND:MODEL ...``: precompute teacher scores
for distillation (``loss.teachers`` in a training config), once for every run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lsr.cli.common import friendly_errors, log


@friendly_errors
def teachers(
    beir: Annotated[Path, typer.Option(help="BEIR directory (corpus, queries, qrels/)")],
    out: Annotated[Path, typer.Option(help="output directory (must be new or empty)")],
    teacher: Annotated[
        list[str],
        typer.Option(
            help="NAME=KIND:MODEL, KIND dense (sentence-transformers; all-MiniLM-L6-v2 is "
            "bundled) or sparse (an lsr model directory); repeatable",
        ),
    ],
    split: Annotated[str, typer.Option(help="qrels split whose queries are scored")] = "train",
    depth: Annotated[
        int, typer.Option(min=2, help="BM25 candidates per query (after its positives)")
    ] = 30,
    weight: Annotated[
        list[str] | None,
        typer.Option(help="NAME=W ensemble weight (default: equal), repeatable"),
    ] = None,
    scale: Annotated[float, typer.Option(help="label scale (> 0)")] = 30.0,
    max_length: Annotated[
        int | None, typer.Option(min=8, help="tokens per text for every teacher (default: theirs)")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="score only the first N queries")
    ] = None,
) -> None:
    """Score each training query's candidates with every teacher and save the ensemble labels."""
    from lsr.errors import InputError
    from lsr.train.teacher_run import parse_teacher, precompute_teacher_scores

    specs = [parse_teacher(t) for t in teacher]
    weights = None
    if weight:
        weights = {}
        for item in weight:
            name, sep, value = item.partition("=")
            try:
                weights[name] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise InputError(f"--weight {item!r}: expected NAME=NUMBER")
    scores = precompute_teacher_scores(
        beir,
        specs,
        out,
        split=split,
        depth=depth,
        weights=weights,
        scale=scale,
        max_queries=max_queries,
        max_length=max_length,
        progress=log,
    )
    sizes = scores.manifest()["candidates"]
    log(
        f"teacher scores: {len(scores)} queries, {sizes['total']} candidates "
        f"({', '.join(scores.teachers)}), scale {scores.scale:g} -> {out}"
    )
