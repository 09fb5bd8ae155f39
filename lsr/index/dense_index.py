"""DenseIndex: inner-product search over dense vectors with faiss (exact flat, or HNSW).

An index is a directory like the sparse index's (:mod:`lsr.index.format`, written atomically,
checksummed): ``manifest.json`` (format ``lsr-dense-index``), ``index.faiss`` (the faiss index,
``faiss.write_index``) and ``doc_ids.npy`` (fixed-width UTF-8 bytes; faiss label i is
``doc_ids[i]``). Scores are inner products, so unit-norm vectors (:class:`DenseEncoder`) give
cosine similarity.

Ranking: higher score first, equal scores by lower document position (input order). ``flat``
is exact (faiss keeps the lower positions among ties at the k-th score); ``hnsw`` is approximate,
its recall set by ``ef_search``.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsr import __version__
from lsr.errors import IndexFormatError, InputError
from lsr.extras import require
from lsr.index import format as fmt
from lsr.types import Hit, check_k

require("dense search (faiss)", "faiss")
import faiss  # noqa: E402  (after the check, so a missing extra is one clear line)

FORMAT_NAME = "lsr-dense-index"
FORMAT_VERSION = 1
KINDS = ("flat", "hnsw")
INDEX_FILE = "index.faiss"


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Run faiss with ``threads`` OpenMP threads for the call.

    OpenMP's thread count is a per-thread setting (libgomp keeps one per calling thread), so a
    caller's choice never reaches searches running in other threads; it is restored afterwards
    and left alone when it already matches.
    """
    previous = faiss.omp_get_max_threads()
    if threads is None or int(threads) == previous:
        yield
        return
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _as_matrix(vectors: Any, dim: int | None, what: str) -> np.ndarray:
    """``vectors`` as C-contiguous float32 ``[n, dim]``, checked finite (and ``dim`` wide)."""
    try:
        matrix = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} are not a numeric array ({exc})") from None
    if matrix.dtype.kind not in "fiu" or matrix.dtype == np.bool_:
        raise InputError(f"{what} must be numbers, got dtype {matrix.dtype}")
    if matrix.ndim != 2:
        raise InputError(f"{what} must be a 2-D array [n, dim], got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise InputError(f"{what} have dimension {matrix.shape[1]}, the index has {dim}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise InputError(f"{what}: row {bad} has NaN or infinite values")
    return matrix


def _check_layout(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    try:
        n_docs, dim, kind = int(manifest["num_docs"]), int(manifest["dim"]), manifest["kind"]
        manifest["files"]["index"]["file"]
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: manifest lacks or garbles {exc}") from None
    if kind not in KINDS:
        raise IndexFormatError(f"{path}: unknown dense index kind {kind!r}")
    ids = arrays.get("doc_ids")
    if ids is None or ids.dtype.kind != "S" or ids.shape != (n_docs,):
        raise IndexFormatError(f"{path}: doc_ids do not match the manifest ({n_docs} docs)")
    if dim < 1:
        raise IndexFormatError(f"{path}: dimension {dim} is not positive")


class DenseIndex:
    """An immutable faiss index over dense vectors, scored by inner product.

    ``search`` / ``batch_search`` return :class:`~lsr.types.Hit` lists: highest score
    first, equal scores by lower document position; ``flat`` returns the exact top-k of
    ``Q @ D.T`` (up to float32 rounding), ``hnsw`` an approximation of it.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], index: Any, doc_ids: np.ndarray
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.dim = int(manifest["dim"])
        self.num_docs = int(manifest["num_docs"])
        self.ef_search = int(manifest["hnsw"]["ef_search"]) if self.kind == "hnsw" else None
        self._index = index
        self._ids = doc_ids

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        ids: Sequence[str],
        path: str | Path,
        *,
        kind: str = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        overwrite: bool = False,
        extra_manifest: dict[str, Any] | None = None,
    ) -> DenseIndex:
        """Index ``embeddings`` (``[n, dim]``, row i is document ``ids[i]``) at ``path``; open it.

        ``kind``: "flat" (exact, brute force) or "hnsw" (graph; ``hnsw_m`` links per node,
        ``ef_construction`` and the default ``ef_search`` candidate lists). ``extra_manifest`` is
        merged into the manifest (e.g. ``{"encoder": DenseEncoder.identity()}``). The directory
        is written atomically; an existing one is replaced only with ``overwrite=True``.
        """
        started = time.perf_counter()
        if kind not in KINDS:
            raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        for name, value in (
            ("hnsw_m", hnsw_m),
            ("ef_construction", ef_construction),
            ("ef_search", ef_search),
        ):
            check_k(value, name)
        matrix = _as_matrix(embeddings, None, "embeddings")
        n_docs, dim = matrix.shape
        if dim < 1:
            raise InputError("embeddings have dimension 0")
        if isinstance(ids, str):
            raise InputError("ids must be a list of strings, not one string")
        ids = list(ids)
        if len(ids) != n_docs:
            raise InputError(f"{len(ids)} ids for {n_docs} embeddings")
        if not all(isinstance(i, str) for i in ids):
            raise InputError("ids must be strings")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise InputError(f"duplicate document id {dup!r}")
        encoded = [i.encode("utf-8") for i in ids]
        doc_ids = np.array(encoded, dtype=f"S{max([1, *map(len, encoded)])}")

        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
            hnsw: dict[str, Any] | None = None
        else:
            index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.hnsw.efSearch = int(ef_search)
            hnsw = {
                "m": int(hnsw_m),
                "ef_construction": int(ef_construction),
                "ef_search": int(ef_search),
            }
        if n_docs:
            index.add(matrix)

        manifest: dict[str, Any] = {
            "lsr_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kind": kind,
            "metric": "inner_product",
            "dim": int(dim),
            "num_docs": int(n_docs),
            "hnsw": hnsw,
            "build": {
                "faiss": faiss.__version__,
                "python": platform.python_version(),
            },
            "arrays": {},
            "files": {},
        }
        if extra_manifest:
            manifest.update(extra_manifest)
        with fmt.staged_directory(path, overwrite=overwrite) as staging:
            manifest["arrays"]["doc_ids"] = fmt.save_array(staging, "doc_ids", doc_ids)
            faiss.write_index(index, str(staging / INDEX_FILE))
            manifest["files"]["index"] = {"file": INDEX_FILE}
            manifest["build"]["seconds"] = round(time.perf_counter() - started, 3)
            fmt.finalize_manifest(
                staging, manifest, format_name=FORMAT_NAME, format_version=FORMAT_VERSION
            )
        return cls.open(path, verify=False)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> DenseIndex:
        """Open an index; ``verify`` checks every file's SHA-256 first (sizes are always checked).

        The doc ids are memory-mapped; the faiss index is read into memory.
        """
        path = Path(path)
        manifest, arrays = fmt.open_arrays(
            path, verify=verify, format_name=FORMAT_NAME, format_version=FORMAT_VERSION
        )
        _check_layout(path, manifest, arrays)
        index_path = path / manifest["files"]["index"]["file"]
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:200]
            raise IndexFormatError(f"{index_path}: unreadable faiss index ({detail})") from None
        expected = faiss.IndexFlatIP if manifest["kind"] == "flat" else faiss.IndexHNSWFlat
        if (
            not isinstance(index, expected)
            or index.d != int(manifest["dim"])
            or index.ntotal != int(manifest["num_docs"])
            or index.metric_type != faiss.METRIC_INNER_PRODUCT
        ):
            raise IndexFormatError(
                f"{index_path}: faiss index ({type(index).__name__}, d={index.d}, "
                f"n={index.ntotal}) does not match the manifest"
            )
        if manifest["kind"] == "hnsw":
            index.hnsw.efSearch = int(manifest["hnsw"]["ef_search"])
        return cls(path, manifest, index, arrays["doc_ids"])

    # -- info --------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of all index files (faiss index and doc ids; not the manifest)."""
        entries = list(self.manifest["arrays"].values()) + list(self.manifest["files"].values())
        return sum(int(e["bytes"]) for e in entries)

    def doc_id(self, position: int) -> str:
        return self._ids[position].decode("utf-8")

    def __len__(self) -> int:
        return self.num_docs

    def __repr__(self) -> str:
        return (
            f"DenseIndex({str(self.path)!r}, kind={self.kind!r}, docs={self.num_docs}, "
            f"dim={self.dim})"
        )

    # -- queries -----------------------------------------------------------------------------
    def search_arrays(
        self,
        queries: np.ndarray,
        k: int,
        *,
        threads: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k for a ``[n, dim]`` matrix: (doc positions int64[n, k] padded -1, scores, counts).

        Rows are ranked by score, equal scores by lower position. ``ef_search`` overrides the
        HNSW candidate list for this call (ignored for flat).
        """
        k = check_k(k)
        if threads is not None:
            check_k(threads, "threads")
        q = _as_matrix(queries, self.dim, "query vectors")
        n = q.shape[0]
        k_eff = int(min(k, self.num_docs))
        if n == 0 or k_eff == 0:
            return (
                np.full((n, k_eff), -1, dtype=np.int64),
                np.zeros((n, k_eff), dtype=np.float32),
                np.zeros(n, dtype=np.int64),
            )
        params = None
        if ef_search is not None:
            check_k(ef_search, "ef_search")
        if self.kind == "hnsw" and ef_search is not None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(ef_search)
        with _faiss_threads(threads):
            scores, labels = self._index.search(q, k_eff, params=params)
        labels = labels.astype(np.int64, copy=False)
        valid = labels >= 0
        # rank: valid first, higher score first, lower position first (faiss heaps reverse ties)
        order = np.lexsort((labels, -scores, ~valid), axis=1)
        labels = np.take_along_axis(labels, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        counts = valid.sum(axis=1).astype(np.int64)
        scores[labels < 0] = 0
        return labels, scores, counts

    def _hits(self, labels: np.ndarray, scores: np.ndarray, count: int) -> list[Hit]:
        ids = self._ids
        return [
            Hit(ids[d].decode("utf-8"), float(s))
            for d, s in zip(labels[:count].tolist(), scores[:count].tolist(), strict=True)
        ]

    def search(self, vector: np.ndarray, k: int = 10, *, ef_search: int | None = None) -> list[Hit]:
        """Top-k hits for one query vector (``[dim]`` or ``[1, dim]``)."""
        q = np.asarray(vector)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[0] != 1:
            raise InputError(f"search takes one vector, got shape {q.shape}; use batch_search")
        labels, scores, counts = self.search_arrays(q, k, ef_search=ef_search)
        return self._hits(labels[0], scores[0], int(counts[0]))

    def batch_search(
        self,
        matrix: np.ndarray,
        k: int = 10,
        *,
        threads: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each row of ``[n, dim]``, in parallel over ``threads`` (default: all)."""
        labels, scores, counts = self.search_arrays(matrix, k, threads=threads, ef_search=ef_search)
        return [self._hits(labels[i], scores[i], int(counts[i])) for i in range(len(counts))]
