"""BEIR training data → a ``datasets.Dataset`` in the column layout sentence-transformers' losses
expect: ``query``, ``positive``, ``negative_1`` .. ``negative_n`` (texts) and, for distillation,
``label``: the teacher labels of ``[positive, negative_1, ..., negative_n]`` (what
SparseDistillKLDivLoss and SparseMarginMSELoss take as ``(batch, 1 + n)``).

One example per (query, positive) pair of the split (grade >= ``min_relevance``); a query's
negatives are mined once (:mod:`lsr.train.mining`) and shared by its positives. Queries are
taken in sorted id order; ``dev_queries`` of them are held out first (a seeded sample, never
trained on), then ``max_queries`` keeps the first N of the rest. With teacher scores, negatives
are sampled among the teacher's candidates of the query and examples whose positive has no
teacher score are dropped (counted in :attr:`TrainingData.dropped`).

Self-supervised mode (``data.mode: title_abstract``, :func:`build_title_data`), for a corpus
without queries: each document with a non-empty title and text is one example, its title the
query and its text (without the title) the positive. Every document's text (titles left out, so
that a title never retrieves its own words back) is the corpus that negatives are mined from
(BM25 with the title as the query, the document itself excluded) and that the dev slice is cut
from; ``dev_queries`` titles are held out the same way as qrels queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsr.errors import InputError
from lsr.train.config import TrainConfig
from lsr.train.mining import mine_bm25_negatives

__all__ = [
    "DevSlice",
    "TrainingData",
    "build_title_data",
    "build_training_data",
    "columns",
    "titled_corpus",
]


def columns(negatives: int, labels: bool = False) -> list[str]:
    """The dataset's column names in order."""
    cols = ["query", "positive"] + [f"negative_{i}" for i in range(1, negatives + 1)]
    return cols + (["label"] if labels else [])


