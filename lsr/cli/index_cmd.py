"""``lsr index``: build an index (from vectors, or from text with an encoder), describe it,
repair an interrupted publish."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from lsr.cli.common import friendly_errors, human_bytes, log
from lsr.errors import InputError
from lsr.index.quantization import QUANTIZATIONS

# lsr.index.builder and lsr.index.sparse_index load Numba (~1.5 s): commands import them when
# they run, so `lsr --help` stays fast.

app = typer.Typer(help="Build, inspect and repair sparse indexes.", no_args_is_help=True)


@app.command("build")
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
    batch_size: Annotated[
        int | None, typer.Option(help="texts per encoder batch (default 8; with --ray 64)")
    ] = None,
    batching: Annotated[
        str,
        typer.Option(
            help="invariant (each text alone: its vector never depends on its batch) or padded "
            "(length-sorted padded batches: faster on a GPU, last bits depend on the batch)"
        ),
    ] = "invariant",
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
        str | None,
        typer.Option(
            help=f"weight storage: {', '.join(QUANTIZATIONS)} (default uint8; sharded "
            "collections: float16)"
        ),
    ] = None,
    block_size: Annotated[int, typer.Option(help="documents per doc-id block (1-256)")] = 128,
    doc_top_k: Annotated[
        int | None, typer.Option(help="keep each document's k heaviest terms")
    ] = None,
    term_top_n: Annotated[
        int | None, typer.Option(help="keep each term's n heaviest postings")
    ] = None,
    reorder: Annotated[
        str,
        typer.Option(
            help="document-id order: none, or bp (recursive graph bisection: documents sharing "
            "terms get nearby ids; a smaller index and faster blockmax)"
        ),
    ] = "none",
    block_rows: Annotated[
        float | None,
        typer.Option(
            help="store full block rows for terms found in at least this share of the blocks "
            "(0-1]: faster blockmax/approximate search for a larger index (0.5: about +0.5 "
            "bytes per posting on real text)"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing index (atomically)")] = False,
    progress: Annotated[
        bool | None, typer.Option(help="show a progress bar (default: when stderr is a terminal)")
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            help="build a sharded collection of N shards on Ray (with --corpus; servable by "
            "lsr serve and lsr collection)",
            rich_help_panel="Ray",
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Ray cluster for --shards: 'local' starts one on this machine (the default), "
            "else 'auto' or host:port or ray://host:10001",
            rich_help_panel="Ray",
        ),
    ] = None,
    encode_actors: Annotated[
        int | None,
        typer.Option(
            help="encoder actors on Ray (default: one per GPU, else one per CPU but one)",
            rich_help_panel="Ray",
        ),
    ] = None,
) -> None:
    """Build an index from encoded vectors, or encode a text corpus with --corpus/--model."""
    if output is None:
        raise InputError("--output is required: the index directory to write")
    if progress is None:
        progress = sys.stderr.isatty()
    if shards is not None or ray is not None or encode_actors is not None:
        if inputs:
            raise InputError("--shards/--ray build from text: give --corpus, not vector files")
        if corpus is None or model is None:
            raise InputError("--shards/--ray need --corpus and --model")
        unsupported = {
            "--dense-kind": dense_kind != "flat",
            "--query-max-length": query_max_length != 64,
            "--doc-max-length": doc_max_length != 256,
            "--doc-stride": doc_stride is not None,
            "--batching": batching != "invariant",
            "--device": device != "auto",
            "--shard-size": shard_size != 1024,
            "--vocab": vocab is not None,
            "--doc-top-k": doc_top_k is not None,
            "--term-top-n": term_top_n is not None,
            "--reorder": reorder != "none",
            "--block-rows": block_rows is not None,
            "--overwrite": overwrite,
        }
        given = [name for name, set_ in unsupported.items() if set_]
        if given:
            raise InputError(
                f"{', '.join(given)} cannot be used with --shards/--ray (a sharded collection "
                "encodes with the model's own settings and is written once)"
            )
        from lsr.shards.ray_build import DEFAULT_BATCH_SIZE, build_sharded

        options: dict[str, object] = {"block_size": block_size}
        if quantization is not None:
            options["quantization"] = quantization
        result = build_sharded(
            corpus,
            output,
            model=model,
            shards=1 if shards is None else shards,
            query_mode=query_mode,
            idf=idf,
            dense_model=dense,
            address=None if ray in (None, "local") else ray,
            work_dir=work_dir,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            encode_actors=encode_actors,
            keep_work=keep_shards,
            progress=progress,
            log=log,
            **options,
        )
        typer.echo(result.summary())
        return
    from lsr.index.builder import BuildConfig, build

    quantization = quantization or "uint8"
    batch_size = batch_size or 8
    config = BuildConfig(
        quantization=quantization,
        block_size=block_size,
        doc_top_k=doc_top_k,
        term_top_n=term_top_n,
        reorder=reorder,
        block_rows=block_rows,
    )
    if corpus is not None:
        if inputs:
            raise InputError("give vector files or --corpus, not both")
        if model is None:
            raise InputError("--corpus needs --model (a sparse encoder: local path or hub id)")
        from lsr.encoders.config import EncoderConfig, SideConfig
        from lsr.ingest import index_corpus

        encoder = EncoderConfig(
            model=model,
            query_mode=query_mode,
            query=SideConfig(max_length=query_max_length),
            document=SideConfig(max_length=doc_max_length, stride=doc_stride, batching=batching),
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
            log=log,
        )
        typer.echo(result.summary())
        return
    if not inputs:
        raise InputError("give vector files to index, or --corpus and --model to encode text")
    from lsr.sparse import iter_vector_batches
    from lsr.vocab import Vocabulary

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
        f"({human_bytes(total)}, {total / max(postings, 1):.2f} B/posting, {quantization}) "
        f"in {time.perf_counter() - started:.1f} s"
    )


@app.command("info")
@friendly_errors
def index_info(
    path: Annotated[Path, typer.Argument(help="index directory")],
    verify: Annotated[bool, typer.Option(help="check every file's SHA-256")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Describe an index (and verify its checksums)."""
    from lsr.index.sparse_index import SparseIndex

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
            f"{m['num_blocks']:,} of {m['build']['block_size']} docs, {m['num_entries']:,} entries"
            + (f", {m['num_block_rows']:,} block rows" if m.get("num_block_rows") else ""),
        ),
        (
            "size",
            f"{human_bytes(index.nbytes)} "
            f"({index.nbytes / max(index.num_postings, 1):.2f} B/posting)",
        ),
        ("checksums", "verified" if verify else "not checked"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@app.command("repair")
@friendly_errors
def index_repair(path: Annotated[Path, typer.Argument(help="index directory")]) -> None:
    """Finish or undo an interrupted publish: put back a parked index, remove dead staging."""
    from lsr.index.format import repair

    actions = repair(path)
    for action in actions:
        log(action)
    typer.echo(f"{path}: " + ("repaired" if actions else "nothing to repair"))
