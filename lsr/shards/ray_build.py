"""Build a sharded collection from a text corpus on Ray: Ray Data encodes, Ray tasks build shards.

Stages, each resumable (a re-run with the same job skips what is finished):

1. **Check** the corpus (streamed once: JSON, ids, duplicates, with file and line in errors), the
   output (absent or an empty directory), the shard count and the model, before any long work.
2. **IDF** (inference-free models without an ``idf.json`` only): document frequencies over the
   whole corpus, counted per batch by Ray Data and summed here, into one ``idf.json`` equal to
   :func:`lsr.encoders.compute_idf` on the whole corpus; every shard gets that same table.
3. **Create** an empty sharded collection (:func:`lsr.shards.layout.create_sharded`) in a hidden
   staging directory beside the output, ``.<output>.building``, and keep a pristine copy of an
   empty shard in the work directory.
4. **Encode**: the corpus is read as a Ray Dataset (text = title + " " + text, as
   :func:`lsr.corpus.iter_corpus` makes it), encoded by an actor pool (one document encoder per
   actor, loaded from the collection's own encoder record, so a vector is exactly what the
   collection would encode; GPU actors when the cluster has GPUs), given its shard
   (:func:`~lsr.shards.layout.shard_of`) and written as parquet partitioned by shard
   (``<work>/encoded/shard=K/``). A marker file says the whole stage finished.
5. **Build**: one Ray task per shard opens its collection, upserts its rows (vectors + texts +
   dense rows) in batches and compacts; a marker per shard says it finished. A shard without
   its marker is rebuilt from the empty copy.
6. **Publish**: the staging directory is renamed to the output, so the output is either absent
   or complete; the work directory is removed (unless ``keep_work``).

The work directory (default ``<output>.work`` beside the output) must be on the same filesystem
as every Ray worker that runs a build task (the local disk for a local cluster, shared storage
for a multi-node one), as must the output. Corpus metadata is not carried over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import InputError, LsrError
from lsr.shards.layout import check_shard_count, create_sharded, is_sharded, shard_dir, shard_of

Log = Callable[[str], None]
JOB_FILE = "job.json"
IDF_FILE = "idf.json"
ENCODED_DIR = "encoded"
ENCODED_DONE = "encoded.done.json"
EMPTY_SHARD = "empty-shard"
BUILT_DIR = "built"
DEFAULT_BATCH_SIZE = 64
UPSERT_BATCH = 1024
IDF_BATCH = 1024


@dataclass
class RayBuildResult:
    """What :func:`build_sharded` made and how long each stage took."""

    output: Path
    num_docs: int
    shards: int
    shard_docs: list[int]
    encoded_docs: int  # encoded in this run (0 when the encoded vectors came from a previous run)
    built_shards: int  # shards built in this run (the rest were finished before)
    cluster_seconds: float
    idf_seconds: float
    encode_seconds: float
    build_seconds: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.num_docs / self.seconds if self.seconds > 0 else 0.0
        sizes = f"{min(self.shard_docs):,}-{max(self.shard_docs):,} per shard"
        line = (
            f"built {self.num_docs:,} docs into {self.shards} shards at {self.output} "
            f"({sizes}) in {self.seconds:.1f} s ({rate:,.1f} docs/s): "
        )
        if self.encoded_docs:
            enc_rate = self.encoded_docs / self.encode_seconds if self.encode_seconds else 0.0
            line += f"encoded {self.encoded_docs:,} in {self.encode_seconds:.1f} s "
            line += f"({enc_rate:,.1f} docs/s)"
        else:
            line += "encoded vectors resumed"
        line += f", built {self.built_shards} shards in {self.build_seconds:.1f} s"
        if self.built_shards < self.shards:
            line += f" ({self.shards - self.built_shards} resumed)"
        return line


# -- corpus rows (run on Ray workers) ------------------------------------------------------------
def _doc_text(record: dict[str, Any]) -> tuple[str, str]:
    """``(id, text)`` of a corpus record, as :func:`lsr.corpus.iter_corpus` makes them (records
    were checked by it on the driver first)."""
    rid = record["_id"]
    head = record.get("title") or ""
    text = record["text"]
    return str(rid), f"{head} {text}" if head else text


def _parse_lines(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids, texts = [], []
    for line in batch["text"]:
        if not line.strip():
            continue
        doc_id, text = _doc_text(json.loads(line))
        ids.append(doc_id)
        texts.append(text)
    return {"id": np.array(ids, dtype=object), "text": np.array(texts, dtype=object)}


_TOKENIZERS: dict[tuple[str, int | None], Any] = {}


def _document_frequencies(
    batch: dict[str, np.ndarray], tokenizer: str, max_length: int | None
) -> dict[str, np.ndarray]:
    """Ray Data task: how many texts of the batch hold each non-special token (the tokenizer is
    loaded once per worker process), and one row (term -1) with the number of texts."""
    from lsr.encoders.tokenizer import (
        load_tokenizer,
        set_truncation,
        special_token_ids,
        token_sets,
        tokenizer_vocabulary,
    )

    key = (tokenizer, max_length)
    if key not in _TOKENIZERS:
        tok = load_tokenizer(tokenizer)
        set_truncation(tok, max_length)
        _TOKENIZERS[key] = (tok, special_token_ids(tok), len(tokenizer_vocabulary(tokenizer)))
    tok, special, size = _TOKENIZERS[key]
    texts = [str(t) for t in batch["text"]]
    _, cols, _, _ = token_sets(tok, texts, special, size)
    terms, counts = np.unique(cols, return_counts=True)
    return {
        "term": np.concatenate([terms.astype(np.int64), [-1]]),
        "df": np.concatenate([counts.astype(np.int64), [len(texts)]]),
    }


class _Encode:
    """Ray Data actor: the collection's document encoder (and dense model), loaded once."""

    def __init__(self, shard0: str, n_shards: int, threads: int | None = None) -> None:
        from lsr.collection.queries import load_document_encoder
        from lsr.encoders.dense_encoder import DenseEncoder
        from lsr.encoders.device import ForwardPool

        info = json.loads((Path(shard0) / "collection.json").read_text(encoding="utf-8"))
        self.encoder = load_document_encoder(info["encoder"], Path(shard0), None)
        if threads is not None and hasattr(self.encoder.document, "pool"):
            # as many forward threads as CPUs the actor holds (not one per core of the node)
            self.encoder.document.pool = ForwardPool(threads)
        if self.encoder.vocab.sha256 != info["vocab"]["sha256"]:
            raise InputError("the encoder's vocabulary is not the collection's", shard0)
        self.dense = DenseEncoder.from_identity(info["dense"]) if "dense" in info else None
        self.n_shards = n_shards

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        ids = [str(i) for i in batch["id"]]
        texts = [str(t) for t in batch["text"]]
        encoded = self.encoder.encode_document(texts, ids)
        m = encoded.matrix.tocsr()
        m.sort_indices()
        offsets = pa.array(m.indptr.astype(np.int32))
        columns = {
            "id": pa.array(ids, pa.string()),
            "shard": pa.array([shard_of(i, self.n_shards) for i in ids], pa.int32()),
            "terms": pa.ListArray.from_arrays(offsets, pa.array(m.indices.astype(np.int32))),
            "weights": pa.ListArray.from_arrays(offsets, pa.array(m.data.astype(np.float32))),
            "text": pa.array(texts, pa.string()),
        }
        if self.dense is not None:
            rows = np.asarray(self.dense.encode_document(texts), dtype=np.float32)
            dense_offsets = pa.array(np.arange(len(ids) + 1, dtype=np.int32) * rows.shape[1])
            columns["dense"] = pa.ListArray.from_arrays(dense_offsets, pa.array(rows.ravel()))
        return pa.table(columns)