@dataclass
class DevSlice:
    """Held-out queries, their qrels and the documents the dev evaluation encodes."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    doc_ids: list[str]


@dataclass
class TrainingData:
    """What the trainer needs from the data side."""

    dataset: Any  # datasets.Dataset
    corpus: dict[str, str]
    train_queries: list[str]
    examples: int
    dropped: int = 0
    topped_up: int = 0
    dev: DevSlice | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _split_queries(qids: list[str], dev: int, seed: int) -> tuple[list[str], list[str]]:
    if dev == 0:
        return qids, []
    if dev >= len(qids):
        raise InputError(f"data.dev_queries {dev} leaves no training query ({len(qids)} in all)")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(qids), size=dev, replace=False).tolist())
    return [q for i, q in enumerate(qids) if i not in held], [qids[i] for i in sorted(held)]


def dev_slice(
    corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]], depth: int
) -> DevSlice:
    """The dev re-ranking slice: every judged document of ``queries`` plus their BM25 top
    ``depth``."""
    from lsr.baselines.bm25 import Bm25sBaseline

    ranked = Bm25sBaseline().index(corpus).search(queries, k=depth)
    docs = {doc for hits in ranked.values() for doc, _ in hits}
    docs |= {doc for judged in qrels.values() for doc in judged if doc in corpus}
    return DevSlice(queries, qrels, sorted(docs))


def _summary(
    d: Any,
    train_ids: list[str],
    n: int,
    mined: Any,
    dev_ids: list[str],
    dev: DevSlice | None,
    corpus: dict[str, str],
) -> dict[str, Any]:
    """The counts every data mode reports."""
    return {
        "queries": len(train_ids),
        "examples": n,
        "negatives": d.negatives,
        "mining": d.mining,
        "topped_up": mined.topped_up if mined is not None else 0,
        "dev_queries": len(dev_ids),
        "dev_docs": len(dev.doc_ids) if dev is not None else 0,
        "corpus": len(corpus),
    }


def build_training_data(config: TrainConfig, teachers: Any = None) -> TrainingData:
    """Load the BEIR split, mine negatives and build the dataset (see the module docstring).

    ``teachers``: a loaded :class:`~lsr.train.teachers.TeacherScores` for marginmse / kl.
    """
    from datasets import Dataset

    from lsr.corpus import load_beir

    d, seed = config.data, config.train.seed
    if d.mode == "title_abstract":
        return build_title_data(config)
    beir = load_beir(d.beir, d.split)
    qrels = beir.qrels
    qids = sorted(
        q for q, judged in qrels.items() if any(g >= d.min_relevance for g in judged.values())
    )
    if not qids:
        raise InputError(f"no query with a positive (grade >= {d.min_relevance}) in {d.split}")
    train_ids, dev_ids = _split_queries(qids, d.dev_queries, seed)
    if d.max_queries is not None:
        train_ids = train_ids[: d.max_queries]
    corpus = beir.corpus
    positives = {
        q: [doc for doc, g in sorted(qrels[q].items()) if g >= d.min_relevance and doc in corpus]
        for q in train_ids
    }
    allowed = None
    if teachers is not None:
        missing = [q for q in train_ids if q not in teachers.queries]
        train_ids = [q for q in train_ids if q in teachers.queries]
        if not train_ids:
            raise InputError("the teacher scores cover none of the training queries")
        allowed = {q: teachers.queries[q].docs for q in train_ids}
    else:
        missing = []
    queries = {q: beir.queries[q] for q in train_ids}
    mined = (
        mine_bm25_negatives(
            corpus,
            queries,
            {q: qrels[q] for q in train_ids},
            d.negatives,
            depth=d.mining_depth,
            skip_top=d.skip_top,
            seed=seed,
            allowed=allowed,
        )
        if d.mining == "bm25" and d.negatives
        else None
    )
    rows: dict[str, list[Any]] = {c: [] for c in columns(d.negatives, teachers is not None)}
    dropped = 0
    for q in train_ids:
        negs = mined.negatives[q] if mined is not None else []
        for pos in positives[q]:
            label = None
            if teachers is not None:
                try:
                    label = teachers.labels(q, [pos, *negs])
                except KeyError:
                    dropped += 1
                    continue
            rows["query"].append(queries[q])
            rows["positive"].append(corpus[pos])
            for i, neg in enumerate(negs, 1):
                rows[f"negative_{i}"].append(corpus[neg])
            if label is not None:
                rows["label"].append(label)
    n = len(rows["query"])
    if n == 0:
        raise InputError("no training example left (no positive in the corpus, or none scored)")
    dev = None
    if dev_ids:
        dev_queries = {q: beir.queries[q] for q in dev_ids}
        dev = dev_slice(corpus, dev_queries, {q: dict(qrels[q]) for q in dev_ids}, d.dev_depth)
    summary = {
        "split": d.split,
        **_summary(d, train_ids, n, mined, dev_ids, dev, corpus),
        "dropped_unscored": dropped,
        "queries_without_teacher": len(missing),
    }
    return TrainingData(
        dataset=Dataset.from_dict(rows),
        corpus=corpus,
        train_queries=train_ids,
        examples=n,
        dropped=dropped,
        topped_up=summary["topped_up"],
        dev=dev,
        summary=summary,
    )


def titled_corpus(beir: str) -> tuple[dict[str, str], dict[str, str]]:
    """(titles of the documents that have a non-empty title, every document's text without
    its title) from a BEIR corpus, in file order."""
    from lsr.corpus import _field, corpus_file
    from lsr.io import iter_json_objects

    path = corpus_file(beir)
    titles: dict[str, str] = {}
    texts: dict[str, str] = {}
    for lineno, record in iter_json_objects(path):
        did = _field(record, "_id", path, lineno, required=True)
        if did in texts:
            raise InputError(f"duplicate id {did!r}", path, lineno)
        texts[did] = _field(record, "text", path, lineno, required=True)
        title = _field(record, "title", path, lineno, required=False).strip()
        if title:
            titles[did] = title
    return titles, texts


def build_title_data(config: TrainConfig) -> TrainingData:
    """Self-supervised (title -> text) examples with BM25 negatives (see the module doc)."""
    from datasets import Dataset

    d, seed = config.data, config.train.seed
    titles, corpus = titled_corpus(d.beir)
    qids = sorted(q for q in titles if corpus[q].strip())
    if not qids:
        raise InputError("data.mode title_abstract: no document has both a title and a text")
    train_ids, dev_ids = _split_queries(qids, d.dev_queries, seed)
    if d.max_queries is not None:
        train_ids = train_ids[: d.max_queries]
    queries = {q: titles[q] for q in train_ids}
    mined = (
        mine_bm25_negatives(
            corpus,
            queries,
            {q: [q] for q in train_ids},
            d.negatives,
            depth=d.mining_depth,
            skip_top=d.skip_top,
            seed=seed,
        )
        if d.mining == "bm25" and d.negatives
        else None
    )
    rows: dict[str, list[Any]] = {c: [] for c in columns(d.negatives)}
    for q in train_ids:
        rows["query"].append(queries[q])
        rows["positive"].append(corpus[q])
        for i, neg in enumerate(mined.negatives[q] if mined is not None else [], 1):
            rows[f"negative_{i}"].append(corpus[neg])
    dev = None
    if dev_ids:
        dev_queries = {q: titles[q] for q in dev_ids}
        dev = dev_slice(corpus, dev_queries, {q: {q: 1} for q in dev_ids}, d.dev_depth)
    n = len(rows["query"])
    summary = {
        "mode": d.mode,
        "titled_documents": len(qids),
        **_summary(d, train_ids, n, mined, dev_ids, dev, corpus),
    }
    return TrainingData(
        dataset=Dataset.from_dict(rows),
        corpus=corpus,
        train_queries=train_ids,
        examples=n,
        topped_up=summary["topped_up"],
        dev=dev,
        summary=summary,
    )
