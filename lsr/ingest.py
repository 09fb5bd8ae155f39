"""Index a text corpus: encode documents in resumable shards, then build the index(es).

Encoded documents go to a work directory beside the output, one shard file per ``shard_size``
documents, each written atomically. A job file records what the shards were made from (corpus
size and mtime, the document side's configuration, the dense model): a re-run with the same job
skips the shards already on disk, so an interrupted encode resumes where it stopped; a different
job starts over. The finished index records the encoder in its manifest and carries the query
side's files (tokenizer, IDF table), so searching it needs no further flags.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lsr.encoders.config import EncoderConfig
from lsr.index import format as fmt
from lsr.index.builder import BuildConfig, build
from lsr.io import atomic_write
from lsr.sparse import SparseBatch, read_npz, write_npz

JOB_FILE = "job.json"
DEFAULT_SHARD_SIZE = 1024
Log = Callable[[str], None]


@dataclass
class IndexingResult:
    """What :func:`index_corpus` made and how long it took."""

    sparse_path: Path
    dense_path: Path | None
    num_docs: int
    encoded_docs: int  # encoded in this run (the rest came from shards on disk)
    encode_seconds: float
    build_seconds: float
    manifest: dict[str, Any]
    truncated: int = 0

    def summary(self) -> str:
        rate = self.encoded_docs / self.encode_seconds if self.encode_seconds > 0 else 0.0
        resumed = self.num_docs - self.encoded_docs
        line = (
            f"indexed {self.num_docs:,} docs into {self.sparse_path}: "
            f"encoded {self.encoded_docs:,} in {self.encode_seconds:.1f} s ({rate:,.1f} docs/s)"
        )
        if resumed:
            line += f", {resumed:,} resumed from shards"
        if self.truncated:
            line += f", {self.truncated:,} truncated"
        line += f", built in {self.build_seconds:.1f} s"
        if self.dense_path:
            line += f"; dense index {self.dense_path}"
        return line


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.absolute()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def default_work_dir(output: Path) -> Path:
    return output.absolute().parent / f".{output.name}.lsr-shards"


class ShardStore:
    """Shard files of one job in a work directory (see module docstring)."""

    def __init__(self, directory: Path, job: dict[str, Any], log: Log) -> None:
        self.directory = directory
        self.job = job
        directory.mkdir(parents=True, exist_ok=True)
        job_path = directory / JOB_FILE
        previous = json.loads(job_path.read_text()) if job_path.exists() else None
        if previous is not None and previous.get("job") != job:
            log(f"{directory}: shards were made from another corpus or encoder; starting over")
            for entry in directory.iterdir():
                entry.unlink() if entry.is_file() else shutil.rmtree(entry)
            previous = None
        self.stats: dict[str, dict[str, int]] = (previous or {}).get("shards", {})
        if previous is None:
            self._save_job()

    def _save_job(self) -> None:
        body = json.dumps({"job": self.job, "shards": self.stats}, indent=1)
        atomic_write(self.directory / JOB_FILE, lambda p: p.write_text(body))

    def sparse_path(self, shard: int) -> Path:
        return self.directory / f"sparse-{shard:06d}.npz"

    def dense_path(self, shard: int) -> Path:
        return self.directory / f"dense-{shard:06d}.npy"

    def done(self, shard: int, dense: bool) -> bool:
        return (
            str(shard) in self.stats
            and self.sparse_path(shard).exists()
            and (not dense or self.dense_path(shard).exists())
        )

    def save(
        self, shard: int, batch: SparseBatch, dense: np.ndarray | None, stats: dict[str, int]
    ) -> None:
        atomic_write(self.sparse_path(shard), lambda p: write_npz(batch, p))
        if dense is not None:
            atomic_write(
                self.dense_path(shard), lambda p: np.save(p, dense.astype(np.float32), False)
            )
        self.stats[str(shard)] = stats
        self._save_job()  # the shard counts only once the job file names it


def _chunks(corpus: Iterator[tuple[str, str]], size: int) -> Iterator[tuple[list[str], list[str]]]:
    ids: list[str] = []
    texts: list[str] = []
    for doc_id, text in corpus:
        ids.append(doc_id)
        texts.append(text)
        if len(ids) == size:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


def index_corpus(
    corpus: Path,
    output: Path,
    encoder_config: EncoderConfig,
    *,
    build_config: BuildConfig | None = None,
    dense_model: str | None = None,
    dense_kind: str = "flat",
    dense_output: Path | None = None,
    work_dir: Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    keep_shards: bool = False,
    progress: bool = False,
    log: Log = lambda message: None,
) -> IndexingResult:
    """Encode ``corpus`` (BEIR dir or JSONL) and build a sparse index at ``output``.

    With ``dense_model`` the same pass also embeds the documents and builds a faiss index at
    ``dense_output`` (default ``<output>.dense``), recorded in the sparse manifest.
    """
    from lsr.corpus import corpus_file, count_corpus, iter_corpus
    from lsr.encoders import encoder_manifest, load_encoder

    output = Path(output)
    source = corpus_file(Path(corpus))
    fmt.check_target(output.absolute(), overwrite)
    dense_output = Path(dense_output) if dense_output else output.with_name(output.name + ".dense")
    if dense_model is not None:
        fmt.check_target(dense_output.absolute(), overwrite)
    build_config = build_config or BuildConfig()

    idf_table = _corpus_idf(encoder_config, source)
    encoder = load_encoder(encoder_config, idf_table=idf_table)
    dense_encoder = None
    if dense_model is not None:
        from lsr.encoders.dense_encoder import DenseEncoder

        dense_encoder = DenseEncoder(dense_model)
    job = {
        "corpus": _file_identity(source),
        "document": encoder_config.document.model_dump(),
        "model": encoder_manifest(encoder)["model"],
        "dense": dense_encoder.identity() if dense_encoder else None,
        "shard_size": shard_size,
    }
    store = ShardStore(Path(work_dir) if work_dir else default_work_dir(output), job, log)
    query_files: dict[str, Path] = {}
    if encoder_config.inference_free:  # the index carries tokenizer and IDF
        files_dir = store.directory / "query-side"
        files_dir.mkdir(exist_ok=True)
        encoder.query.save(files_dir)
        query_files = {"tokenizer": files_dir / "tokenizer.json", "idf": files_dir / "idf.json"}
    total = count_corpus(source)
    encoded, encode_seconds = 0, 0.0
    n_shards = 0
    bar = tqdm(total=total, disable=not progress, unit="doc", desc="encode")
    for shard, (ids, texts) in enumerate(_chunks(iter_corpus(source), shard_size)):
        n_shards += 1
        if store.done(shard, dense_encoder is not None):
            bar.update(len(ids))
            continue
        started = time.perf_counter()
        before = encoder.document.stats.truncated
        batch = encoder.encode_document(texts, ids)
        embeddings = dense_encoder.encode_document(texts) if dense_encoder else None
        encode_seconds += time.perf_counter() - started
        encoded += len(ids)
        truncated = encoder.document.stats.truncated - before
        store.save(shard, batch, embeddings, {"docs": len(ids), "truncated": truncated})
        bar.update(len(ids))
        bar.set_postfix(docs_s=f"{encoded / max(encode_seconds, 1e-9):.1f}")
    bar.close()

    started = time.perf_counter()
    truncated = sum(s.get("truncated", 0) for s in store.stats.values())
    manifest_extra: dict[str, Any] = {
        "encoder": encoder_manifest(encoder),
        "corpus": _file_identity(source),
        "encode": {
            "docs": encoded,
            "seconds": round(encode_seconds, 3),
            "docs_per_second": round(encoded / encode_seconds, 2) if encode_seconds else None,
            "truncated": truncated,
            "resumed_docs": total - encoded,
        },
    }
    if dense_encoder is not None:
        manifest_extra["dense"] = {
            "path": os.path.relpath(dense_output.absolute(), output.absolute().parent),
            "encoder": dense_encoder.identity(),
            "kind": dense_kind,
        }
    vocab = encoder.vocab
    manifest = build(
        (read_npz(store.sparse_path(i), vocab) for i in range(n_shards)),
        output,
        vocab=vocab,
        config=build_config,
        overwrite=overwrite,
        progress=progress,
        total=total,
        extra_manifest=manifest_extra,
        extra_files=query_files,
    )
    if dense_encoder is not None:
        from lsr.index.dense_index import DenseIndex

        ids = [i.decode() for i in np.load(output / manifest["arrays"]["doc_ids"]["file"])]
        embeddings = np.concatenate([np.load(store.dense_path(i)) for i in range(n_shards)])
        DenseIndex.build(
            embeddings,
            ids,
            dense_output,
            kind=dense_kind,
            overwrite=overwrite,
            extra_manifest={"encoder": dense_encoder.identity(), "corpus": _file_identity(source)},
        )
    build_seconds = time.perf_counter() - started
    if not keep_shards:
        shutil.rmtree(store.directory, ignore_errors=True)
    return IndexingResult(
        sparse_path=output,
        dense_path=dense_output if dense_encoder else None,
        num_docs=int(manifest["num_docs"]),
        encoded_docs=encoded,
        encode_seconds=encode_seconds,
        build_seconds=build_seconds,
        manifest=manifest,
        truncated=truncated,
    )


def _corpus_idf(config: EncoderConfig, corpus: Path) -> Any:
    """Inference-free queries without a given idf.json: the IDF table of ``corpus``."""
    if not config.inference_free or config.idf is not None:
        return None
    from lsr.corpus import iter_corpus
    from lsr.encoders import compute_idf

    return compute_idf(config, (text for _, text in iter_corpus(corpus)))
