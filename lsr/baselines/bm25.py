"""BM25 baselines over a text corpus: bm25s (pure Python) and Lucene through Anserini.

Both take the corpus as ``{doc_id: text}`` or ``(doc_id, text)`` pairs (``lsr.data.iter_corpus``
joins BEIR titles and texts) and queries as ``{qid: text}``, and return
``{qid: [(doc_id, score), ...]}`` best first, only documents that share a term with the query.

* :class:`Bm25sBaseline`: bm25s' own defaults: lower-cased ``\\w\\w+`` tokens, its English
  stopword list, no stemming, ``k1=1.5, b=0.75``, Lucene's BM25 variant. Hits tied in score are
  ordered by doc id.
* :class:`PyseriniBm25Baseline`: Anserini's default English analyser (Porter stemming, Lucene's
  English stopwords) and Pyserini's BM25 defaults ``k1=0.9, b=0.4`` on one ``contents`` field:
  the "flat" BEIR setting. The index is built in-process (``python -m pyserini.index.lucene``
  cannot start the JVM here, see ``lsr.jvm``) from ``{"id", "contents"}`` JSONL files, and
  searched with Anserini's ``SimpleSearcher`` (what ``pyserini``'s ``LuceneSearcher`` wraps)
  through pyjnius, because importing ``pyserini.search.lucene`` costs ~20 s (torch,
  transformers). Anserini breaks score ties by docid, nudging tied scores apart by ~1e-6.

An index directory doubles as a cache: ``build(..., reuse=True)`` keeps an index whose recorded
corpus fingerprint (SHA-256 of ids and texts) and analyser match, and builds one otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import InputError, LsrError
from lsr.jvm import start_jvm
from lsr.types import Ranked

Corpus = Mapping[str, str] | Iterable[tuple[str, str]]

MANIFEST = "lsr_bm25.json"
_ANALYZER = "anserini-default-en-porter"


def _pairs(corpus: Corpus) -> Iterable[tuple[str, str]]:
    return corpus.items() if isinstance(corpus, Mapping) else corpus


class Bm25sBaseline:
    """BM25 with bm25s' default tokenisation (English stopwords, no stemming)."""

    def __init__(
        self, k1: float = 1.5, b: float = 0.75, method: str = "lucene", stopwords: str = "en"
    ) -> None:
        self.k1, self.b, self.method, self.stopwords = k1, b, method, stopwords
        self.doc_ids: list[str] = []
        self._model: Any = None

    def index(self, corpus: Corpus) -> Bm25sBaseline:
        """Tokenise and index the corpus (replacing any previous one); returns ``self``."""
        import bm25s

        self.doc_ids, texts = [], []
        for doc_id, text in _pairs(corpus):
            self.doc_ids.append(str(doc_id))
            texts.append(text)
        if not texts:
            raise InputError("cannot index an empty corpus")
        if len(set(self.doc_ids)) != len(self.doc_ids):
            raise InputError("the corpus has repeated document ids")
        tokens = bm25s.tokenize(texts, stopwords=self.stopwords, show_progress=False)
        self._model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._model.index(tokens, show_progress=False)
        return self

    def search(self, queries: Mapping[str, str], k: int = 100, threads: int = 1) -> Ranked:
        """Top ``k`` per query (score > 0), ties by doc id; ``threads=0`` uses all cores."""
        import bm25s

        if self._model is None:
            raise LsrError("call index() before search()")
        qids = [str(q) for q in queries]
        if not qids or k <= 0:
            return {q: [] for q in qids}
        tokens = bm25s.tokenize(
            list(queries.values()), stopwords=self.stopwords, show_progress=False, return_ids=False
        )
        k = min(k, len(self.doc_ids))
        docs, scores = self._model.retrieve(
            tokens, k=k, show_progress=False, n_threads=-1 if threads == 0 else threads
        )
        ids = self.doc_ids
        out: Ranked = {}
        for qid, row, vals in zip(qids, docs.tolist(), np.asarray(scores).tolist(), strict=True):
            hits = [(ids[j], s) for j, s in zip(row, vals, strict=True) if s > 0]
            out[qid] = sorted(hits, key=lambda h: (-h[1], h[0]))
        return out


# -- Lucene --------------------------------------------------------------------------------------
def _write_collection(corpus: Corpus, folder: Path, parts: int) -> tuple[int, str]:
    """Write ``{"id", "contents"}`` JSONL files; returns (count, corpus fingerprint)."""
    digest = hashlib.sha256()
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        files = [
            stack.enter_context(open(folder / f"part{i:03d}.jsonl", "w", encoding="utf-8"))
            for i in range(parts)
        ]
        for n, (doc_id, text) in enumerate(_pairs(corpus)):
            doc_id = str(doc_id)
            if doc_id in seen:
                raise InputError(f"the corpus repeats document id {doc_id!r}")
            seen.add(doc_id)
            digest.update(f"{len(doc_id)}:{doc_id}{len(text)}:{text}".encode())
            record = json.dumps({"id": doc_id, "contents": text}, ensure_ascii=False)
            files[n % parts].write(record + "\n")
    if not seen:
        raise InputError("cannot index an empty corpus")
    return len(seen), digest.hexdigest()


