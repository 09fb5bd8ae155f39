"""``lsr collection``: create a live collection, add and delete documents, search with filters,
describe and compact it. Every command opens the collection, does one thing and closes it."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lsr.cli.common import friendly_errors, human_bytes, human_seconds, log
from lsr.errors import InputError

app = typer.Typer(
    help="Live collections: upserts, deletes and filtered search (docs/collections.md).",
    no_args_is_help=True,
)


def _json_arg(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc.msg}): {text}") from None


def _open(path: Path, model: str | None = None) -> Any:
    from lsr.collection import Collection
    from lsr.shards import is_sharded

    if is_sharded(path):
        from lsr.shards.collection import ShardedCollection

        collection = ShardedCollection.open(path, model=model)
    else:
        collection = Collection.open(path, model=model)
    for note in collection.recovery_notes:
        log(f"recovered: {note}")
    return collection


@app.command("create")
@friendly_errors
def create(
    path: Annotated[Path, typer.Argument(help="collection directory to create")],
    model: Annotated[
        str | None, typer.Option(help="sparse encoder: texts are encoded on add and search")
    ] = None,
    vocab: Annotated[
        Path | None,
        typer.Option(help="vocabulary (tokenizer.json, vocab.txt or JSON list) for vector input"),
    ] = None,
    query_mode: Annotated[
        str, typer.Option(help="siamese (model encodes queries) or inference-free (IDF lookup)")
    ] = "siamese",
    idf: Annotated[
        Path | None, typer.Option(help="idf.json for inference-free queries (fixed at creation)")
    ] = None,
    dense: Annotated[
        str | None, typer.Option(help="also store dense vectors from this model (hybrid search)")
    ] = None,
    dense_dim: Annotated[
        int | None, typer.Option(help="dense vector size when dense rows are given directly")
    ] = None,
    quantization: Annotated[str, typer.Option(help="float16, float32 or uint8")] = "float16",
    max_weight: Annotated[float | None, typer.Option(help="uint8: the weight of code 255")] = None,
    flush_docs: Annotated[int, typer.Option(help="documents per flushed segment")] = 4096,
    merge_factor: Annotated[int, typer.Option(help="segments per merge (tiered)")] = 8,
    field: Annotated[
        list[str] | None,
        typer.Option(help="declare a metadata field as name:kind (keyword, number, bool)"),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="split into this many shards by document id (a sharded "
            "collection: same answers, searched in parallel, servable on Ray)",
        ),
    ] = None,
) -> None:
    """Create an empty collection (vectors with --vocab, or texts with --model)."""
    from lsr.collection import Collection
    from lsr.vocab import Vocabulary

    schema: dict[str, str] = {}
    for item in field or []:
        name, sep, kind = item.partition(":")
        if not sep:
            raise InputError(f"--field takes name:kind, got {item!r}")
        schema[name] = kind
    opener: Any = Collection.create
    if shards is not None:
        from lsr.shards.collection import ShardedCollection

        opener = functools.partial(ShardedCollection.create, shards=shards)
    with opener(
        path,
        vocab=Vocabulary.load(vocab) if vocab is not None else None,
        model=model,
        query_mode=query_mode,
        idf=idf,
        dense_model=dense,
        schema=schema,
        quantization=quantization,
        max_weight=max_weight,
        flush_docs=flush_docs,
        merge_factor=merge_factor,
        dense_dim=dense_dim,
    ) as collection:
        info = collection.info()
    mode = info["query_mode"] or "vector queries"
    split = f", {shards} shards" if shards is not None else ""
    log(f"created {path}: {mode}, {info['quantization']} weights, vocabulary of "
        f"{collection.info_json['vocab']['size']} terms{split}")  # fmt: skip


@app.command("add")
@friendly_errors
def add(
    path: Annotated[Path, typer.Argument(help="collection directory")],
    documents: Annotated[
        Path,
        typer.Argument(help="JSONL(.gz): {id, text?, vector?, dense?, metadata?} per line"),
    ],
    batch_size: Annotated[int, typer.Option(help="documents per acknowledged write")] = 256,
    model: Annotated[str | None, typer.Option(help="where the collection's model is now")] = None,
) -> None:
    """Insert or replace documents (by id); the whole file is checked before the first write."""
    from tqdm.auto import tqdm

    from lsr.collection.documents import check_documents, read_documents

    if batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    with _open(path, model) as collection:
        total, _ = check_documents(
            documents,
            schema=collection.schema,
            has_model=collection.info_json.get("encoder") is not None,
            dense_dim=collection.config.dense_dim,
            has_dense_model="dense" in collection.info_json,
        )
        before = len(collection)
        started = time.perf_counter()
        rows: list[Any] = []
        bar = tqdm(total=total, unit="doc", desc="add", disable=None)

        def write() -> None:
            texts = [r.text for r in rows]
            collection.upsert(
                [r.id for r in rows],
                vectors=None if rows[0].vector is None else [r.vector for r in rows],
                texts=texts if any(t is not None for t in texts) else None,
                dense=None if rows[0].dense is None else [r.dense for r in rows],
                metadata=[r.metadata for r in rows],
            )
            bar.update(len(rows))
            rows.clear()

        def kind(row: Any) -> tuple[bool, bool]:
            return row.vector is None, row.dense is None

        for _, row in read_documents(documents):
            if rows and kind(row) != kind(rows[0]):
                write()  # one upsert either encodes or takes vectors (and dense rows)
            rows.append(row)
            if len(rows) >= batch_size:
                write()
        if rows:
            write()
        bar.close()
        collection.merge()  # what the tiered policy asks for after the flushes of this file
        elapsed = time.perf_counter() - started
        after = len(collection)
        info = collection.info()
    log(
        f"added {total} documents ({total - (after - before)} replaced) in "
        f"{human_seconds(elapsed)} ({total / max(elapsed, 1e-9):,.0f} docs/s); "
        f"{after} live, {len(info['segments'])} segments, {info['buffered_docs']} buffered"
    )


@app.command("delete")
@friendly_errors
def delete(
    path: Annotated[Path, typer.Argument(help="collection directory")],
    ids: Annotated[list[str] | None, typer.Argument(help="document ids to delete")] = None,
    filter_: Annotated[
        str | None, typer.Option("--filter", help="delete what matches, e.g. '{\"year\": 2020}'")
    ] = None,
) -> None:
    """Delete documents by id or by metadata filter."""
    flt = _json_arg(filter_, "--filter")
    if (not ids) == (flt is None):
        raise InputError("give document ids or --filter (one of them)")
    with _open(path) as collection:
        unknown = sorted(set(ids or []) - collection.snapshot().live(ids or []))
        result = collection.delete(ids) if ids else collection.delete_by_filter(flt)
        live = len(collection)
    note = f" (not found: {', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''})"
    log(f"deleted {result.count} documents{note if unknown else ''}; {live} live")


@app.command("get")
@friendly_errors
def get(
    path: Annotated[Path, typer.Argument(help="collection directory")],
    ids: Annotated[list[str], typer.Argument(help="document ids")],
) -> None:
    """Print stored documents as JSON lines {id, text, metadata}; an unknown id is an error."""
    with _open(path) as collection:
        found = collection.get(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise InputError(
            f"no live document with id {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    for doc_id in ids:
        text, metadata = found[doc_id]
        typer.echo(json.dumps({"id": doc_id, "text": text, "metadata": metadata}))


@app.command("search")
@friendly_errors
def search(
    path: Annotated[Path, typer.Argument(help="collection directory")],
    query: Annotated[
        str | None, typer.Argument(help="query text (collections with a model)")
    ] = None,
    vector: Annotated[
        str | None, typer.Option(help="query as JSON {token: weight}, e.g. '{\"cell\": 1.2}'")
    ] = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help='metadata filter, e.g. \'{"year": {"gte": 2020}}\''),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="hits to return")] = 10,
    mode: Annotated[str, typer.Option(help="sparse, dense or hybrid")] = "sparse",
    payload: Annotated[bool, typer.Option(help="print each hit's metadata and text")] = False,
    model: Annotated[str | None, typer.Option(help="where the query model is now")] = None,
    plan: Annotated[
        str,
        typer.Option(
            help="sparse search per segment: auto (the cheaper exact plan), taat, forward, "
            "blockmax (best block first) or approximate (blockmax at the measured default)"
        ),
    ] = "auto",
    heap_factor: Annotated[
        float,
        typer.Option(
            help="blockmax only: 1 = exact, below 1 = faster and approximate (scores stay exact)"
        ),
    ] = 1.0,
) -> None:
    """Top-k over the live documents that match the filter (exact unless --heap-factor < 1 or
    --plan approximate)."""
    if (query is None) == (vector is None):
        raise InputError("give a query text or --vector (one of them)")
    q = query if query is not None else _json_arg(vector, "--vector")
    if not isinstance(q, str | dict):
        raise InputError("--vector must be a JSON object {token: weight}")
    flt = _json_arg(filter_, "--filter")
    with _open(path, model) as collection:
        started = time.perf_counter()
        hits = collection.search(
            q, k, filter=flt, mode=mode, with_payload=payload, plan=plan, heap_factor=heap_factor
        )
        elapsed = time.perf_counter() - started
    for rank, hit in enumerate(hits, start=1):
        doc_id = hit.id if payload else hit.doc_id
        line = f"{rank:>4}  {hit.score:10.4f}  {doc_id}"
        if payload:
            line += "  " + json.dumps({"metadata": hit.metadata, "text": hit.text})
        typer.echo(line)
    log(f"{len(hits)} hits ({mode}{', filtered' if flt is not None else ''}) in "
        f"{human_seconds(elapsed)}")  # fmt: skip


@app.command("info")
@friendly_errors
def info(path: Annotated[Path, typer.Argument(help="collection directory")]) -> None:
    """Live and deleted documents, segments, bytes, log size, schema (JSON on stdout)."""
    with _open(path) as collection:
        described = collection.info()
    typer.echo(json.dumps(described, indent=2))
    log(
        f"{described['live_docs']} live, {described['deleted_docs']} deleted, "
        f"{len(described['segments'])} segments, "
        f"{human_bytes(described['segment_bytes'])} of segments, "
        f"{human_bytes(described['log_bytes'])} of log"
    )


@app.command("compact")
@friendly_errors
def compact(path: Annotated[Path, typer.Argument(help="collection directory")]) -> None:
    """Flush, merge every segment into one without deleted documents, and trim the log."""
    with _open(path) as collection:
        before = collection.info()
        started = time.perf_counter()
        after = collection.compact()
        elapsed = time.perf_counter() - started
    freed = (
        before["segment_bytes"] + before["log_bytes"] - after["segment_bytes"] - after["log_bytes"]
    )
    log(
        f"compacted in {human_seconds(elapsed)}: {len(before['segments'])} -> "
        f"{len(after['segments'])} segments, {before['deleted_docs']} deleted documents dropped, "
        f"{human_bytes(max(freed, 0))} reclaimed"
    )
