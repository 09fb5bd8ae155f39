"""Build an index directory from streamed SparseBatches.

Memory: the input is held once, doc-major, as compact term ids (uint16 for a tokenizer
vocabulary) and float32 weights (the uint8 scale needs the largest weight of the collection); it
is then encoded, turned term-major and grouped into block entries, freeing each stage as the next
is made. Peak memory is about 3x the finished uint8 index (measured in tests/test_build_memory.py).
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from lsr import __version__
from lsr.errors import InputError
from lsr.index import format as fmt
from lsr.index import kernels, reorder
from lsr.index.quantization import Codec, Quantization
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary


class BuildConfig(BaseModel):
    """Build parameters (shared by the Python API and `lsr index build`)."""

    quantization: Quantization = Field("uint8", description="how weights are stored")
    block_size: int = Field(
        128, ge=1, le=256, description="documents per doc-id block (pruning unit)"
    )
    doc_top_k: int | None = Field(
        None, ge=1, description="keep only each document's k heaviest terms"
    )
    term_top_n: int | None = Field(
        None, ge=1, description="keep only each term's n heaviest postings"
    )
    reorder: Literal["none", "bp"] = Field(
        "none",
        description="document-id order: 'bp' clusters documents sharing terms (recursive graph"
        " bisection) for fewer block entries and tighter block bounds; results carry external"
        " ids, so only the order of exactly tied scores (internal position) can change",
    )
    block_rows: float | None = Field(
        None,
        gt=0,
        le=1,
        description="store a full row of block maxima and posting starts for each term found in"
        " at least this share of the doc-id blocks (0.5: about 0.5 bytes per posting more on"
        " real text, blockmax and approximate search 1.1-1.3x faster); None: no rows",
    )


def _top_k_per_row(batch: SparseBatch, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's k heaviest terms (ties: lower term id), rows kept sorted by term id."""
    m = batch.matrix
    lengths = np.diff(m.indptr)
    if lengths.size == 0 or lengths.max() <= k:
        return m.indices, m.data, lengths
    rows = np.repeat(np.arange(len(lengths)), lengths)
    order = np.lexsort((m.indices, -m.data, rows))  # by row, weight desc, term asc
    rank = np.arange(len(order)) - np.repeat(m.indptr[:-1], lengths)
    kept = np.sort(order[rank < k])  # back to row / term order
    return m.indices[kept], m.data[kept], np.minimum(lengths, k)


def term_maxima(term_entry_ptr: np.ndarray, entry_max: np.ndarray) -> np.ndarray:
    """Each term's largest weight code (0 for a term without postings)."""
    term_max = np.zeros(len(term_entry_ptr) - 1, dtype=entry_max.dtype)
    nonempty = np.diff(term_entry_ptr) > 0
    if entry_max.size:
        term_max[nonempty] = np.maximum.reduceat(entry_max, term_entry_ptr[:-1][nonempty])
    return term_max


def _postings_arrays(
    entries: tuple[np.ndarray, ...], term_ptr: np.ndarray, post_codes: np.ndarray
) -> dict[str, np.ndarray]:
    """The posting arrays by their stored names, from :func:`kernels.encode_blocks`' output
    (plus each term's maximum code)."""
    term_entry_ptr, term_far_ptr, entry_gap, far_gap, entry_max, entry_count, post_offsets = entries
    return {
        "term_entry_ptr": term_entry_ptr,
        "term_far_ptr": term_far_ptr,
        "entry_gap": entry_gap,
        "far_gap": far_gap,
        "entry_max": entry_max,
        "term_post_ptr": term_ptr,
        "entry_count": entry_count,
        "post_offsets": post_offsets,
        "post_codes": post_codes,
        "term_max": term_maxima(term_entry_ptr, entry_max),
    }


