"""The ``lsr`` command line: build, inspect and search indexes."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from lsr.errors import InputError, LsrError
from lsr.index.quantization import QUANTIZATIONS
from lsr.sparse import concat, iter_vector_batches
from lsr.vocab import Vocabulary

# lsr.index.builder and lsr.index.searcher load Numba (~1.5 s): commands import them when they run,
# so `lsr --help` stays fast.

app = typer.Typer(help="lsr: learned sparse retrieval.", no_args_is_help=True, add_completion=False)
index_app = typer.Typer(help="Build and inspect sparse indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")
eval_app = typer.Typer(help="Evaluate retrieval on BEIR datasets.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def friendly_errors(func: F) -> F:
    """Report user errors as one line on stderr and exit 2, never as a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LsrError as exc:
            raise _fail(str(exc)) from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise _fail(problems) from None
        except OSError as exc:  # unwritable output, missing parent directory, disk full, ...
            where = f"{exc.filename}: " if exc.filename else ""
            raise _fail(f"{where}{exc.strerror or exc}") from None
        except KeyboardInterrupt:
            raise _fail("interrupted") from None

    return wrapper  # type: ignore[return-value]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


@index_app.command("build")
@friendly_errors
def index_build(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="vector files: JSONL(.gz) {id, vector} or .npz (or use --corpus)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="index directory to write (required)")
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="text corpus to encode: BEIR directory or JSONL(.gz) {_id, title, text}"),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="sparse encoder for --corpus: local path or hub id")
    ] = None,
    query_mode: Annotated[
        str, typer.Option(help="siamese (model encodes queries) or inference-free (IDF lookup)")
    ] = "siamese",
    idf: Annotated[
        Path | None, typer.Option(help="idf.json for inference-free queries (default: computed)")
    ] = None,
    dense: Annotated[
        str | None,
        typer.Option(help="also build a dense (faiss) index with this sentence-transformers model"),
    ] = None,
    dense_kind: Annotated[str, typer.Option(help="dense index: flat or hnsw")] = "flat",
    query_max_length: Annotated[int, typer.Option(help="query tokens per pass")] = 64,
    doc_max_length: Annotated[int, typer.Option(help="document tokens per pass")] = 256,
    doc_stride: Annotated[
        int | None,
        typer.Option(help="split long documents into chunks overlapping by this many tokens"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="texts per encoder batch")] = 8,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    shard_size: Annotated[
        int, typer.Option(help="documents per resumable shard of encoded vectors")
    ] = 1024,
    work_dir: Annotated[
        Path | None, typer.Option(help="where shards go (default: hidden sibling of --output)")
    ] = None,
    keep_shards: Annotated[
        bool, typer.Option(help="keep the encoded shards after the build")
    ] = False,
    vocab: Annotated[
        Path | None,
        typer.Option(
            help="tokenizer dir, tokenizer.json, vocab.txt or JSON list; default: terms seen"
        ),
    ] = None,
    quantization: Annotated[
        str, typer.Option(help=f"weight storage: {', '.join(QUANTIZATIONS)}")
    ] = "uint8",
    block_size: Annotated[int, typer.Option(help="documents per doc-id block (1-256)")] = 128,
    doc_top_k: Annotated[
        int | None, typer.Option(help="keep each document's k heaviest terms")
    ] = None,
    term_top_n: Annotated[
        int | None, typer.Option(help="keep each term's n heaviest postings")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing index (atomically)")] = False,
    progress: Annotated[
        bool | None, typer.Option(help="show a progress bar (default: when stderr is a terminal)")
    ] = None,
) -> None:
    """Build an index from encoded vectors, or encode a text corpus with --corpus/--model."""
    from lsr.index.builder import BuildConfig, build

    config = BuildConfig(
        quantization=quantization, block_size=block_size, doc_top_k=doc_top_k, term_top_n=term_top_n
    )
    if output is None:
        raise InputError("--output is required: the index directory to write")
    if progress is None:
        progress = sys.stderr.isatty()
    if corpus is not None:
        if inputs:
            raise InputError("give vector files or --corpus, not both")
        if model is None:
            raise InputError("--corpus needs --model (a sparse encoder: local path or hub id)")
        from lsr.encoders.base import EncoderConfig, SideConfig
        from lsr.indexing import index_corpus

        encoder = EncoderConfig(
            model=model,
            query_mode=query_mode,
            query=SideConfig(
                family="idf" if query_mode == "inference-free" else "mlm",
                max_length=query_max_length,
            ),
            document=SideConfig(max_length=doc_max_length, stride=doc_stride),
            idf=str(idf) if idf else None,
            batch_size=batch_size,
            device=device,
        )
        result = index_corpus(
            corpus,
            output,
            encoder,
            build_config=config,
            dense_model=dense,
            dense_kind=dense_kind,
            work_dir=work_dir,
            shard_size=shard_size,
            overwrite=overwrite,
            keep_shards=keep_shards,
            progress=progress,
            log=lambda message: typer.secho(message, err=True),
        )
        typer.echo(result.summary())
        return
    if not inputs:
        raise InputError("give vector files to index, or --corpus and --model to encode text")
    for path in inputs:
        if not path.exists():
            raise InputError("file not found", path)
    vocabulary = Vocabulary.load(vocab) if vocab else Vocabulary()
    started = time.perf_counter()

    def batches():
        for path in inputs:
            yield from iter_vector_batches(path, vocabulary)

    manifest = build(
        batches(),
        output,
        vocab=vocabulary,
        config=config,
        overwrite=overwrite,
        progress=progress,
        extra_manifest={"sources": [str(p) for p in inputs]},
    )
    total = sum(int(e["bytes"]) for e in manifest["arrays"].values()) + sum(
        int(e["bytes"]) for e in manifest["files"].values()
    )
    postings = manifest["num_postings"]
    typer.echo(
        f"indexed {manifest['num_docs']:,} docs, {postings:,} postings into {output} "
        f"({_human_bytes(total)}, {total / max(postings, 1):.2f} B/posting, {quantization}) "
        f"in {time.perf_counter() - started:.1f} s"
    )


