"""Lucene impact search (Anserini) on our quantised vectors: the anchor our engine is timed against.

Scoring. An impact index stores each term's integer weight as its term frequency, and Anserini's
``ImpactSimilarity`` scores a term as ``tf * boost`` (no idf, no length norm). With the query
weight as the boost, ``score(d) = sum_t q_t * impact_t(d)``, computed in float32. With integer
query weights and sums below 2**24 every step is exact, so scores equal ``Q @ D.T`` bit for bit.
Non-integer query weights work too (the boost is the float32 nearest to the weight), but the
float32 products and sums may then differ from a float64 reference in the last bits.

Indexing traps (handled by ``build_impact_index``):

* ``JsonVectorCollection`` writes each term ``int(weight)`` times into the document text and the
  whitespace analyzer counts them: weights are truncated (2.9 -> 2, 0.7 -> 0) and indexing time
  grows with the *sum* of the weights. We accept only non-negative integer weights.
* A document left with no terms is skipped by Anserini, which shifts every later Lucene docid.
  We give such documents one placeholder term that no query contains.
* Lucene breaks score ties by its internal docid. Indexing one file with one thread keeps our
  order; merges of non-adjacent segments (large collections) or ``threads > 1`` may not. The
  Lucene order is checked after indexing and saved next to the index (``lsr_docids.json``);
  a warning says when it differs from the input order (then ties may break differently).

Why not ``pyserini.search.lucene.LuceneImpactSearcher`` (checked on this setup): its ``search``
wraps every query weight in a Java ``Integer`` (``JInt(2.7)`` is 2; numpy scalars are refused)
and drops query terms whose idf ``log(N/df)`` is not above ``min_idf=0``, so a term present in
*every* document is silently ignored (a query of only such terms returns nothing). It reads all
index terms in Python at start-up for that idf table, sorts hits by score then by the external
docid *string* ("doc11" before "doc5"), then nudges tied scores apart (Anserini's
``ScoreTiesAdjusterReranker``: 3.0 becomes 2.9999990), and loads the stored document of each hit.
Importing it also costs ~18 s here (it pulls in torch and transformers). So we call Lucene
directly through pyjnius: the query goes over as one JSON string that Jackson (inside the
Anserini jar) turns into a ``Map<String, Float>``, Anserini's ``BagOfWordsQueryGenerator`` turns
into a disjunction of ``BoostQuery(TermQuery)`` clauses, and ``IndexSearcher.search(query, k)``
ranks with Lucene's default top-k collector (dynamic pruning, exact top-k, ties to the lower
docid). That is three JNI calls per query instead of two per query term; hits come back by two
field reads each for small k, or as one JSON string (Jackson again) for large k (k=1000: ~1 ms
instead of ~5 ms).
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lsr.errors import InputError, LsrError
from lsr.jvm import start_jvm

FIELD = "contents"
DOCIDS_FILE = "lsr_docids.json"
EMPTY_DOC_TOKEN = "__lsr_empty_document__"
_INDEX_FLAGS = (
    "-collection",
    "JsonVectorCollection",
    "-impact",
    "-pretokenized",
    "-optimize",
    "-quiet",
)
_FIELD_READ_MAX_K = 20  # above this, fetching hits as one JSON string is faster
_BAD_TOKEN = re.compile(r"\s")  # the pretokenized analyzer splits on whitespace
_dumps = json.JSONEncoder(default=float).encode  # default: numpy scalars


def _jclass(name: str) -> Any:
    from jnius import autoclass

    return autoclass(name)


def _open_reader(index_dir: Path) -> Any:
    from jnius import JavaException

    try:
        directory = _jclass("org.apache.lucene.store.FSDirectory").open(
            _jclass("java.io.File")(str(index_dir)).toPath()
        )
        return _jclass("org.apache.lucene.index.DirectoryReader").open(directory)
    except JavaException as e:
        raise LsrError(f"cannot open a Lucene index at {index_dir}: {e}") from e


def build_impact_index(
    ids: Sequence[str],
    matrix: sp.csr_matrix | sp.csr_array,
    tokens: Sequence[str],
    index_dir: Path | str,
    *,
    threads: int = 1,
    memory_buffer_mb: int = 1024,
) -> Path:
    """Index rows of non-negative integer weights (columns named by ``tokens``) as a Lucene
    impact index in ``index_dir`` (replacing any index there), in the given row order.

    ``threads > 1`` splits the input into that many files for Anserini's indexing threads; the
    Lucene docid order then no longer follows ``ids`` (see the module docstring).
    """
    m = sp.csr_matrix(matrix)
    n = m.shape[0]
    if len(ids) != n or n == 0:
        raise InputError(f"{len(ids)} ids for {n} rows: need one id per row and at least one row")
    if not m.has_canonical_format:  # duplicate entries would become duplicate JSON keys
        m = m.copy()
        m.sum_duplicates()
    if m.shape[1] > len(tokens):
        raise InputError(f"matrix has {m.shape[1]} columns but there are {len(tokens)} tokens")
    data = m.data
    if data.size and (data.min() < 0 or not np.array_equal(data, np.floor(data))):
        raise InputError("impact weights must be non-negative integers (quantise them first)")
    weights = data.astype(np.int64)
    if data.size and weights.max() >= 2**31:
        raise InputError("impact weights must be below 2**31")
    used = np.unique(m.indices[weights > 0]).tolist()
    bad = [tokens[c] for c in used if not tokens[c] or _BAD_TOKEN.search(tokens[c])]
    bad += [tokens[c] for c in used if len(tokens[c]) > 255]  # the tokenizer's length limit
    if bad:
        raise InputError(f"{len(bad)} tokens are empty, too long or contain whitespace: {bad[:5]}")

    start_jvm()
    from jnius import JavaException

    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    Path(index_dir, DOCIDS_FILE).unlink(missing_ok=True)  # never leave a stale id list behind
    threads = max(1, min(threads, n))
    names = [_dumps(str(t)) for t in tokens]
    empty = _dumps({EMPTY_DOC_TOKEN: 1})
    with tempfile.TemporaryDirectory(prefix=".lsr-jsonvec-", dir=index_dir.parent) as tmp:
        bounds = np.linspace(0, n, threads + 1).astype(int).tolist()
        for part, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            with open(Path(tmp, f"part{part:05d}.jsonl"), "w", encoding="utf-8") as f:
                for i in range(lo, hi):
                    a, b = m.indptr[i], m.indptr[i + 1]
                    pairs = zip(m.indices[a:b].tolist(), weights[a:b].tolist(), strict=True)
                    vec = ",".join(f"{names[c]}:{w}" for c, w in pairs if w > 0)
                    vec = f"{{{vec}}}" if vec else empty
                    f.write(f'{{"id":{_dumps(str(ids[i]))},"vector":{vec}}}\n')
        args = ["-input", tmp, "-index", str(index_dir), "-threads", str(threads)]
        args += ["-memoryBuffer", str(memory_buffer_mb), *_INDEX_FLAGS]
        try:
            _jclass("io.anserini.index.IndexCollection").main(args)
        except JavaException as e:
            raise LsrError(f"Anserini could not index into {index_dir}: {e}") from e
    order = _lucene_order(index_dir, [str(i) for i in ids])
    Path(index_dir, DOCIDS_FILE).write_text(json.dumps(order), encoding="utf-8")
    return index_dir


def _lucene_order(index_dir: Path, ids: list[str], probes: int = 1000) -> list[str]:
    """Our ids in Lucene docid order: checked on a sample, read in full only if that fails."""
    reader = _open_reader(index_dir)
    try:
        if reader.maxDoc() != len(ids):
            raise LsrError(f"Anserini indexed {reader.maxDoc()} of {len(ids)} documents")
        doc = reader.storedFields().document
        sample = np.random.default_rng(0).choice(len(ids), min(len(ids), probes), replace=False)
        if all(doc(i).get("id") == ids[i] for i in [0, len(ids) - 1, *sample.tolist()]):
            return ids
        warnings.warn(
            "Lucene's internal document order differs from the input order, so score ties "
            "may break differently than in our engine",
            stacklevel=3,
        )
        return [doc(i).get("id") for i in range(len(ids))]
    finally:
        reader.close()


class LuceneImpactSearch:
    """Top-k search over an impact index with ``{term: weight}`` queries (see module docstring)."""

    def __init__(self, index_dir: Path | str) -> None:
        start_jvm()
        self.index_dir = Path(index_dir)
        self._reader = _open_reader(self.index_dir)
        searcher_cls = _jclass("org.apache.lucene.search.IndexSearcher")
        searcher_cls.setMaxClauseCount(max(searcher_cls.getMaxClauseCount(), 1 << 16))
        searcher = searcher_cls(self._reader, signature="(Lorg/apache/lucene/index/IndexReader;)V")
        searcher.setSimilarity(_jclass("io.anserini.search.similarity.ImpactSimilarity")())
        self._search = searcher.search
        mapper = _jclass("com.fasterxml.jackson.databind.ObjectMapper")()
        self._to_map = mapper.readerForMapOf(_jclass("java.lang.Float")).readValue
        self._to_json = mapper.writeValueAsString
        self._build = _jclass("io.anserini.search.query.BagOfWordsQueryGenerator")().buildQuery
        self.num_docs: int = self._reader.maxDoc()
        sidecar = self.index_dir / DOCIDS_FILE
        if sidecar.exists():
            self._ids: list[str] = json.loads(sidecar.read_text(encoding="utf-8"))
        else:  # an index built elsewhere: read the stored ids once
            doc = self._reader.storedFields().document
            self._ids = [doc(i).get("id") for i in range(self.num_docs)]
        if len(self._ids) != self.num_docs:
            raise LsrError(f"{sidecar} lists {len(self._ids)} ids for {self.num_docs} documents")

    def search(self, query: Mapping[str, float], k: int) -> list[tuple[str, float]]:
        """``(docid, score)`` best first; terms with weight <= 0 are dropped (Lucene rejects
        negative boosts, and a zero boost would still match documents with score 0)."""
        terms = {t: w for t, w in query.items() if w > 0}
        if not terms or k <= 0:
            return []
        top = self._search(self._build(FIELD, self._to_map(_dumps(terms))), k)
        ids = self._ids
        if k <= _FIELD_READ_MAX_K:  # two JNI field reads per hit
            return [(ids[h.doc], h.score) for h in top.scoreDocs]
        hits = json.loads(self._to_json(top))["scoreDocs"]  # one JNI call for any k
        scores = np.array([h["score"] for h in hits], dtype=np.float32).tolist()  # exact float32
        return [(ids[h["doc"]], s) for h, s in zip(hits, scores, strict=True)]

    def batch_search(
        self,
        queries: Sequence[Mapping[str, float]],
        qids: Sequence[str],
        k: int,
        threads: int = 1,
    ) -> dict[str, list[tuple[str, float]]]:
        """``search`` for each query; ``threads > 1`` runs Python threads (pyjnius releases the
        GIL while Java runs)."""
        if len(queries) != len(qids):
            raise InputError(f"{len(queries)} queries for {len(qids)} query ids")
        results: list[list[tuple[str, float]]] = [[] for _ in queries]
        errors: list[BaseException] = []

        def work(part: range) -> None:
            try:
                for i in part:
                    results[i] = self.search(queries[i], k)
            except BaseException as e:
                errors.append(e)
            finally:
                if threading.current_thread() is not threading.main_thread():
                    from jnius import detach

                    detach()  # a thread that touched Java must leave the JVM before it ends

        threads = max(1, min(threads, len(queries)))
        parts = [range(t, len(queries), threads) for t in range(threads)]
        if threads == 1:
            work(parts[0])
        else:
            workers = [threading.Thread(target=work, args=(part,)) for part in parts]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        if errors:
            raise errors[0]
        return dict(zip((str(q) for q in qids), results, strict=True))

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> LuceneImpactSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
