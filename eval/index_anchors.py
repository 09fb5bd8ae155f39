"""Adapters for the index engines lsr is measured against: Seismic, PISA and BMP.

Each adapter builds its engine's index from one of our integer-weight document batches
(``SparseBatch``: ids, term strings from the vocabulary, integer weights stored as float32) into a
directory under ``eval/work``, records ``build_s`` and ``index_bytes``, and answers one query at a
time with ``search(query, k, **knobs) -> list[doc_id]`` (``query``: ``{token: weight}``).
``batch_search(queries, k, threads, **knobs)`` runs many queries on several cores where the
engine has a multi-threaded batch call (Seismic, PISA); BMP's Python binding has none.

The engines are optional (``pip install -e '.[anchors]'``): importing this module needs none of
them; each adapter imports its engine when it is built.

Engine notes (learned the hard way):
  Seismic  ``SeismicDataset.add_documents_by_id`` takes the CSR arrays directly; components are
           then addressed as the decimal string of their id ("42"), so queries are translated.
           Approximate by design: ``query_cut`` (top query terms kept) and ``heap_factor``.
  PISA     pyterrier-pisa's ``_pisathon`` extension, loaded on its own (no pyterrier, no Java)
           once ``libtbb.so.2`` (PyPI ``tbb``) is loaded. We write PISA's binary collection
           (``inv.docs`` / ``inv.freqs`` / ``inv.sizes`` + lexicons) straight from the CSC arrays
           and let ``prepare_index`` compress it and build block-max data (the timed build).
           Scorer ``quantized``: score = Σ impact x query weight; the binding turns a query
           weight w into w repeats of the term, so weights must be integers (ours are).
  BMP      ``bmp.Indexer`` per document, ``bmp.Searcher.search(query, k, alpha, beta)``.
           BMP quantises query weights itself (to a few bits: scores come back rescaled) and
           sums into 16-bit scores, so 255-level impacts overflow on long queries: build with
           fewer ``levels`` (re-quantised from the collection maximum) and measure recall against
           the exact top 10 of the 255-level vectors. ``alpha`` < 1 terminates early on block
           bounds, ``beta`` < 1 drops the lightest query terms.
"""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsr.sparse import SparseBatch


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Anchor:
    """Common fields: ``path`` (index directory), ``build_s``, ``index_bytes``, ``postings``."""

    name = "anchor"
    threaded_batch = False

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.build_s = float("nan")
        self.index_bytes = 0
        self.postings = 0

    @property
    def bytes_per_posting(self) -> float:
        return self.index_bytes / max(1, self.postings)

    def info(self) -> dict[str, Any]:
        return {
            "build_s": self.build_s,
            "index_bytes": self.index_bytes,
            "bytes_per_posting": self.bytes_per_posting,
        }

    def _fresh_dir(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)