@index_app.command("info")
@friendly_errors
def index_info(
    path: Annotated[Path, typer.Argument(help="index directory")],
    verify: Annotated[bool, typer.Option(help="check every file's SHA-256")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Describe an index (and verify its checksums)."""
    from lsr.index.searcher import SparseIndex

    index = SparseIndex.open(path, verify=verify)
    m = index.manifest
    if as_json:
        typer.echo(json.dumps(m, indent=2, sort_keys=True))
        return
    q = m["quantization"]
    rows = [
        ("path", str(path)),
        ("format", f"{m['format']} v{m['format_version']} (lsr {m['lsr_version']})"),
        ("documents", f"{m['num_docs']:,}"),
        ("postings", f"{m['num_postings']:,}"),
        (
            "terms",
            f"{m['num_nonempty_terms']:,} used of {m['vocab']['size']:,} ({m['vocab']['source']})",
        ),
        (
            "weights",
            f"{q['dtype']}" + (f" (scale {q['scale']:.6g})" if q["dtype"] == "uint8" else ""),
        ),
        (
            "blocks",
            f"{m['num_blocks']:,} of {m['build']['block_size']} docs, {m['num_entries']:,} entries",
        ),
        (
            "size",
            f"{_human_bytes(index.nbytes)} "
            f"({index.nbytes / max(index.num_postings, 1):.2f} B/posting)",
        ),
        ("checksums", "verified" if verify else "not checked"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def _parse_vector(text: str) -> dict[str, float]:
    try:
        vector = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--vector is not valid JSON: {exc.msg}") from None
    if not isinstance(vector, dict):
        raise InputError('--vector must be a JSON object like {"term": 1.5}')
    return vector


@app.command("search")
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
        int | None, typer.Option(help="threads for a queries file (default: all)")
    ] = None,
    min_weight: Annotated[float, typer.Option(help="drop query terms weighted below this")] = 0.0,
    max_terms: Annotated[
        int | None, typer.Option(help="keep each query's n heaviest terms")
    ] = None,
    ignore_unknown: Annotated[
        bool, typer.Option(help="skip query terms outside the vocabulary")
    ] = False,
    algorithm: Annotated[
        str, typer.Option(help="exhaustive (term-at-a-time) or maxscore (dynamic pruning)")
    ] = "exhaustive",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="TREC run file (default: stdout)")
    ] = None,
    run_tag: Annotated[str, typer.Option(help="run tag in the TREC run file")] = "lsr",
    verify: Annotated[bool, typer.Option(help="check index checksums on open")] = False,
) -> None:
    """Search an index with a text query, a query vector, or a file of either (TREC run)."""
    from lsr.index.searcher import SparseIndex

    if k <= 0:
        raise InputError(f"k must be a positive integer, got {k}")
    if sum(x is not None for x in (query, vector, queries)) != 1:
        raise InputError("give exactly one of a text QUERY, --vector or --queries")
    if queries is None and output is not None:
        raise InputError("--output is for --queries (a TREC run); one query prints to stdout")
    if query is not None or (queries is not None and _is_text_queries(queries)):
        _search_text(
            index_path,
            query,
            queries,
            k=k,
            mode=mode,
            fusion=fusion,
            alpha=alpha,
            threads=threads,
            output=output,
            run_tag=run_tag,
            verify=verify,
        )
        return
    if mode != "sparse":
        raise InputError(f"--mode {mode} needs text queries (vectors are sparse queries)")
    index = SparseIndex.open(index_path, verify=verify)
    unknown = "ignore" if ignore_unknown else "error"
    options: dict[str, Any] = {"min_weight": min_weight, "max_terms": max_terms, "unknown": unknown}
    if vector is not None:
        hits = index.search(_parse_vector(vector), k, algorithm=algorithm, **options)
        for rank, hit in enumerate(hits, start=1):
            typer.echo(f"{rank:>4}  {hit.score:10.4f}  {hit.doc_id}")
        typer.secho(f"{len(hits)} hits", err=True)
        return
    assert queries is not None
    # the index vocabulary is loaded frozen: unknown terms are reported (or skipped), never added
    batch = concat(list(iter_vector_batches(queries, index.vocab, unknown=unknown)), index.vocab)
    if len(batch) == 0:
        raise InputError("no queries in file", queries)
    started = time.perf_counter()
    index.warm_up(k, algorithm=algorithm)  # compiles (or loads) the kernels: not search time
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    results = index.batch_search(batch, k, threads=threads, algorithm=algorithm, **options)
    elapsed = time.perf_counter() - started
    _write_run(batch.ids, results, output, run_tag)
    typer.secho(
        f"searched {len(batch):,} queries (k={k}) in {elapsed:.3f} s: "
        f"{len(batch) / max(elapsed, 1e-9):,.0f} queries/s"
        + (f" (+ {warm_up:.1f} s to compile or load the kernels)" if warm_up >= 0.5 else "")
        + (f", run written to {output}" if output else ""),
        err=True,
    )


@eval_app.command("beir")
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
    ] = "all-MiniLM-L6-v2",
    split: Annotated[str, typer.Option(help="qrels split to evaluate")] = "test",
    tune_split: Annotated[
        str, typer.Option(help="qrels split that tunes fusion weights")
    ] = "train",
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="bm25s and/or pyserini (repeat); default both, 'none' for neither"),
    ] = None,
    fusion: Annotated[
        list[str] | None, typer.Option(help="minmax, zscore, rrf (repeat); default all")
    ] = None,
    rrf_k: Annotated[int, typer.Option(help="RRF constant k")] = 60,
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
    from lsr.evaluation import BeirEvalConfig, run_beir

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
        tune_split=tune_split,
        baselines=[b for b in baselines if b != "none"],
        fusions=fusion or ["minmax", "zscore", "rrf"],
        rrf_k=rrf_k,
        query_max_length=query_max_length,
        doc_max_length=doc_max_length,
        doc_stride=doc_stride,
        quantization=quantization,
        depth=depth,
        batch_size=batch_size,
        max_queries=max_queries,
    )
    if not data.is_dir():
        raise InputError("BEIR dataset directory not found", data)
    started = time.perf_counter()
    report = run_beir(
        config,
        log=lambda message: typer.secho(message, err=True),
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    best = max(report["systems"], key=lambda s: s["metrics"]["ndcg@10"])
    typer.echo(
        f"evaluated {len(report['systems'])} systems on {report['dataset']} {split} "
        f"({report['queries']} queries) in {time.perf_counter() - started:.0f} s; best nDCG@10 "
        f"{best['metrics']['ndcg@10']:.4f} ({best['name']}); report in {output}/results.md"
    )


def _write_run(qids: list[str], results: list[list[Any]], output: Path | None, tag: str) -> None:
    """TREC run lines to ``output`` (atomically) or stdout."""
    if output is not None:
        from lsr.data import write_trec_run

        run = {
            q: [(h.doc_id, h.score) for h in hits] for q, hits in zip(qids, results, strict=True)
        }
        write_trec_run(run, output, tag=tag, score_format=".6f")
        return
    for qid, hits in zip(qids, results, strict=True):
        for rank, hit in enumerate(hits, start=1):
            sys.stdout.write(f"{qid} Q0 {hit.doc_id} {rank} {hit.score:.6f} {tag}\n")


def _is_text_queries(path: Path) -> bool:
    """True when the first record of a JSONL queries file has text and no vector."""
    from lsr.sparse import open_text

    if not path.exists():
        raise InputError("file not found", path)
    if path.suffix == ".npz":
        return False
    with open_text(path) as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return False  # the vector reader reports it with its line number
                return isinstance(record, dict) and "vector" not in record and "text" in record
    return False


def _search_text(
    index_path: Path,
    query: str | None,
    queries: Path | None,
    *,
    k: int,
    mode: str,
    fusion: str,
    alpha: float,
    threads: int | None,
    output: Path | None,
    run_tag: str,
    verify: bool,
) -> None:
    from lsr.retrieval import FusionConfig, Retriever

    if fusion not in ("rrf", "minmax", "zscore"):
        raise InputError(f"--fusion must be rrf, minmax or zscore, got {fusion!r}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, got {alpha}")
    retriever = Retriever.open(index_path, verify=verify, dense=mode != "sparse")
    options: dict[str, Any] = {
        "mode": mode,
        "fusion": FusionConfig(method=fusion, alpha=alpha),  # type: ignore[arg-type]
    }
    if query is not None:
        if not query.strip():
            raise InputError("the query is empty")
        started = time.perf_counter()
        hits = retriever.search(query, k, **options)
        elapsed = time.perf_counter() - started
        for rank, hit in enumerate(hits, start=1):
            typer.echo(f"{rank:>4}  {hit.score:10.4f}  {hit.doc_id}")
        typer.secho(
            f"{len(hits)} hits ({mode}, {retriever.query_mode} queries) in {elapsed * 1000:.1f} ms",
            err=True,
        )
        return
    assert queries is not None
    from lsr.data import load_queries

    texts = load_queries(queries)
    if not texts:
        raise InputError("no queries in file", queries)
    qids = list(texts)
    started = time.perf_counter()
    results = retriever.batch_search([texts[q] for q in qids], k, threads=threads, **options)
    elapsed = time.perf_counter() - started
    _write_run(qids, results, output, run_tag)
    t = retriever.timings
    typer.secho(
        f"searched {len(qids):,} text queries ({mode}, k={k}) in {elapsed:.2f} s: "
        f"{len(qids) / max(elapsed, 1e-9):,.0f} queries/s (encode {t.encode:.2f} s, "
        f"search {t.search:.2f} s)" + (f", run written to {output}" if output else ""),
        err=True,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