def _manifest(index_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((index_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_lucene_bm25_index(
    corpus: Corpus, index_dir: str | Path, *, threads: int = 1, reuse: bool = True
) -> Path:
    """Index the corpus with Anserini (default English analyser) into ``index_dir``.

    With ``reuse`` an existing index built by this function from the same corpus is kept. A new
    index is built in a hidden sibling and renamed into place, replacing what was there.
    """
    start_jvm()
    from jnius import JavaException, autoclass

    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    threads = max(1, threads)
    with tempfile.TemporaryDirectory(prefix=f".{index_dir.name}.", dir=index_dir.parent) as tmp:
        docs = Path(tmp, "docs")
        docs.mkdir()
        n_docs, fingerprint = _write_collection(corpus, docs, threads)
        wanted = {"analyzer": _ANALYZER, "num_docs": n_docs, "corpus_sha256": fingerprint}
        old = _manifest(index_dir)
        if reuse and old is not None and all(old.get(k) == v for k, v in wanted.items()):
            return index_dir
        staged = Path(tmp, "index")
        args = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator"]
        args += ["-input", str(docs), "-index", str(staged), "-threads", str(threads)]
        args += ["-optimize", "-quiet"]
        try:
            autoclass("io.anserini.index.IndexCollection").main(args)
        except JavaException as e:
            raise LsrError(f"Anserini could not index into {index_dir}: {e}") from e
        indexed = _count_docs(staged)
        if indexed != n_docs:  # Anserini skips documents whose text is empty
            warnings.warn(f"Anserini indexed {indexed} of {n_docs} documents", stacklevel=2)
        (staged / MANIFEST).write_text(json.dumps({**wanted, "indexed": indexed}, indent=1))
        if index_dir.exists():
            os.replace(index_dir, Path(tmp, "old"))  # removed with the temporary folder
        os.replace(staged, index_dir)
    return index_dir


def _count_docs(index_dir: Path) -> int:
    from jnius import autoclass

    directory = autoclass("org.apache.lucene.store.FSDirectory").open(
        autoclass("java.io.File")(str(index_dir)).toPath()
    )
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        return int(reader.numDocs())
    finally:
        reader.close()


class PyseriniBm25Baseline:
    """Lucene BM25 (Anserini ``SimpleSearcher``) over an index from :func:`build_lucene_bm25_index`
    (or any Anserini index with a default-analysed ``contents`` field)."""

    def __init__(self, index_dir: str | Path, k1: float = 0.9, b: float = 0.4) -> None:
        start_jvm()
        from jnius import JavaException, autoclass

        self.index_dir = Path(index_dir)
        if not self.index_dir.is_dir():
            raise InputError("no Lucene index here", self.index_dir)
        try:
            self._searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.index_dir))
        except JavaException as e:
            raise LsrError(f"cannot open a Lucene index at {self.index_dir}: {e}") from e
        self._searcher.set_bm25(float(k1), float(b))
        self.k1, self.b = k1, b
        self.num_docs: int = int(self._searcher.get_total_num_docs())
        self._list = autoclass("java.util.ArrayList")

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        index_dir: str | Path,
        *,
        threads: int = 1,
        reuse: bool = True,
        k1: float = 0.9,
        b: float = 0.4,
    ) -> PyseriniBm25Baseline:
        """Build (or reuse, see :func:`build_lucene_bm25_index`) the index and open it."""
        return cls(build_lucene_bm25_index(corpus, index_dir, threads=threads, reuse=reuse), k1, b)

    def search(self, queries: Mapping[str, str], k: int = 100, threads: int = 1) -> Ranked:
        """Top ``k`` per query, best first; ``threads`` Java search threads."""
        qids = [str(q) for q in queries]
        if not qids or k <= 0:
            return {q: [] for q in qids}
        texts, names = self._list(), self._list()
        for qid, text in zip(qids, queries.values(), strict=True):
            texts.add(str(text))
            names.add(qid)
        found = self._searcher.batch_search(texts, names, int(k), max(1, int(threads)))
        by_qid = {e.getKey(): e.getValue() for e in found.entrySet().toArray()}
        return {q: [(h.docid, float(h.score)) for h in by_qid.get(q, [])] for q in qids}

    def close(self) -> None:
        self._searcher.close()

    def __enter__(self) -> PyseriniBm25Baseline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