# -- Seismic ------------------------------------------------------------------------------------
class SeismicAnchor(Anchor):
    """Seismic (pyseismic-lsr): pruned, clustered posting lists with summaries; approximate.

    Build knobs: ``n_postings`` (average postings kept per list), ``centroid_fraction``,
    ``summary_energy``, ``max_fraction``, ``min_cluster_size``, ``doc_cut``. Search knobs:
    ``query_cut``, ``heap_factor``, ``sorted``.
    """

    name = "seismic"
    threaded_batch = True

    def __init__(
        self,
        path: str | Path,
        *,
        n_postings: int = 3500,
        centroid_fraction: float = 0.1,
        summary_energy: float = 0.4,
        max_fraction: float = 1.5,
        min_cluster_size: int = 2,
        doc_cut: int = 15,
        build_threads: int = 0,
    ):
        super().__init__(path)
        self.build_args = {
            "n_postings": n_postings,
            "centroid_fraction": centroid_fraction,
            "min_cluster_size": min_cluster_size,
            "summary_energy": summary_energy,
            "max_fraction": max_fraction,
            "doc_cut": doc_cut,
        }
        self.build_threads = build_threads
        self.index: Any = None
        self._tok: dict[str, str] = {}

    def build(self, docs: SparseBatch) -> SeismicAnchor:
        import seismic

        self._fresh_dir()
        m = docs.matrix.tocsr()
        m.sort_indices()
        start = time.perf_counter()
        dataset = seismic.SeismicDataset(dim=m.shape[1])
        dataset.add_documents_by_id(
            list(docs.ids),
            m.indices.astype(np.int64),
            m.data.astype(np.float32),
            m.indptr.astype(np.int64),
        )
        self.index = seismic.SeismicIndex.build_from_dataset(
            dataset, **self.build_args, num_threads=self.build_threads
        )
        self.build_s = time.perf_counter() - start
        self.index.save(str(self.path / "index"))  # Seismic appends ".index.seismic"
        return self._attach(docs)

    def open(self, docs: SparseBatch) -> SeismicAnchor:
        """The index :meth:`build` saved under this path for ``docs``, or a fresh build when
        none is saved (a 5M-document guideline build takes over 10 minutes)."""
        import seismic

        saved = self.path / "index.index.seismic"
        if not saved.exists():
            return self.build(docs)
        self.index = seismic.SeismicIndex.load(str(saved))
        return self._attach(docs)

    def _attach(self, docs: SparseBatch) -> SeismicAnchor:
        """What searching needs besides the index: its size, the token map, Seismic's dtype."""
        import seismic

        self.index_bytes = dir_bytes(self.path)
        self.postings = int(docs.matrix.nnz)
        self._tok = {t: str(i) for i, t in enumerate(docs.vocab.tokens)}
        self._str = seismic.get_seismic_string()
        return self

    def _arrays(self, query: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        terms = [self._tok[t] for t in query]
        return (
            np.array(terms, dtype=self._str),
            np.array(list(query.values()), dtype=np.float32),
        )

    def search(
        self,
        query: Mapping[str, float],
        k: int,
        *,
        query_cut: int = 10,
        heap_factor: float = 0.8,
        sorted: bool = True,
    ) -> list[str]:
        comps, vals = self._arrays(query)
        hits = self.index.search("q", comps, vals, k, query_cut, heap_factor, 0, sorted)
        return [h[2] for h in hits]

    def batch_search(
        self,
        queries: Sequence[Mapping[str, float]],
        k: int,
        threads: int = 0,
        *,
        query_cut: int = 10,
        heap_factor: float = 0.8,
        sorted: bool = True,
    ) -> list[list[str]]:
        arrays = [self._arrays(q) for q in queries]
        ids = np.array([str(i) for i in range(len(queries))], dtype=self._str)
        out = self.index.batch_search(
            ids,
            [a[0] for a in arrays],
            [a[1] for a in arrays],
            k,
            query_cut,
            heap_factor,
            0,
            sorted,
            threads,
        )
        # the outer list is not in query order on several threads: each hit names its query
        ranked: list[list[str]] = [[] for _ in queries]
        for hits in out:
            for h in hits:
                ranked[int(h[0])].append(h[2])
        return ranked


# -- PISA ---------------------------------------------------------------------------------------
_PISATHON: Any = None


def load_pisathon() -> Any:
    """pyterrier-pisa's C++ extension without importing pyterrier (no Java, no pandas)."""
    global _PISATHON
    if _PISATHON is not None:
        return _PISATHON
    prefix = Path(sys.prefix)
    for lib in sorted((prefix / "lib").glob("libtbb.so*")) + sorted(
        (prefix / "lib").glob("libtbbmalloc.so*")
    ):
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    spec = importlib.util.find_spec("pyterrier_pisa")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyterrier-pisa is not installed (pip install -e '.[anchors]')")
    folder = Path(next(iter(spec.submodule_search_locations)))
    so = next(folder.glob("_pisathon*.so"))
    ext_spec = importlib.util.spec_from_file_location("_pisathon", so)
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    _PISATHON = module
    return module


class PisaAnchor(Anchor):
    """PISA (pyterrier-pisa's ``_pisathon``): exact dynamic pruning over a compressed index.

    Build knobs: ``encoding`` (posting codec, default block_simdbp), ``block_size`` (postings per
    block-max entry, fixed blocks). Search knob: ``algorithm`` (maxscore, block_max_maxscore,
    block_max_wand, wand, ranked_or, ...).
    """

    name = "pisa"
    threaded_batch = True

    def __init__(self, path: str | Path, *, encoding: str = "block_simdbp", block_size: int = 64):
        super().__init__(path)
        self.encoding = encoding
        self.block_size = block_size
        self.ctx: Any = None

    def build(self, docs: SparseBatch) -> PisaAnchor:
        pis = load_pisathon()
        self._fresh_dir()
        p = self.path
        start = time.perf_counter()
        csc = docs.matrix.tocsc()
        csc.sort_indices()
        df = np.diff(csc.indptr)
        tokens = docs.vocab.tokens
        used = np.flatnonzero(df > 0)
        order = sorted(used.tolist(), key=lambda t: tokens[t].encode("utf-8"))
        n_docs = len(docs)
        with (p / "inv.docs").open("wb") as f_docs, (p / "inv.freqs").open("wb") as f_freqs:
            f_docs.write(np.array([1, n_docs], dtype=np.uint32).tobytes())
            for t in order:
                a, b = csc.indptr[t], csc.indptr[t + 1]
                head = np.array([b - a], dtype=np.uint32).tobytes()
                f_docs.write(head + csc.indices[a:b].astype(np.uint32).tobytes())
                f_freqs.write(head + csc.data[a:b].astype(np.uint32).tobytes())
        lengths = np.asarray(docs.matrix.sum(axis=1)).ravel().astype(np.uint32)
        (p / "inv.sizes").write_bytes(
            np.array([n_docs], dtype=np.uint32).tobytes() + lengths.tobytes()
        )
        (p / "fwd.documents").write_text("".join(f"{d}\n" for d in docs.ids))
        (p / "fwd.terms").write_text("".join(f"{tokens[t]}\n" for t in order))
        pis.build_binlex(str(p / "fwd.documents"), str(p / "fwd.doclex"))
        pis.build_binlex(str(p / "fwd.terms"), str(p / "fwd.termlex"))
        self._prepare()
        self.build_s = time.perf_counter() - start
        kept = [f for f in p.iterdir() if f.name.startswith("quantized.") or "lex" in f.name]
        self.index_bytes = sum(f.stat().st_size for f in kept)
        self.postings = int(csc.nnz)
        return self

    def _prepare(self) -> None:
        pis = load_pisathon()
        self.ctx = pis.RetrievalContext()
        pis.prepare_index(
            self.ctx, str(self.path), self.encoding, "quantized", "", block_size=self.block_size
        )

    @staticmethod
    def _weights(query: Mapping[str, float]) -> dict[str, float]:
        return {t: float(round(w)) for t, w in query.items() if w >= 1}

    def _retrieve(self, inp: list, k: int, algorithm: str, threads: int) -> tuple:
        n = len(inp) * k
        qidx = np.empty(n, dtype=np.int32)
        docnos = np.empty(n, dtype=object)
        ranks = np.empty(n, dtype=np.int32)
        scores = np.empty(n, dtype=np.float32)
        size = _PISATHON.retrieve(
            self.ctx,
            algorithm,
            inp,
            k=k,
            threads=threads,
            pretokenised=True,
            query_weighted=1,
            result_qidxs=qidx,
            result_docnos=docnos,
            result_ranks=ranks,
            result_scores=scores,
        )
        return qidx[:size], docnos[:size], ranks[:size]

    def search(
        self, query: Mapping[str, float], k: int, *, algorithm: str = "maxscore"
    ) -> list[str]:
        _, docnos, _ = self._retrieve([(0, self._weights(query))], k, algorithm, 1)
        return list(docnos)

    def batch_search(
        self,
        queries: Sequence[Mapping[str, float]],
        k: int,
        threads: int = 2,
        *,
        algorithm: str = "maxscore",
    ) -> list[list[str]]:
        inp = [(i, self._weights(q)) for i, q in enumerate(queries)]
        qidx, docnos, ranks = self._retrieve(inp, k, algorithm, max(1, threads))
        out: list[list[tuple[int, str]]] = [[] for _ in queries]
        for i, d, r in zip(qidx, docnos, ranks, strict=True):
            out[i].append((r, d))
        return [[d for _, d in sorted(rows)] for rows in out]


# -- BMP ----------------------------------------------------------------------------------------
def requantize(docs: SparseBatch, levels: int) -> SparseBatch:
    """Integer weights 1..levels, linear in the batch's current weights (by their maximum)."""
    m = docs.matrix.copy()
    m.data = np.maximum(1.0, np.rint(m.data / m.data.max() * levels)).astype(np.float32)
    return SparseBatch(docs.ids, m, docs.vocab)


class BmpAnchor(Anchor):
    """BMP (Block-Max Pruning, ``bmp`` on PyPI): block-at-a-time over fixed doc-id blocks.

    Build knobs: ``bsize`` (documents per block), ``compress_range``, ``levels`` (impacts are
    re-quantised to 1..levels before indexing: BMP's 16-bit scores overflow on 255 levels).
    Search knobs: ``alpha`` (block termination, 1 = safe), ``beta`` (query term pruning, 1 = all).
    """

    name = "bmp"
    threaded_batch = False

    def __init__(
        self,
        path: str | Path,
        *,
        bsize: int = 32,
        compress_range: bool = False,
        levels: int | None = 85,
    ):
        super().__init__(path)
        self.bsize = bsize
        self.compress_range = compress_range
        self.levels = levels
        self.searcher: Any = None
        self._indexed: set[str] = set()

    def build(self, docs: SparseBatch) -> BmpAnchor:
        import bmp

        self._fresh_dir()
        start = time.perf_counter()
        if self.levels is not None:
            docs = requantize(docs, self.levels)
        m = docs.matrix.tocsr()
        tokens = np.asarray(docs.vocab.tokens, dtype=object)
        file = str(self.path / "index.bmp")
        indexer = bmp.Indexer(file, bsize=self.bsize, compress_range=self.compress_range)
        data = m.data.astype(np.int64)
        for i, doc_id in enumerate(docs.ids):
            a, b = m.indptr[i], m.indptr[i + 1]
            indexer.add_document(
                doc_id, dict(zip(tokens[m.indices[a:b]].tolist(), data[a:b].tolist(), strict=True))
            )
        indexer.finish()
        self.searcher = bmp.Searcher(file)
        self.build_s = time.perf_counter() - start
        self.index_bytes = dir_bytes(self.path)
        self.postings = int(m.nnz)
        self._indexed = set(tokens[np.unique(m.indices)].tolist())
        return self

    def search(
        self, query: Mapping[str, float], k: int, *, alpha: float = 1.0, beta: float = 1.0
    ) -> list[str]:
        # bmp 0.2.8 panics on a query term no document has (synthetic queries have a few)
        query = {t: w for t, w in query.items() if t in self._indexed}
        if not query:
            return []
        docnos, _ = self.searcher.search(query, k=k, alpha=alpha, beta=beta)
        return list(docnos)
