"""BEIR-style text collections: a corpus, its queries and qrels.

BEIR layout: a directory with ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl``
(``{"_id", "text"}``), either optionally gzipped, and ``qrels/<split>.tsv`` (a header line
``query-id  corpus-id  score``, then one judgement per line). A document's text is its title and
text joined by one space (the title is left out when empty), as BEIR's and Pyserini's "flat"
BEIR indexes do. Ids must be given as ``_id`` (BEIR's field; ``id``/``docid`` are not read).

:func:`load_beir` keeps the queries that have judgements in the split and refuses qrels naming
a query that is not in the queries file. Judged documents missing from the corpus are kept in
the qrels (they stay relevant and can never be retrieved, so they lower recall, as in BEIR's own
evaluation) and counted in ``BeirData.unknown_qrels_docs``; a warning says how many.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsr.errors import InputError
from lsr.io import READ_ERRORS, first_json_object, iter_json_objects, iter_rows, open_text

Qrels = dict[str, dict[str, int]]


# -- locating files ------------------------------------------------------------------------------
def _find(path: str | Path, stem: str) -> Path:
    """``path`` itself, or ``<path>/<stem>.jsonl[.gz]`` when ``path`` is a directory."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise InputError("file not found", path)
        return path
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (path / name).is_file():
            return path / name
    raise InputError(f"no {stem}.jsonl or {stem}.jsonl.gz in this directory", path)


def qrels_path(path: str | Path, split: str = "test") -> Path:
    """The qrels file: ``path`` itself, or ``<path>/qrels/<split>.tsv`` / ``<path>/<split>.tsv``."""
    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise InputError("file not found", path)
        return path
    for candidate in (path / "qrels" / f"{split}.tsv", path / f"{split}.tsv"):
        if candidate.is_file():
            return candidate
    raise InputError(f"no qrels/{split}.tsv in this directory", path)


# -- JSONL records -------------------------------------------------------------------------------
def _field(record: dict[str, Any], key: str, path: Path, lineno: int, *, required: bool) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise InputError(f"missing '{key}'", path, lineno)
        return ""
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a string, got {type(value).__name__}", path, lineno)
    if key == "_id" and (not value or any(c.isspace() for c in value)):
        raise InputError(f"'_id' must be non-empty without whitespace, got {value!r}", path, lineno)
    return value


def _iter_texts(path: Path, *, title: bool) -> Iterator[tuple[str, str]]:
    seen: dict[str, int] = {}
    for lineno, record in iter_json_objects(path):
        rid = _field(record, "_id", path, lineno, required=True)
        if rid in seen:
            raise InputError(f"duplicate id {rid!r} (first on line {seen[rid]})", path, lineno)
        seen[rid] = lineno
        text = _field(record, "text", path, lineno, required=True)
        head = _field(record, "title", path, lineno, required=False) if title else ""
        yield rid, f"{head} {text}" if head else text


def corpus_file(path: str | Path) -> Path:
    """The JSONL(.gz) file behind a BEIR directory or a corpus file."""
    return _find(path, "corpus")


def queries_file(path: str | Path) -> Path:
    """The JSONL(.gz) file behind a BEIR directory or a queries file."""
    return _find(path, "queries")


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str]]:
    """Stream ``(doc_id, title + " " + text)`` from a BEIR directory or a corpus JSONL(.gz) file."""
    return _iter_texts(_find(path, "corpus"), title=True)


def load_corpus(path: str | Path) -> dict[str, str]:
    """The whole corpus as ``{doc_id: text}`` in file order (see :func:`iter_corpus`)."""
    return dict(iter_corpus(path))


def count_corpus(path: str | Path) -> int:
    """Number of non-blank lines in the corpus file: a cheap total for progress bars."""
    path = _find(path, "corpus")
    try:
        with open_text(path) as handle:
            return sum(1 for line in handle if line.strip())
    except READ_ERRORS as exc:
        raise InputError(f"cannot read: {exc}", path) from None


def is_text_queries(path: str | Path) -> bool:
    """True when the first record of a JSONL queries file has text and no vector (a .npz or a
    JSONL of ``{id, vector}`` holds query vectors)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.suffix == ".npz":
        return False
    record = first_json_object(path)
    return record is not None and "vector" not in record and "text" in record


def load_queries(path: str | Path) -> dict[str, str]:
    """``{query_id: text}`` from a BEIR directory or a queries JSONL(.gz) file (titles ignored)."""
    return dict(_iter_texts(_find(path, "queries"), title=False))


# -- qrels ---------------------------------------------------------------------------------------
def _read_qrels(path: Path) -> tuple[Qrels, dict[str, int]]:
    """Qrels and the line on which each query id first appears."""
    qrels: Qrels = {}
    first_line: dict[str, int] = {}
    header_seen = False
    for lineno, parts in iter_rows(path):
        if len(parts) == 4:  # TREC qrels: qid iteration docid relevance
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise InputError(
                f"expected 3 columns (query-id corpus-id score), got {len(parts)}", path, lineno
            )
        qid, docid, raw = parts
        try:
            score = int(raw)
        except ValueError:
            if not first_line and not header_seen:  # the header line
                header_seen = True
                continue
            raise InputError(f"relevance must be an integer, got {raw!r}", path, lineno) from None
        judged = qrels.setdefault(qid, {})
        first_line.setdefault(qid, lineno)
        if judged.get(docid, score) != score:
            raise InputError(
                f"conflicting judgements for query {qid!r}, document {docid!r}", path, lineno
            )
        judged[docid] = score
    return qrels, first_line


def load_qrels(path: str | Path, split: str = "test") -> Qrels:
    """``{query_id: {doc_id: relevance}}`` from a BEIR qrels TSV (or TREC 4-column) file, or
    from a BEIR directory's ``qrels/<split>.tsv``. A non-numeric first line is a header."""
    return _read_qrels(qrels_path(path, split))[0]


@dataclass
class BeirData:
    """One BEIR split: the corpus, the queries judged in the split, and its qrels."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels
    unknown_qrels_docs: int = 0  # judgements naming a document that is not in the corpus


def load_beir(path: str | Path, split: str = "test") -> BeirData:
    """Load a BEIR directory; queries are restricted to those with judgements in ``split``."""
    path = Path(path)
    qpath = qrels_path(path, split)
    qrels, first_line = _read_qrels(qpath)
    queries = load_queries(path)
    for qid, lineno in first_line.items():
        if qid not in queries:
            raise InputError(f"qrels reference unknown query id {qid!r}", qpath, lineno)
    corpus = load_corpus(path)
    unknown = sum(d not in corpus for judged in qrels.values() for d in judged)
    if unknown:
        warnings.warn(
            f"{qpath}: {unknown} judgements name documents that are not in the corpus",
            stacklevel=2,
        )
    wanted = {qid: text for qid, text in queries.items() if qid in qrels}
    return BeirData(corpus, wanted, qrels, unknown)
