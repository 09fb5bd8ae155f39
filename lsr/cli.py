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
        list[Path], typer.Argument(help="vector files: JSONL(.gz) {id, vector} or .npz")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="index directory to write")],
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
    """Build an index from encoded document vectors."""
    from lsr.index.builder import BuildConfig, build

    config = BuildConfig(
        quantization=quantization, block_size=block_size, doc_top_k=doc_top_k, term_top_n=term_top_n
    )
    for path in inputs:
        if not path.exists():
            raise InputError("file not found", path)
    if progress is None:
        progress = sys.stderr.isatty()
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
    vector: Annotated[
        str | None, typer.Option(help='one query as JSON: {"term": weight, ...}')
    ] = None,
    queries: Annotated[
        Path | None, typer.Option(help="query vectors file (JSONL(.gz) or .npz)")
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
    """Search an index with one query vector or a file of them (TREC run output)."""
    from lsr.index.searcher import SparseIndex

    if k <= 0:
        raise InputError(f"k must be a positive integer, got {k}")
    if (vector is None) == (queries is None):
        raise InputError("give exactly one of --vector or --queries")
    if vector is not None and output is not None:
        raise InputError("--output is for --queries (a TREC run); --vector prints hits to stdout")
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
    handle = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for qid, hits in zip(batch.ids, results, strict=True):
            for rank, hit in enumerate(hits, start=1):
                handle.write(f"{qid} Q0 {hit.doc_id} {rank} {hit.score:.6f} {run_tag}\n")
    finally:
        if output:
            handle.close()
    typer.secho(
        f"searched {len(batch):,} queries (k={k}) in {elapsed:.3f} s: "
        f"{len(batch) / max(elapsed, 1e-9):,.0f} queries/s"
        + (f" (+ {warm_up:.1f} s to compile or load the kernels)" if warm_up >= 0.5 else "")
        + (f", run written to {output}" if output else ""),
        err=True,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