# -- one shard (a Ray task) ----------------------------------------------------------------------
def build_shard(shard_path: str, rows_dir: str, marker: str, batch: int = UPSERT_BATCH) -> int:
    """Upsert the encoded rows in ``rows_dir`` (parquet files; may be absent: an empty shard)
    into the collection at ``shard_path``, compact it, then write ``marker``. Returns the docs."""
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    from lsr.collection import Collection
    from lsr.io import atomic_write
    from lsr.sparse import SparseBatch

    files = sorted(Path(rows_dir).glob("*.parquet")) if Path(rows_dir).is_dir() else []
    docs = 0
    collection = Collection.open(shard_path)
    try:
        dense_dim = collection.config.dense_dim
        for file in files:
            for part in pq.ParquetFile(file).iter_batches(batch_size=batch):
                ids = [str(i) for i in part.column("id").to_pylist()]
                terms = part.column("terms")
                lengths = np.asarray(terms.value_lengths().fill_null(0), dtype=np.int64)
                indptr = np.concatenate([[0], np.cumsum(lengths)])
                matrix = sp.csr_matrix(
                    (
                        np.asarray(part.column("weights").flatten(), dtype=np.float32),
                        np.asarray(terms.flatten(), dtype=np.int32),
                        indptr,
                    ),
                    shape=(len(ids), len(collection.vocab)),
                )
                dense = None
                if dense_dim is not None:
                    flat = np.asarray(part.column("dense").flatten(), dtype=np.float32)
                    dense = flat.reshape(len(ids), dense_dim)
                collection.upsert(
                    ids,
                    vectors=SparseBatch(ids, matrix, collection.vocab),
                    texts=[str(t) for t in part.column("text").to_pylist()],
                    dense=dense,
                )
                docs += len(ids)
        collection.compact()
    finally:
        collection.close()
    body = json.dumps({"docs": docs, "finished": time.time()})
    atomic_write(Path(marker), lambda p: p.write_text(body, encoding="utf-8"))
    return docs


