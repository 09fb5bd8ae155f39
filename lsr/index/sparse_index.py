"""SparseIndex: build, open and query a sparse index directory (search, batch_search)."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numba
import numpy as np

from lsr.errors import InputError, UnknownTermError
from lsr.index import format as fmt
from lsr.index import kernels
from lsr.index.builder import BuildConfig, build
from lsr.index.quantization import Codec
from lsr.sparse import SparseBatch, TermWeights
from lsr.types import Hit, check_k
from lsr.vocab import Vocabulary

QueryLike = Mapping[str, float] | TermWeights | SparseBatch
ALGORITHMS = ("exhaustive", "maxscore", "blockmax", "approximate")
# algorithm="approximate": blockmax at this heap_factor for queries of at least this many terms,
# exact blockmax for shorter ones. Chosen from eval/results/frontier_{realtext,scifact}.md: at
# 0.9, long queries kept recall@10 >= 0.98 against exact (real text, siamese: 1.3-1.6x faster),
# while short ones lose recall fast for little time (real-text inference-free queries, 4 terms:
# 0.86-0.90 recall at 0.9, 0.935-0.96 at 0.95, for 5-10 % less time).
APPROXIMATE_HEAP_FACTOR = 0.9
APPROXIMATE_MIN_TERMS = 8
_NUMBER = (int, float, np.number)  # a query weight's types (bool aside)
_new_hit = functools.partial(tuple.__new__, Hit)  # Hit from a (doc_id, score) pair
_NO_ACCUMULATOR = np.zeros(0, dtype=np.float32)  # what search_one's non-exhaustive calls pass
_ALGORITHM_CODES = {
    "exhaustive": kernels.one_query.EXHAUSTIVE,
    "maxscore": kernels.one_query.MAXSCORE,
    "blockmax": kernels.one_query.BLOCKMAX,
    "approximate": kernels.one_query.BLOCKMAX,
}


class QueryArrays(NamedTuple):
    """Queries as CSR arrays over the index vocabulary: what the kernels take."""

    ptr: np.ndarray  # int64[n + 1]
    terms: np.ndarray  # int32, per query in descending order of weight x term maximum
    weights: np.ndarray  # float32, > 0


@contextlib.contextmanager
def _numba_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _counts_from_starts(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A version-1 index's entry counts (postings - 1) from its per-entry posting starts."""
    try:
        entry_ptr, post_ptr = arrays["term_entry_ptr"], arrays["term_post_ptr"]
        rel = arrays.pop("entry_post_rel")
        term_of_entry = np.repeat(np.arange(len(entry_ptr) - 1), np.diff(entry_ptr))
        starts = post_ptr[term_of_entry] + rel
        counts = np.diff(np.append(starts, post_ptr[-1])) - 1
    except (KeyError, ValueError, IndexError) as exc:
        raise fmt.IndexFormatError(f"{path}: version-1 entry arrays do not fit ({exc})") from None
    if counts.size and (counts.min() < 0 or counts.max() > 255):
        raise fmt.IndexFormatError(f"{path}: version-1 entry starts are not increasing")
    return dict(arrays, entry_count=counts.astype(np.uint8))


def _gaps_from_blocks(path: Path, arrays: dict[str, np.ndarray], n_blocks: int):
    """A version-1 or -2 index's absolute entry blocks as version 3's gaps (in memory)."""
    try:
        entry_ptr, blocks = arrays["term_entry_ptr"], arrays.pop("entry_block").astype(np.int64)
        first = np.zeros(blocks.size, dtype=bool)
        first[entry_ptr[:-1][np.diff(entry_ptr) > 0]] = True
        rising = np.diff(blocks, prepend=-1)[~first]
    except (KeyError, ValueError, IndexError) as exc:
        raise fmt.IndexFormatError(f"{path}: entry block arrays do not fit ({exc})") from None
    if blocks.size and (blocks.min() < 0 or blocks.max() >= n_blocks or rising.min(initial=1) < 1):
        raise fmt.IndexFormatError(f"{path}: entry blocks are out of range or not increasing")
    term_far_ptr, entry_gap, far_gap = kernels.gaps_from_blocks(entry_ptr, blocks)
    return dict(arrays, term_far_ptr=term_far_ptr, entry_gap=entry_gap, far_gap=far_gap)