def in_memory_postings(
    indptr: np.ndarray, terms: np.ndarray, codes: np.ndarray, n_terms: int, block_size: int
) -> kernels.IndexArrays:
    """The kernels' view of a small doc-major CSR, built in memory (no files, no pruning)."""
    n_docs = len(indptr) - 1
    term_ptr, post_docs, post_codes = kernels.transpose_to_term_major(indptr, terms, codes, n_terms)
    n_blocks = -(-n_docs // block_size)
    entries = kernels.encode_blocks(term_ptr, post_docs, post_codes, block_size)
    return kernels.index_arrays(
        n_docs, n_blocks, block_size,
        _postings_arrays(entries, term_ptr, post_codes),
    )  # fmt: skip


def build(
    batches: Iterable[SparseBatch],
    path: str | Path,
    *,
    vocab: Vocabulary,
    config: BuildConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
    total: int | None = None,
    extra_manifest: dict[str, Any] | None = None,
    extra_files: dict[str, Path] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
    codec: Codec | None = None,
) -> dict[str, Any]:
    """Build the index of ``batches`` at ``path`` (atomically) and return its manifest.

    ``extra_files`` maps a manifest key to a file copied into the index (checksummed with the
    rest): the query side's tokenizer and IDF table live there, so the index answers text queries
    on its own. ``extra_arrays`` are saved and checksummed beside the index arrays (a live
    collection's segments keep forward rows and metadata columns there). ``codec``: a fixed
    weight coding instead of one fitted to this input (``config.quantization`` is then ignored);
    segments of one collection share it, so their scores compare exactly.
    """
    config = config or BuildConfig()
    path = Path(path)
    fmt.check_target(path.absolute(), overwrite)
    started = time.perf_counter()

    ids: list[str] = []
    seen: set[str] = set()
    term_chunks: list[np.ndarray] = []
    weight_chunks: list[np.ndarray] = []
    length_chunks: list[np.ndarray] = []
    max_weight = 0.0
    # a tokenizer vocabulary (frozen, < 65,536 tokens) lets term ids travel as uint16
    stream_dtype = np.uint16 if vocab.frozen and len(vocab) <= np.iinfo(np.uint16).max else np.int32
    with tqdm(total=total, unit="doc", desc="reading", disable=not progress, leave=False) as bar:
        for batch in batches:
            if batch.vocab is not vocab and batch.vocab != vocab:
                batch = batch.remap(vocab)
            for doc_id in batch.ids:
                if doc_id in seen:
                    raise InputError(f"duplicate document id {doc_id!r}")
                seen.add(doc_id)
            ids.extend(batch.ids)
            if config.doc_top_k is not None:
                terms, weights, lengths = _top_k_per_row(batch, config.doc_top_k)
            else:
                terms, weights, lengths = (
                    batch.matrix.indices,
                    batch.matrix.data,
                    np.diff(batch.matrix.indptr),
                )
            if weights.size:
                if not np.all(np.isfinite(weights)) or weights.min() < 0:
                    raise InputError("document weights must be finite and >= 0")
                max_weight = max(max_weight, float(weights.max()))
                if not weights.all():  # explicit zeros in a CSR input are not postings
                    rows = np.repeat(np.arange(len(lengths)), lengths)
                    nonzero = weights != 0
                    terms, weights = terms[nonzero], weights[nonzero]
                    lengths = np.bincount(rows[nonzero], minlength=len(lengths))
            term_chunks.append(np.asarray(terms, dtype=stream_dtype))
            weight_chunks.append(np.asarray(weights, dtype=np.float32))
            length_chunks.append(np.asarray(lengths, dtype=np.int64))
            bar.update(len(batch))
    if not ids:
        raise InputError("empty corpus: no documents to index")
    del seen

    if codec is None:
        codec = Codec.fit(config.quantization, max_weight)
    elif codec.kind == "uint8" and max_weight > codec.scale * 255.5:
        raise InputError(f"weight {max_weight} exceeds the fixed 8-bit range ({codec.scale * 255})")
    n_docs, n_terms = len(ids), len(vocab)
    # doc-major, compact: encode chunk by chunk and drop the float32 copy as we go
    lengths = np.concatenate(length_chunks)
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    term_dtype = np.uint16 if n_terms <= np.iinfo(np.uint16).max else np.int32
    terms = np.empty(int(indptr[-1]), dtype=term_dtype)
    codes = np.empty(int(indptr[-1]), dtype=codec.dtype)
    pos = 0
    while term_chunks:
        t, w = term_chunks.pop(0), weight_chunks.pop(0)
        terms[pos : pos + len(t)] = t
        codes[pos : pos + len(t)] = codec.encode(w)
        pos += len(t)

    if config.reorder == "bp":
        if extra_arrays:  # they hold rows in input order, which reordering would break
            raise InputError("reorder='bp' cannot be combined with extra_arrays")
        order = reorder.bp_order(indptr, terms, n_terms, align=config.block_size, progress=progress)
        indptr, terms, codes = reorder.permute_rows(indptr, terms, codes, order)
        ids = [ids[i] for i in order]
    term_ptr, post_docs, post_codes = kernels.transpose_to_term_major(indptr, terms, codes, n_terms)
    del terms, codes, indptr
    if config.term_top_n is not None:
        term_ptr, post_docs, post_codes = kernels.prune_terms_top_n(
            term_ptr, post_docs, post_codes, config.term_top_n
        )
    n_blocks = -(-n_docs // config.block_size)
    entries = kernels.encode_blocks(term_ptr, post_docs, post_codes, config.block_size)
    del post_docs
    postings = _postings_arrays(entries, term_ptr, post_codes)
    nonempty = np.diff(postings["term_entry_ptr"]) > 0
    rows: dict[str, np.ndarray] = {}
    if config.block_rows is not None:
        ix = kernels.index_arrays(n_docs, n_blocks, config.block_size, postings)
        built = kernels.block_rows(ix, kernels.rows_entry_floor(n_blocks, config.block_rows))
        rows = dict(zip(kernels.OPTIONAL_ARRAYS, built, strict=True))
    doc_id_bytes = [i.encode("utf-8") for i in ids]
    doc_ids = np.array(doc_id_bytes, dtype=f"S{max(1, max(map(len, doc_id_bytes)))}")

    n_postings = int(post_codes.shape[0])
    manifest: dict[str, Any] = {
        "lsr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "num_docs": n_docs,
        "num_postings": n_postings,
        "num_entries": int(postings["entry_gap"].shape[0]),
        "num_far_gaps": int(postings["far_gap"].shape[0]),
        "num_blocks": n_blocks,
        "num_nonempty_terms": int(nonempty.sum()),
        "vocab": {"size": n_terms, "sha256": vocab.sha256, "source": vocab.source},
        "quantization": dict(codec.to_json(), max_weight=max_weight),
        "build": dict(
            config.model_dump(), quantization=codec.kind, python=platform.python_version()
        ),
        "arrays": {},
        "files": {},
    }
    if rows:
        manifest["num_block_rows"] = int(rows["row_max"].shape[0])
    if extra_manifest:
        manifest.update(extra_manifest)
    with fmt.staged_directory(path, overwrite=overwrite) as staging:
        arrays = {**postings, "doc_ids": doc_ids, **rows}
        for name, array in {**arrays, **(extra_arrays or {})}.items():
            manifest["arrays"][name] = fmt.save_array(staging, name, array)
        vocab.save(staging / "vocab.json")
        manifest["files"]["vocab"] = {"file": "vocab.json"}
        for key, source in (extra_files or {}).items():
            source = Path(source)
            if key in manifest["files"] or (staging / source.name).exists():
                raise ValueError(f"extra file {key!r} ({source.name}) clashes with an index file")
            shutil.copyfile(source, staging / source.name)
            manifest["files"][key] = {"file": source.name}
        manifest["build"]["seconds"] = round(time.perf_counter() - started, 3)
        version = fmt.ROWS_FORMAT_VERSION if rows else fmt.FORMAT_VERSION
        manifest = fmt.finalize_manifest(staging, manifest, format_version=version)
    return manifest