# -- helpers -------------------------------------------------------------------------------------
def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.absolute()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_json(path: Path, body: Any) -> None:
    from lsr.io import atomic_write

    text = json.dumps(body, indent=1, sort_keys=True)
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def default_work_dir(output: Path) -> Path:
    output = Path(output).absolute()
    return output.with_name(output.name + ".work")


def staging_dir(output: Path) -> Path:
    output = Path(output).absolute()
    return output.with_name(f".{output.name}.building")


def _lsr_error_in(exc: BaseException) -> LsrError | None:
    """The user error behind a Ray task or Ray Data failure, if there is one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, LsrError) and not type(current).__module__.startswith("ray"):
            return current
        cause = getattr(current, "cause", None)
        if isinstance(cause, LsrError):
            return cause
        stack.extend([cause, current.__cause__, current.__context__])
    return None


def _count_corpus(source: Path) -> int:
    """Every record checked as :func:`lsr.corpus.iter_corpus` checks it; the number of docs."""
    from lsr.corpus import iter_corpus

    n = 0
    for _ in iter_corpus(source):
        n += 1
    if n == 0:
        raise InputError("the corpus has no documents", source)
    return n


@dataclass
class _Cluster:
    started: bool
    cpus: float
    gpus: float
    seconds: float


def _start_ray(address: str | None, log: Log, progress: bool) -> _Cluster:
    import ray

    started = time.perf_counter()
    quiet = {"log_to_driver": progress, "logging_level": logging.WARNING}
    if ray.is_initialized():
        own = False
    elif address is None:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **quiet,
        )
        own = True
    else:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        own = False
    resources = ray.cluster_resources()
    cluster = _Cluster(
        own,
        float(resources.get("CPU", 0.0)),
        float(resources.get("GPU", 0.0)),
        time.perf_counter() - started,
    )
    kind = "started a local Ray cluster" if own else "joined the Ray cluster"
    log(f"ray: {kind} ({cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs) in {cluster.seconds:.1f} s")
    return cluster


def _plan_actors(
    cluster: _Cluster, encode_actors: int | None
) -> tuple[int, dict[str, float], float, float]:
    """(actors, each actor's resources, CPUs of each read/write task, CPUs for all actors). The
    actors together take fewer CPUs than the cluster has: Ray Data's read and write tasks need
    some, or nothing moves (a deadlock)."""
    cpus = cluster.cpus
    if cpus <= 0:
        raise InputError("the Ray cluster has no CPUs")
    actor_total = cpus - 1 if cpus >= 2 else cpus / 2
    data_cpus = min(1.0, cpus - actor_total)
    if cluster.gpus >= 1:
        actors = encode_actors or int(cluster.gpus)
        if actors > cluster.gpus:
            raise InputError(f"encode_actors {actors} but the cluster has {cluster.gpus:g} GPUs")
        gpu = {"num_gpus": 1.0, "num_cpus": min(1.0, actor_total / actors)}
        return actors, gpu, data_cpus, actor_total
    actors = encode_actors or max(1, int(actor_total))
    return actors, {"num_cpus": actor_total / actors}, data_cpus, actor_total


def _read_corpus(source: Path, n_docs: int, blocks: int, data_cpus: float) -> Any:
    import ray.data

    stream_args = {"compression": "gzip"} if source.suffix == ".gz" else None
    ds = ray.data.read_text(
        str(source.absolute()), num_cpus=data_cpus, arrow_open_stream_args=stream_args
    )
    ds = ds.map_batches(_parse_lines, batch_format="numpy", num_cpus=data_cpus)
    return ds.repartition(max(1, min(blocks, n_docs)))


# -- the entry point -----------------------------------------------------------------------------
def build_sharded(
    corpus: str | Path,
    output: str | Path,
    *,
    model: str,
    shards: int,
    query_mode: str = "siamese",
    idf: str | Path | None = None,
    dense_model: str | None = None,
    address: str | None = None,
    work_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    encode_actors: int | None = None,
    schema: dict[str, str] | None = None,
    keep_work: bool = False,
    progress: bool = False,
    log: Log = lambda message: None,
    **options: Any,
) -> RayBuildResult:
    """Encode ``corpus`` (BEIR directory or JSONL(.gz)) on Ray and build a sharded collection of
    ``shards`` shards at ``output`` (see the module docstring).

    ``address``: a running Ray cluster (``"auto"``, ``"ray://host:10001"``, ``host:port``);
    None starts a local one (loopback, no dashboard, every CPU of this machine) and shuts it
    down at the end. ``batch_size``: texts per encoding call (vectors never depend on it).
    ``encode_actors``: encoder actors (default: one per GPU, else one per CPU but one; CPU
    actors share the CPUs but one and run as many encoder threads as whole CPUs they hold).
    ``options`` are :class:`~lsr.collection.config.CollectionConfig` fields.
    """
    from lsr.corpus import corpus_file
    from lsr.encoders.config import QUERY_MODES
    from lsr.encoders.resolve import resolve_config
    from lsr.extras import require

    began = time.perf_counter()
    require("building on Ray", "ray", "pyarrow")
    output = Path(output).absolute()
    source = corpus_file(Path(corpus))
    if source.is_dir():
        raise InputError("a corpus must be a file or a BEIR directory", source)
    n_shards = check_shard_count(shards)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if encode_actors is not None and (
        isinstance(encode_actors, bool) or not isinstance(encode_actors, int) or encode_actors < 1
    ):
        raise InputError(f"encode_actors must be a positive integer, got {encode_actors!r}")
    if query_mode not in QUERY_MODES:
        raise InputError(f"query_mode must be one of {', '.join(QUERY_MODES)}, got {query_mode!r}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InputError("already exists and is not empty", output)
    if not output.parent.is_dir():
        raise InputError("the output's parent directory does not exist", output.parent)
    if idf is not None and not Path(idf).is_file():
        raise InputError("IDF file not found", idf)
    overrides: dict[str, Any] = {"query_mode": query_mode}
    if idf is not None:
        overrides["idf"] = str(Path(idf).absolute())
    resolved = resolve_config(model, **overrides)  # a missing model fails here, before any work
    from pydantic import ValidationError

    from lsr.collection.config import CollectionConfig

    try:
        CollectionConfig(**options)
    except ValidationError as exc:
        raise InputError("; ".join(e["msg"] for e in exc.errors())) from None
    n_docs = _count_corpus(source)

    work = Path(work_dir).absolute() if work_dir else default_work_dir(output)
    staging = staging_dir(output)
    job = {
        "corpus": _file_identity(source),
        "model": resolved.config.model,
        "query_mode": query_mode,
        "idf": _file_identity(Path(idf)) if idf is not None else None,
        "dense_model": dense_model,
        "shards": n_shards,
        "options": options,
        "schema": schema,
    }
    previous = _read_json(work / JOB_FILE)
    if previous is None and work.is_dir() and any(work.iterdir()):
        raise InputError("the work directory is not empty and holds no lsr build", work)
    if previous != job:
        if previous is not None or staging.exists():
            log(f"{work}: made by another job (or unfinished); starting over")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        _write_json(work / JOB_FILE, job)

    import ray

    cluster = _start_ray(address, log, progress)
    from ray.data import DataContext

    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    ctx = DataContext.get_current()
    bars, banner = ctx.enable_progress_bars, ctx.print_on_execution_start
    try:
        ctx.enable_progress_bars = progress
        ctx.print_on_execution_start = progress
        if not progress:
            data_logger.setLevel(logging.WARNING)
        return _run(
            source=source,
            output=output,
            work=work,
            staging=staging,
            n_docs=n_docs,
            n_shards=n_shards,
            model=model,
            query_mode=query_mode,
            idf=overrides.get("idf"),
            dense_model=dense_model,
            resolved=resolved,
            cluster=cluster,
            batch_size=batch_size,
            encode_actors=encode_actors,
            schema=schema,
            keep_work=keep_work,
            log=log,
            began=began,
            options=options,
        )
    except Exception as exc:
        user = _lsr_error_in(exc)
        if user is not None and user is not exc:
            raise user from None
        raise
    finally:
        data_logger.setLevel(level)
        ctx.enable_progress_bars, ctx.print_on_execution_start = bars, banner
        if cluster.started:
            ray.shutdown()


def _run(
    *,
    source: Path,
    output: Path,
    work: Path,
    staging: Path,
    n_docs: int,
    n_shards: int,
    model: str,
    query_mode: str,
    idf: str | None,
    dense_model: str | None,
    resolved: Any,
    cluster: _Cluster,
    batch_size: int,
    encode_actors: int | None,
    schema: dict[str, str] | None,
    keep_work: bool,
    log: Log,
    began: float,
    options: dict[str, Any],
) -> RayBuildResult:
    import ray
    import ray.data

    actors, actor_resources, data_cpus, _ = _plan_actors(cluster, encode_actors)
    threads = None if "num_gpus" in actor_resources else max(1, int(actor_resources["num_cpus"]))
    blocks = max(actors * 4, math.ceil(n_docs / (batch_size * 16)))

    # 1. global IDF (inference-free without an idf.json): the same table for every shard
    idf_seconds = 0.0
    config = resolved.config
    if config.inference_free and config.idf is None:
        idf_path = work / IDF_FILE
        if idf_path.is_file():
            log("idf: computed by a previous run")
        else:
            started = time.perf_counter()
            table = _global_idf(resolved, source, n_docs, blocks, data_cpus)
            table.save(idf_path.with_suffix(".tmp"))
            os.replace(idf_path.with_suffix(".tmp"), idf_path)
            idf_seconds = time.perf_counter() - started
            log(
                f"idf: {n_docs:,} docs, {int(np.count_nonzero(table.df)):,} terms seen, "
                f"{idf_seconds:.1f} s"
            )
        idf = str(idf_path)

    # 2. the empty sharded collection (staging) and a pristine empty shard
    create: dict[str, Any] = {"model": model, "query_mode": query_mode, **options}
    if idf is not None:
        create["idf"] = idf
    if dense_model is not None:
        create["dense_model"] = dense_model
    if schema is not None:
        create["schema"] = schema
    if not is_sharded(staging):
        shutil.rmtree(staging, ignore_errors=True)
        create_sharded(staging, n_shards, **create)
    empty = work / EMPTY_SHARD
    if not empty.is_dir():
        partial = work / f".{EMPTY_SHARD}.tmp"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(shard_dir(staging, 0), partial)
        os.rename(partial, empty)

    # 3. encode into parquet partitioned by shard
    encoded = work / ENCODED_DIR
    encode_seconds, encoded_docs = 0.0, 0
    if (work / ENCODED_DONE).is_file():
        log("encode: vectors encoded by a previous run")
    else:
        shutil.rmtree(encoded, ignore_errors=True)
        started = time.perf_counter()
        ds = _read_corpus(source, n_docs, blocks, data_cpus)
        ds = ds.map_batches(
            _Encode,
            fn_constructor_kwargs={"shard0": str(empty), "n_shards": n_shards, "threads": threads},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            **actor_resources,
        )
        ds.write_parquet(
            str(encoded), partition_cols=["shard"], ray_remote_args={"num_cpus": data_cpus}
        )
        encode_seconds = time.perf_counter() - started
        written = _count_rows(encoded)
        if written != n_docs:
            raise InputError(f"encoded {written:,} docs of {n_docs:,}: the corpus changed?")
        encoded_docs = n_docs
        _write_json(work / ENCODED_DONE, {"docs": n_docs, "seconds": encode_seconds})
        log(
            f"encode: {n_docs:,} docs in {encode_seconds:.1f} s "
            f"({n_docs / encode_seconds:,.1f} docs/s, {actors} actors)"
        )

    # 4. one task per unfinished shard
    built = work / BUILT_DIR
    built.mkdir(exist_ok=True)
    started = time.perf_counter()
    remote = ray.remote(num_cpus=1)(build_shard)
    pending = {}
    for i in range(n_shards):
        marker = built / f"shard-{i:03d}.done"
        if marker.is_file():
            log(f"shard {i}: built by a previous run")
            continue
        target = shard_dir(staging, i)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(empty, target)
        rows = encoded / f"shard={i}"
        pending[remote.remote(str(target), str(rows), str(marker))] = i
    for ref, i in pending.items():
        docs = ray.get(ref)
        log(f"shard {i}: {docs:,} docs")
    build_seconds = time.perf_counter() - started
    shard_docs = [int(_read_json(built / f"shard-{i:03d}.done")["docs"]) for i in range(n_shards)]
    if sum(shard_docs) != n_docs:
        raise InputError(f"the shards hold {sum(shard_docs):,} docs, the corpus {n_docs:,}")

    _publish(staging, output)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return RayBuildResult(
        output=output,
        num_docs=n_docs,
        shards=n_shards,
        shard_docs=shard_docs,
        encoded_docs=encoded_docs,
        built_shards=len(pending),
        cluster_seconds=cluster.seconds,
        idf_seconds=idf_seconds,
        encode_seconds=encode_seconds,
        build_seconds=build_seconds,
        seconds=time.perf_counter() - began,
    )


def _publish(staging: Path, output: Path) -> None:
    """The finished staging directory becomes the output (one rename: all or nothing; the
    output was checked absent or empty at the start)."""
    from lsr.io import rename_into_place

    rename_into_place(staging, output)


def _count_rows(encoded: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in encoded.glob("shard=*/*.parquet"))


def _global_idf(resolved: Any, source: Path, n_docs: int, blocks: int, data_cpus: float) -> Any:
    """The IDF table of the whole corpus: token sets counted per batch on Ray, summed here."""

    from lsr.encoders.idf_table import IdfTable
    from lsr.encoders.resolve import model_tokenizer
    from lsr.encoders.tokenizer import (
        load_tokenizer,
        special_token_ids,
        tokenizer_file,
        tokenizer_vocabulary,
    )

    config = resolved.config
    tok = (
        tokenizer_file(resolved.local)
        if resolved.local is not None
        else model_tokenizer(config.model)
    )
    vocab = tokenizer_vocabulary(tok)
    special = special_token_ids(load_tokenizer(tok))
    ds = _read_corpus(source, n_docs, blocks, data_cpus).map_batches(
        _document_frequencies,
        fn_kwargs={"tokenizer": str(tok), "max_length": config.document.max_length},
        batch_size=IDF_BATCH,
        batch_format="numpy",
        num_cpus=data_cpus,
    )
    df = np.zeros(len(vocab), dtype=np.int64)
    seen = 0
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        terms, counts = batch["term"], batch["df"]
        docs = terms < 0
        seen += int(counts[docs].sum())
        np.add.at(df, terms[~docs], counts[~docs])
    if seen != n_docs:
        raise InputError(f"IDF counted {seen:,} docs of {n_docs:,}: the corpus changed?")
    return IdfTable.from_df(df, n_docs, vocab, special_ids=special)