def _check_layout(path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Refuse arrays that do not fit together (damaged or foreign index) before any kernel runs."""
    try:
        codes = Codec.from_json(manifest["quantization"]).dtype
        n_terms, n_docs = int(manifest["vocab"]["size"]), int(manifest["num_docs"])
        n_entries, n_postings = int(manifest["num_entries"]), int(manifest["num_postings"])
        n_far = int(manifest.get("num_far_gaps", len(arrays.get("far_gap", ()))))
        expected = {
            "term_entry_ptr": (np.dtype(np.int64), n_terms + 1),
            "term_post_ptr": (np.dtype(np.int64), n_terms + 1),
            "term_max": (codes, n_terms),
            "term_far_ptr": (np.dtype(np.int64), n_terms + 1),
            "entry_gap": (np.dtype(np.uint8), n_entries),
            "far_gap": (np.dtype(np.uint32), n_far),
            "entry_max": (codes, n_entries),
            "entry_count": (np.dtype(np.uint8), n_entries),
            "post_offsets": (np.dtype(np.uint8), n_postings),
            "post_codes": (codes, n_postings),
            "doc_ids": (None, n_docs),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise fmt.IndexFormatError(f"{path}: manifest lacks or garbles {exc}") from None
    for name, (dtype, length) in expected.items():
        array = arrays.get(name)
        if array is None:
            raise fmt.IndexFormatError(f"{path}: array {name!r} is missing")
        if (dtype is not None and array.dtype != dtype) or array.shape != (length,):
            raise fmt.IndexFormatError(
                f"{path}: array {name!r} is {array.dtype}{list(array.shape)}, expected "
                f"{dtype or 'any'}[{length}] (damaged, or written by another lsr)"
            )
    far_ptr, gaps = arrays["term_far_ptr"], arrays["entry_gap"]
    if far_ptr[0] != 0 or far_ptr[-1] != n_far or gaps.size - np.count_nonzero(gaps) != n_far:
        raise fmt.IndexFormatError(f"{path}: far gaps do not match the entry gaps (damaged)")
    _check_block_rows(path, manifest, arrays, codes, n_terms)


def _check_block_rows(
    path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray], codes: np.dtype,
    n_terms: int,
) -> None:  # fmt: skip
    """Refuse block rows that do not fit the index (a version-4 index has all four arrays,
    an older one none)."""
    present = [name for name in kernels.OPTIONAL_ARRAYS if name in arrays]
    if not present and manifest["format_version"] < fmt.ROWS_FORMAT_VERSION:
        return
    if len(present) < len(kernels.OPTIONAL_ARRAYS):
        raise fmt.IndexFormatError(f"{path}: block rows are incomplete (only {present})")
    n_blocks = int(manifest["num_blocks"])
    n_rows = arrays["row_max"].shape[0] if arrays["row_max"].ndim == 2 else -1
    if n_rows != manifest.get("num_block_rows"):
        raise fmt.IndexFormatError(f"{path}: block rows do not match the manifest's count")
    n_groups = (n_blocks >> kernels.ROW_GROUP_SHIFT) + 1
    expected = {
        "term_row": (np.dtype(np.int32), (n_terms,)),
        "row_max": (codes, (n_rows, n_blocks)),
        "row_offset": (np.dtype(np.uint16), (n_rows, n_blocks + 1)),
        "row_base": (np.dtype(np.uint32), (n_rows, n_groups)),
    }
    for name, (dtype, shape) in expected.items():
        array = arrays[name]
        if array.dtype != dtype or array.shape != shape:
            raise fmt.IndexFormatError(
                f"{path}: array {name!r} is {array.dtype}{list(array.shape)}, expected "
                f"{dtype}{list(shape)} (damaged, or written by another lsr)"
            )
    term_row = arrays["term_row"]
    if term_row.size and (term_row.min() < -1 or term_row.max() >= n_rows):
        raise fmt.IndexFormatError(f"{path}: block rows name rows that do not exist (damaged)")


class SparseIndex:
    """An immutable, memory-mapped inverted index over learned sparse vectors.

    Scoring is the dot product of query and document weights. ``search`` and ``batch_search``
    (any algorithm, see :meth:`search_arrays`; blockmax with its default ``heap_factor``) return
    exactly the brute-force top-k (``Q @ D.T`` over the stored weights): highest score first,
    equal scores by lower document position, documents with score 0 never returned.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray], vocab: Vocabulary
    ):
        self.path = path
        self.manifest = manifest
        self.vocab = vocab
        self.codec = Codec.from_json(manifest["quantization"])
        self._lut = self.codec.lut()
        self._a = arrays
        self.block_size = int(manifest["build"]["block_size"])
        self.num_docs = int(manifest["num_docs"])
        self.num_blocks = int(manifest["num_blocks"])
        # MaxScore window in blocks (tests shrink it to cross many windows)
        self.window_blocks = kernels.window_blocks(self.block_size)
        self._scratch = threading.local()  # per-thread zeroed accumulator for the exhaustive scorer
        self._ix = kernels.index_arrays(self.num_docs, self.num_blocks, self.block_size, arrays)
        self._fields = tuple(self._ix)  # what search_one takes (a plain tuple is cheaper to pass)
        term_max = arrays["term_max"]
        # each term's largest weight in score units: orders query terms for MaxScore
        self._term_bound = term_max.astype(np.float32) if self._lut is None else self._lut[term_max]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        docs: SparseBatch | Iterable[SparseBatch],
        path: str | Path,
        *,
        vocab: Vocabulary | None = None,
        config: BuildConfig | None = None,
        overwrite: bool = False,
        progress: bool = False,
        **options: Any,
    ) -> SparseIndex:
        """Build an index at ``path`` from one batch or a stream of batches, and open it.

        ``options`` are :class:`BuildConfig` fields: quantization, block_size, doc_top_k,
        term_top_n, reorder, block_rows.
        """
        config = config or BuildConfig(**options)
        batches = [docs] if isinstance(docs, SparseBatch) else docs
        if vocab is None:
            if not isinstance(docs, SparseBatch):
                raise InputError("pass vocab= when building from a stream of batches")
            vocab = docs.vocab
        build(batches, path, vocab=vocab, config=config, overwrite=overwrite, progress=progress)
        return cls.open(path, verify=False)

    @classmethod
    def open(
        cls, path: str | Path, *, verify: bool = True, vocab: Vocabulary | None = None
    ) -> SparseIndex:
        """Open an index (memory-mapped). ``verify`` checks every file's SHA-256 first;
        ``vocab``: the vocabulary already in memory, used when the index's is the same one."""
        path = Path(path)
        manifest, arrays = fmt.open_arrays(path, verify=verify)
        if manifest["format_version"] == 1:
            arrays = _counts_from_starts(path, arrays)
        if manifest["format_version"] < 3:
            arrays = _gaps_from_blocks(path, arrays, int(manifest.get("num_blocks", 0)))
        _check_layout(path, manifest, arrays)
        if vocab is None or vocab.sha256 != manifest["vocab"]["sha256"]:
            vocab = Vocabulary.load(path / manifest["files"]["vocab"]["file"])
        if len(vocab) != manifest["vocab"]["size"] or vocab.sha256 != manifest["vocab"]["sha256"]:
            raise fmt.IndexFormatError(f"{path}: vocabulary does not match the manifest")
        vocab.source = manifest["vocab"]["source"]
        return cls(path, manifest, arrays, vocab)

    # -- info --------------------------------------------------------------------------------
    @property
    def num_postings(self) -> int:
        return int(self.manifest["num_postings"])

    @property
    def nbytes(self) -> int:
        """Bytes of all index files (arrays and vocabulary)."""
        entries = list(self.manifest["arrays"].values()) + list(self.manifest["files"].values())
        return sum(int(e["bytes"]) for e in entries)

    @property
    def posting_bytes(self) -> int:
        """Bytes of the posting structures (without per-term, per-document and vocabulary files)."""
        skip = {"doc_ids", "term_max", "term_entry_ptr", "term_post_ptr", "term_far_ptr"}
        return sum(int(e["bytes"]) for n, e in self.manifest["arrays"].items() if n not in skip)

    @property
    def kernel_arrays(self) -> kernels.IndexArrays:
        """The index as the kernels take it."""
        return self._ix

    @property
    def lut(self) -> np.ndarray | None:
        """Code → weight in score units (None: codes are float32 weights)."""
        return self._lut

    def array(self, name: str) -> np.ndarray:
        """One stored array by its manifest name (memory-mapped, read-only)."""
        return self._a[name]

    def doc_id(self, position: int) -> str:
        return self._a["doc_ids"][position].decode("utf-8")

    def __len__(self) -> int:
        return self.num_docs

    def __repr__(self) -> str:
        return (
            f"SparseIndex({str(self.path)!r}, docs={self.num_docs}, postings={self.num_postings})"
        )

    # -- queries -----------------------------------------------------------------------------
    def prepare_queries(
        self,
        queries: QueryLike | Sequence[Mapping[str, float]],
        *,
        min_weight: float = 0.0,
        max_terms: int | None = None,
        unknown: str = "error",
    ) -> QueryArrays:
        """Map queries onto the index vocabulary and apply the query-side pruning options.

        ``queries``: one ``{token: weight}``, one :class:`~lsr.sparse.TermWeights` (term ids of
        this index's vocabulary), a SparseBatch or a sequence of dicts. ``min_weight`` drops
        terms weighted below it; ``max_terms`` keeps each query's heaviest terms (ties: lower
        term id); ``unknown`` ("error" or "ignore") handles terms outside the vocabulary.
        """
        if max_terms is not None:
            check_k(max_terms, "max_terms")
        if isinstance(queries, TermWeights):
            return self._prepare_one(queries, min_weight, max_terms)
        if isinstance(queries, Mapping):
            return self._prepare_one(self._dict_terms(queries, unknown), min_weight, max_terms)
        if isinstance(queries, SparseBatch):
            batch = queries.remap(self.vocab, unknown=unknown)
        else:
            batch = SparseBatch.from_dicts(list(queries), vocab=self.vocab, unknown=unknown)
        m = batch.matrix
        n_rows, data, indices = m.shape[0], m.data, m.indices
        rows = np.repeat(np.arange(n_rows), np.diff(m.indptr))
        if data.size and (not np.all(np.isfinite(data)) or data.min() < 0):
            raise InputError("query weights must be finite and >= 0")
        keep = (data > 0) & (data >= np.float32(min_weight))
        if max_terms is not None:
            order = np.lexsort((indices, -data, rows))
            starts = np.searchsorted(rows[order], np.arange(n_rows))
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order)) - np.repeat(
                starts, np.bincount(rows, minlength=n_rows)
            )
            keep &= rank < max_terms
        rows, terms, weights = (
            rows[keep],
            indices[keep].astype(np.int32),
            data[keep].astype(np.float32),
        )
        # canonical term order: descending upper bound (weight x term maximum), then term id
        order = np.lexsort((terms, -(weights * self._term_bound[terms]), rows))
        ptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=ptr[1:])
        return QueryArrays(ptr, terms[order], weights[order])

    def _prepare_one(
        self, query: TermWeights, min_weight: float, max_terms: int | None
    ) -> QueryArrays:
        """One query in term ids: checked, pruned and ordered by one compiled call."""
        status, terms, weights = kernels.canonical_query(
            np.asarray(query.terms, dtype=np.int64),
            np.asarray(query.weights, dtype=np.float32),
            self._term_bound,
            np.float32(min_weight),
            0 if max_terms is None else int(max_terms),
        )
        if status != kernels.query.OK:
            raise InputError(kernels.query.PROBLEMS[status].format(n=len(self.vocab)))
        return QueryArrays(np.array([0, terms.size], dtype=np.int64), terms, weights)

    def _dict_terms(self, query: Mapping[str, float], unknown: str) -> TermWeights:
        """One ``{token: weight}`` as term ids and weights: no scipy, no vocabulary copy."""
        terms_list = []
        weights_list = []
        term_id = self.vocab.get
        for token, weight in query.items():
            tid = term_id(token)
            if tid is None:
                if unknown == "error":
                    raise UnknownTermError(f"unknown term {token!r}: not in the index vocabulary")
                continue
            if weight.__class__ is not float and (
                isinstance(weight, bool) or not isinstance(weight, _NUMBER)
            ):
                raise InputError(f"weight of {token!r} is not a number: {weight!r}")
            if not 0.0 <= weight < math.inf:  # also refuses NaN
                raise InputError(f"weight of {token!r} must be finite and >= 0, got {weight}")
            terms_list.append(tid)
            weights_list.append(weight)
        return TermWeights(
            np.asarray(terms_list, dtype=np.int64), np.asarray(weights_list, dtype=np.float32)
        )

    def _accumulator(self) -> np.ndarray:
        """This thread's zeroed float32 accumulator over all documents (kernels leave it zeroed)."""
        acc = getattr(self._scratch, "acc", None)
        if acc is None:
            acc = self._scratch.acc = np.zeros(self.num_docs, dtype=np.float32)
        return acc

    def search_arrays(
        self,
        q: QueryArrays,
        k: int,
        *,
        algorithm: str = "exhaustive",
        threads: int | None = None,
        heap_factor: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k for prepared queries: (doc positions int64[n, k] padded -1, scores, hit counts).

        ``algorithm``: "exhaustive" (term-at-a-time over every posting; the default),
        "maxscore" (pruning over doc-id blocks; pays off where block and term bounds separate
        the top k from the rest) or "blockmax" (best-first over doc-id blocks in descending
        order of their upper bound; pays off where few blocks can reach the k-th score, as on
        real text). All three return the same hits with bit-identical scores.
        ``heap_factor`` (blockmax only, in (0, 1]): blockmax stops at the first block whose
        bound x heap_factor is below the k-th score held; 1 is exact, smaller is faster and
        approximate (hits may be missed; every hit returned carries its exact score).
        "approximate" is blockmax with a measured default: :func:`approximate_heap_factor`
        per query (recall@10 >= 0.95 against exact on every workload measured).
        ``threads``: for more than one query, how many run in parallel (default: all cores);
        for one query, how many threads share it (default: one), exhaustive only here, where
        the split returns bit-identical hits, so that a query's hits never depend on the batch
        it came in (:meth:`search` also splits blockmax and approximate queries).
        """
        algorithm = _check_algorithm(algorithm)
        return self._run(
            q, check_k(k), algorithm, threads, check_heap_factor(heap_factor, algorithm)
        )

    def _run(
        self, q: QueryArrays, k: int, algorithm: str, threads: int | None, heap_factor: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(q.ptr) - 1
        if n == 1:  # split over threads only where the hits equal one thread's (batch invariance)
            split = threads if algorithm == "exhaustive" else None
            one = self._run_one(q.terms, q.weights, k, algorithm, split, heap_factor)
            return one[0][None], one[1][None], np.array([one[2]], dtype=np.int64)
        if algorithm == "blockmax":
            heap_factors = np.full(n, heap_factor)
        elif algorithm == "approximate":  # blockmax, each query at its measured default
            algorithm = "blockmax"
            heap_factors = np.array([approximate_heap_factor(m) for m in np.diff(q.ptr).tolist()])
        k_eff = min(k, self.num_docs)
        docs = np.full((n, k_eff), -1, dtype=np.int64)
        scores = np.zeros((n, k_eff), dtype=np.float32)
        ix, lut = self._ix, self._lut
        with _numba_threads(threads):
            if algorithm == "exhaustive":
                counts = kernels.exhaustive_batch(
                    q.ptr, q.terms, q.weights, k_eff, ix, lut, numba.get_num_threads(),
                    docs, scores,
                )  # fmt: skip
            elif algorithm == "blockmax":
                counts = kernels.blockmax_batch(
                    q.ptr, q.terms, q.weights, k_eff, ix, lut, heap_factors, docs, scores
                )
            else:
                counts = kernels.maxscore_batch(
                    q.ptr, q.terms, q.weights, k_eff, ix, lut, self.window_blocks, docs, scores
                )
        if self.codec.score_scale != 1.0:
            scores *= np.float32(self.codec.score_scale)
        return docs, scores, counts

    def _run_one(
        self,
        terms: np.ndarray,
        weights: np.ndarray,
        k: int,
        algorithm: str,
        threads: int | None,
        heap_factor: float,
        min_weight: float = 0.0,
        max_terms: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """One query as term ids and weights, checked and ordered here (InputError when
        refused): (doc positions padded -1, scores, hit count). The low-latency path: one
        compiled call, no thread pool (unless ``threads`` > 1 splits the query over runs of
        doc-id blocks: see :meth:`_split_one`)."""
        k_eff = min(k, self.num_docs)
        docs = np.full(k_eff, -1, dtype=np.int64)
        scores = np.zeros(k_eff, dtype=np.float32)
        terms = np.asarray(terms, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float32)
        if algorithm != "maxscore" and threads is not None and threads > 1:
            q = self._prepare_one(TermWeights(terms, weights), min_weight, max_terms)
            count = self._split_one(q, algorithm, threads, heap_factor, docs, scores)
        else:
            exact_below = 0
            if algorithm == "approximate":  # approximate_heap_factor's rule, in the kernel
                heap_factor, exact_below = APPROXIMATE_HEAP_FACTOR, APPROXIMATE_MIN_TERMS
            acc = self._accumulator() if algorithm == "exhaustive" else _NO_ACCUMULATOR
            count = kernels.search_one(
                terms, weights, self._term_bound, np.float32(min_weight),
                0 if max_terms is None else int(max_terms), k_eff, self._fields, self._lut,
                _ALGORITHM_CODES[algorithm], heap_factor, exact_below, acc, self.window_blocks,
                docs, scores,
            )  # fmt: skip
            if count < 0:
                raise InputError(kernels.query.PROBLEMS[-count].format(n=len(self.vocab)))
        if self.codec.score_scale != 1.0:
            scores *= np.float32(self.codec.score_scale)
        return docs, scores, count

    def _split_one(
        self,
        q: QueryArrays,
        algorithm: str,
        threads: int,
        heap_factor: float,
        docs: np.ndarray,
        scores: np.ndarray,
    ) -> int:
        """One prepared query split into ``threads`` runs of doc-id blocks, each searched on its
        own and the hits merged into ``docs`` / ``scores``; returns the hit count. Exhaustive
        and exact blockmax give one thread's hits bit for bit; approximate parts each stop on
        their own k-th score, so they find every exact hit one thread finds."""
        k_eff = len(docs)
        with _numba_threads(threads):
            parts = numba.get_num_threads()
            if algorithm == "exhaustive":
                return kernels.exhaustive_split(
                    q.terms, q.weights, k_eff, self._ix, self._lut, self._accumulator(), parts,
                    docs, scores,
                )  # fmt: skip
            if algorithm == "approximate":
                heap_factor = approximate_heap_factor(len(q.terms))
            return kernels.blockmax_split(
                q.terms, q.weights, k_eff, self._ix, self._lut, heap_factor, parts, docs, scores
            )

    def warm_up(self, k: int = 10, *, algorithm: str = "exhaustive") -> None:
        """Compile (or load from Numba's cache) the kernels a search will use, on empty queries:
        the query preparation and the single-query kernel, then the batch kernel."""
        self.search(
            TermWeights(np.zeros(0, np.int64), np.zeros(0, np.float32)), k, algorithm=algorithm
        )
        two = QueryArrays(np.zeros(3, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        self.search_arrays(two, k, algorithm=algorithm)

    def _hits(self, docs: np.ndarray, scores: np.ndarray, count: int) -> list[Hit]:
        ids = self._a["doc_ids"][docs[:count]].tolist()  # one gather, then plain bytes
        # built without a Python frame per hit (Hit's own __new__ is one): 13 -> 8 us for 10
        pairs = zip(map(bytes.decode, ids), scores[:count].tolist(), strict=True)
        return list(map(_new_hit, pairs))

    def search(
        self,
        query: QueryLike,
        k: int = 10,
        *,
        min_weight: float = 0.0,
        max_terms: int | None = None,
        unknown: str = "error",
        algorithm: str = "exhaustive",
        heap_factor: float = 1.0,
        threads: int = 1,
    ) -> list[Hit]:
        """Top-k hits for one query: ``{token: weight}``, TermWeights or a one-row SparseBatch.

        ``algorithm`` and ``heap_factor``: see :meth:`search_arrays`. ``threads`` > 1 splits
        the query's doc-id blocks over that many cores, each part searched on its own and the
        parts' hits merged (worth it for long queries over large indexes). Exhaustive and exact
        blockmax return the same hits and scores as one thread; below ``heap_factor`` 1 each
        part stops on its own k-th score, so the split finds every exact hit that one thread
        finds, and may find more. Not for "maxscore"."""
        k = check_k(k)
        heap_factor = check_heap_factor(heap_factor, _check_algorithm(algorithm))
        if check_k(threads, "threads") > 1 and algorithm == "maxscore":
            raise InputError("threads > 1 for one query does not apply to algorithm='maxscore'")
        if isinstance(query, TermWeights | Mapping):  # checked and ordered in the kernel's call
            if max_terms is not None:
                check_k(max_terms, "max_terms")
            tw = query if isinstance(query, TermWeights) else self._dict_terms(query, unknown)
            docs, scores, count = self._run_one(
                tw.terms, tw.weights, k, algorithm, threads, heap_factor, min_weight, max_terms
            )
            return self._hits(docs, scores, count)
        q = self.prepare_queries(query, min_weight=min_weight, max_terms=max_terms, unknown=unknown)
        if len(q.ptr) != 2:
            raise InputError(f"search takes one query, got {len(q.ptr) - 1}; use batch_search")
        docs, scores, count = self._run_one(q.terms, q.weights, k, algorithm, threads, heap_factor)
        return self._hits(docs, scores, count)

    def batch_search(
        self,
        queries: SparseBatch | Sequence[Mapping[str, float]],
        k: int = 10,
        *,
        threads: int | None = None,
        min_weight: float = 0.0,
        max_terms: int | None = None,
        unknown: str = "error",
        algorithm: str = "exhaustive",
        heap_factor: float = 1.0,
    ) -> list[list[Hit]]:
        """Top-k hits for many queries, in parallel over ``threads`` (default: all cores).

        ``algorithm`` and ``heap_factor``: see :meth:`search_arrays`."""
        k = check_k(k)
        heap_factor = check_heap_factor(heap_factor, _check_algorithm(algorithm))
        if threads is not None:
            check_k(threads, "threads")
        q = self.prepare_queries(
            queries, min_weight=min_weight, max_terms=max_terms, unknown=unknown
        )
        docs, scores, counts = self._run(q, k, algorithm, threads, heap_factor)
        return [self._hits(docs[i], scores[i], int(counts[i])) for i in range(len(counts))]


def _check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise InputError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    return algorithm


def approximate_heap_factor(n_terms: int) -> float:
    """The heap_factor of ``algorithm="approximate"`` (``plan="approximate"`` in collections)
    for a query of ``n_terms`` terms: :data:`APPROXIMATE_HEAP_FACTOR` from
    :data:`APPROXIMATE_MIN_TERMS` terms on, 1 (exact) below."""
    return APPROXIMATE_HEAP_FACTOR if n_terms >= APPROXIMATE_MIN_TERMS else 1.0


def check_heap_factor(heap_factor: float, algorithm: str) -> float:
    """``heap_factor`` as a float in (0, 1]; anything but 1 is refused for other algorithms
    (InputError). Collections check their ``plan`` the same way."""
    if isinstance(heap_factor, bool) or not isinstance(heap_factor, int | float | np.floating):
        raise InputError(f"heap_factor must be a number in (0, 1], got {heap_factor!r}")
    value = float(heap_factor)
    if not (0.0 < value <= 1.0):  # also refuses NaN
        raise InputError(f"heap_factor must lie in (0, 1], got {heap_factor!r}")
    if value != 1.0 and algorithm != "blockmax":
        raise InputError(f"heap_factor applies only to algorithm='blockmax', not {algorithm!r}")
    return value
