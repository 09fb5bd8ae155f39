"""``lsr search``: a text query, a query vector, or a file of either; hits or a TREC run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lsr.cli.common import friendly_errors, human_seconds, log
from lsr.errors import InputError
from lsr.types import Hit, check_k, hits_to_run


def _parse_vector(text: str) -> dict[str, float]:
    try:
        vector = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--vector is not valid JSON: {exc.msg}") from None
    if not isinstance(vector, dict):
        raise InputError('--vector must be a JSON object like {"term": 1.5}')
    return vector


def _print_hits(hits: list[Hit]) -> None:
    for rank, hit in enumerate(hits, start=1):
        typer.echo(f"{rank:>4}  {hit.score:10.4f}  {hit.doc_id}")


def _write_run(qids: list[str], results: list[list[Hit]], output: Path | None, tag: str) -> None:
    """TREC run lines to ``output`` (atomically) or stdout."""
    from lsr.runs import write_trec_lines, write_trec_run

    run = hits_to_run(qids, results)
    if output is not None:
        write_trec_run(run, output, tag=tag, score_format=".6f")
    else:
        write_trec_lines(sys.stdout, run, tag=tag, score_format=".6f")


def _startup_line(seconds: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {human_seconds(s)}" for name, s in seconds.items())
    return f"start-up {human_seconds(sum(seconds.values()))} ({parts})"


@friendly_errors
def search(
    index_path: Annotated[Path, typer.Argument(metavar="INDEX", help="index directory")],
    query: Annotated[
        str | None,
        typer.Argument(help="a text query (the index's encoder encodes it)"),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="sparse, dense or hybrid (text queries; dense needs --dense)")
    ] = "sparse",
    fusion: Annotated[str, typer.Option(help="hybrid fusion: rrf, minmax or zscore")] = "rrf",
    alpha: Annotated[
        float, typer.Option(help="hybrid minmax/zscore: weight of the sparse run (0-1)")
    ] = 0.5,
    model: Annotated[
        str | None,
        typer.Option(help="siamese query model, when it moved since the index was built"),
    ] = None,
    vector: Annotated[
        str | None, typer.Option(help='one query as JSON: {"term": weight, ...}')
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option(
            help="queries file: vectors (JSONL(.gz) {id, vector} or .npz) or texts "
            "(JSONL(.gz) {_id, text}, e.g. BEIR queries)"
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="hits per query")] = 10,
    threads: Annotated[
        int | None,
        typer.Option(
            help="a queries file: queries in parallel (default: all cores); one --vector query: "
            "cores sharing it (not maxscore; default 1)"
        ),
    ] = None,
    min_weight: Annotated[float, typer.Option(help="drop query terms weighted below this")] = 0.0,
    max_terms: Annotated[
        int | None, typer.Option(help="keep each query's n heaviest terms")
    ] = None,
    ignore_unknown: Annotated[
        bool, typer.Option(help="skip query terms outside the vocabulary")
    ] = False,
    algorithm: Annotated[
        str,
        typer.Option(
            help="exhaustive (term-at-a-time), maxscore (dynamic pruning), blockmax "
            "(best-first block-max: fastest on real text) or approximate (blockmax at the "
            "measured default: heap factor 0.9 from 8 query terms on, exact below)"
        ),
    ] = "exhaustive",
    heap_factor: Annotated[
        float,
        typer.Option(
            help="blockmax only: stop when a block's bound x this falls below the k-th score; "
            "1 = exact, below 1 = faster and approximate"
        ),
    ] = 1.0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="TREC run file (default: stdout)")
    ] = None,
    run_tag: Annotated[str, typer.Option(help="run tag in the TREC run file")] = "lsr",
    verify: Annotated[bool, typer.Option(help="check index checksums on open")] = False,
) -> None:
    """Search an index with a text query, a query vector, or a file of either (TREC run).

    Timings on stderr keep start-up (opening the index, loading the query encoder, compiling
    the kernels) apart from the query itself.
    """
    from lsr.corpus import is_text_queries

    check_k(k)
    if sum(x is not None for x in (query, vector, queries)) != 1:
        raise InputError("give exactly one of a text QUERY, --vector or --queries")
    if queries is None and output is not None:
        raise InputError("--output is for --queries (a TREC run); one query prints to stdout")
    if query is not None or (queries is not None and is_text_queries(queries)):
        _search_text(
            index_path, query, queries, k=k, mode=mode, fusion=fusion, alpha=alpha, model=model,
            threads=threads, output=output, run_tag=run_tag, verify=verify,
        )  # fmt: skip
        return
    if mode != "sparse":
        raise InputError(f"--mode {mode} needs text queries (vectors are sparse queries)")
    _search_vectors(
        index_path, vector, queries, k=k, threads=threads, algorithm=algorithm,
        options={"min_weight": min_weight, "max_terms": max_terms,
                 "unknown": "ignore" if ignore_unknown else "error", "heap_factor": heap_factor},
        output=output, run_tag=run_tag, verify=verify,
    )  # fmt: skip


def _search_vectors(
    index_path: Path,
    vector: str | None,
    queries: Path | None,
    *,
    k: int,
    threads: int | None,
    algorithm: str,
    options: dict[str, Any],
    output: Path | None,
    run_tag: str,
    verify: bool,
) -> None:
    from lsr.index.sparse_index import SparseIndex
    from lsr.sparse import concat, iter_vector_batches

    started = time.perf_counter()
    index = SparseIndex.open(index_path, verify=verify)
    startup = {"open": time.perf_counter() - started}
    if vector is not None:
        query = _parse_vector(vector)
        started = time.perf_counter()
        index.warm_up(k, algorithm=algorithm)  # compiles (or loads) the kernels: not query time
        startup["kernels"] = time.perf_counter() - started
        started = time.perf_counter()
        one = 1 if threads is None else threads
        hits = index.search(query, k, algorithm=algorithm, threads=one, **options)
        elapsed = time.perf_counter() - started
        _print_hits(hits)
        log(f"{len(hits)} hits in {human_seconds(elapsed)}; {_startup_line(startup)}")
        return
    assert queries is not None
    # the index vocabulary is loaded frozen: unknown terms are reported (or skipped), never added
    batches = iter_vector_batches(queries, index.vocab, unknown=options["unknown"])
    batch = concat(list(batches), index.vocab)
    if len(batch) == 0:
        raise InputError("no queries in file", queries)
    started = time.perf_counter()
    index.warm_up(k, algorithm=algorithm)
    startup["kernels"] = time.perf_counter() - started
    started = time.perf_counter()
    results = index.batch_search(batch, k, threads=threads, algorithm=algorithm, **options)
    elapsed = time.perf_counter() - started
    _write_run(batch.ids, results, output, run_tag)
    log(
        f"searched {len(batch):,} queries (k={k}) in {elapsed:.3f} s: "
        f"{len(batch) / max(elapsed, 1e-9):,.0f} queries/s; {_startup_line(startup)}"
        + (f"; run written to {output}" if output else "")
    )


def _search_text(
    index_path: Path,
    query: str | None,
    queries: Path | None,
    *,
    k: int,
    mode: str,
    fusion: str,
    alpha: float,
    model: str | None,
    threads: int | None,
    output: Path | None,
    run_tag: str,
    verify: bool,
) -> None:
    from lsr.retrieval import MODES, FusionConfig, Retriever, Timings

    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    fusion_config = FusionConfig(method=fusion, alpha=alpha)  # type: ignore[arg-type]
    if query is not None and not query.strip():
        raise InputError("the query is empty")
    texts: dict[str, str] = {}
    if queries is not None:
        from lsr.corpus import load_queries

        texts = load_queries(queries)
        if not texts:
            raise InputError("no queries in file", queries)
    started = time.perf_counter()
    retriever = Retriever.open(index_path, verify=verify, dense=mode != "sparse", model=model)
    startup = {"open": time.perf_counter() - started}
    startup.update(retriever.warm_up(k, mode=mode))  # type: ignore[arg-type]
    timings = Timings()
    options: dict[str, Any] = {"mode": mode, "fusion": fusion_config, "timings": timings}
    if query is not None:
        started = time.perf_counter()
        hits = retriever.search(query, k, **options)
        elapsed = time.perf_counter() - started
        _print_hits(hits)
        log(
            f"{len(hits)} hits ({mode}, {retriever.query_mode} queries) in "
            f"{human_seconds(elapsed)} (encode {human_seconds(timings.encode)}, search "
            f"{human_seconds(timings.search)}); {_startup_line(startup)}"
        )
        return
    qids = list(texts)
    started = time.perf_counter()
    results = retriever.batch_search([texts[q] for q in qids], k, threads=threads, **options)
    elapsed = time.perf_counter() - started
    _write_run(qids, results, output, run_tag)
    log(
        f"searched {len(qids):,} text queries ({mode}, k={k}) in {elapsed:.2f} s: "
        f"{len(qids) / max(elapsed, 1e-9):,.0f} queries/s (encode {timings.encode:.2f} s, "
        f"search {timings.search:.2f} s); {_startup_line(startup)}"
        + (f"; run written to {output}" if output else "")
    )
