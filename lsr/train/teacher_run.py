"""Precompute teacher scores once for a BEIR split (``lsr teachers``), for every distillation run.

Each training query's candidate list is its known positives followed by our BM25 top ``depth``
(bm25s over the whole corpus, positives not repeated), so a list is long enough for per-query
min-max normalisation (:mod:`lsr.train.teachers`) and the trainer can sample hard negatives among
scored documents. Every teacher scores the same lists:

* ``dense:MODEL`` — a sentence-transformers bi-encoder (:class:`lsr.encoders.DenseEncoder`;
  ``all-MiniLM-L6-v2`` is the bundled model), cosine scores;
* ``sparse:MODEL`` — an lsr encoder (:func:`lsr.encoders.load_encoder`, e.g. splade-tiny,
  siamese), dot products.

The result is a :class:`~lsr.train.teachers.TeacherScores` directory (atomic; raw scores kept, so
other weights need no re-scoring: ``TeacherScores.reweighted``). Everything is validated before a
model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lsr.errors import InputError
from lsr.train.teachers import (
    DEFAULT_MIN_CANDIDATES,
    DEFAULT_SCALE,
    BiEncoderTeacher,
    TeacherScores,
    score_candidates,
)

__all__ = ["TeacherSpec", "candidate_lists", "parse_teacher", "precompute_teacher_scores"]

KINDS = ("dense", "sparse")


@dataclass(frozen=True)
class TeacherSpec:
    """One teacher: its name in the scores, its kind and its model (path or bundled name)."""

    name: str
    kind: str
    model: str

    def load(self, max_length: int | None = None) -> BiEncoderTeacher:
        """The teacher's encoder (loads the model); ``max_length`` caps both sides' tokens
        (None: the encoder's defaults)."""
        if self.kind == "dense":
            from lsr.encoders import DenseEncoder

            dense = DenseEncoder(self.model, device="auto", max_seq_length=max_length)
            return BiEncoderTeacher(dense, f"dense:{self.model}")
        from lsr.encoders import load_encoder

        sides = (
            {}
            if max_length is None
            else {
                "query": {"max_length": max_length},
                "document": {"max_length": max_length},
            }
        )
        return BiEncoderTeacher(load_encoder(self.model, **sides), f"sparse:{self.model}")


def parse_teacher(text: str) -> TeacherSpec:
    """``NAME=KIND:MODEL`` (e.g. ``minilm=dense:all-MiniLM-L6-v2``), checked without loading."""
    name, sep, rest = text.partition("=")
    kind, sep2, model = rest.partition(":")
    if not sep or not sep2 or not name or not model:
        raise InputError(f"teacher {text!r}: expected NAME=KIND:MODEL, KIND one of {KINDS}")
    if kind not in KINDS:
        raise InputError(f"teacher {text!r}: kind must be one of {KINDS}, got {kind!r}")
    if kind == "sparse" and not Path(model).is_dir():
        raise InputError(f"teacher {name!r}: sparse model directory not found", model)
    if kind == "dense" and ("/" in model or Path(model).exists()) and not Path(model).is_dir():
        raise InputError(f"teacher {name!r}: dense model directory not found", model)
    return TeacherSpec(name, kind, model)


def candidate_lists(
    corpus: Mapping[str, str],
    queries: Mapping[str, str],
    positives: Mapping[str, Sequence[str]],
    depth: int,
    seed: int = 0,
) -> tuple[dict[str, list[str]], int]:
    """Per query: its positives, then the BM25 top ``depth`` that are not positives; a query
    BM25 finds fewer than ``depth`` documents for is topped up with random other documents
    (seeded per query). Returns the lists and how many queries were topped up."""
    from lsr.baselines.bm25 import Bm25sBaseline
    from lsr.train.mining import query_rng

    most = max((len(p) for p in positives.values()), default=0)
    ranked = Bm25sBaseline().index(corpus).search(queries, k=depth + most)
    doc_ids = sorted(corpus)
    out, topped_up = {}, 0
    for qid in queries:
        pos = [d for d in positives.get(qid, ()) if d in corpus]
        found = [d for d, _ in ranked.get(qid, []) if d not in set(pos)][:depth]
        if len(found) < depth:
            taken = set(pos) | set(found)
            rest = [d for d in doc_ids if d not in taken]
            picks = query_rng(seed, qid).choice(
                len(rest), min(depth - len(found), len(rest)), False
            )
            found += [rest[i] for i in sorted(picks)]
            topped_up += 1
        out[qid] = pos + found
    return out, topped_up


def precompute_teacher_scores(
    beir: str | Path,
    teachers: Sequence[TeacherSpec],
    out: str | Path,
    *,
    split: str = "train",
    depth: int = 30,
    weights: Mapping[str, float] | None = None,
    scale: float = DEFAULT_SCALE,
    min_candidates: int = DEFAULT_MIN_CANDIDATES,
    min_relevance: int = 1,
    max_queries: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TeacherScores:
    """Score the split's queries' candidate lists with every teacher and save the ensemble
    (see the module docstring). Returns the saved scores."""
    from lsr.corpus import load_beir

    say = progress or (lambda _msg: None)
    names = [t.name for t in teachers]
    if not names:
        raise InputError("give at least one teacher")
    if len(set(names)) != len(names):
        raise InputError(f"teacher names must be distinct: {names}")
    if depth + 1 < min_candidates:
        raise InputError(f"depth {depth} gives fewer than min_candidates {min_candidates}")
    if weights is not None and set(weights) != set(names):
        raise InputError(f"weights for {sorted(weights)}, teachers are {sorted(names)}")
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise InputError("output directory exists and is not empty", target)
    data = load_beir(beir, split)
    qids = sorted(
        q for q, judged in data.qrels.items() if any(g >= min_relevance for g in judged.values())
    )
    if max_queries is not None:
        qids = qids[:max_queries]
    if not qids:
        raise InputError(f"no query with a positive in split {split!r}", beir)
    queries = {q: data.queries[q] for q in qids}
    positives = {
        q: [d for d, g in sorted(data.qrels[q].items()) if g >= min_relevance] for q in qids
    }
    say(f"candidates: positives + BM25 top {depth} for {len(qids)} queries")
    candidates, topped_up = candidate_lists(data.corpus, queries, positives, depth, seed)
    if topped_up:
        say(
            f"{topped_up} queries had fewer than {depth} BM25 hits: topped up with random documents"
        )
    short = [q for q, c in candidates.items() if len(c) < min_candidates]
    if short:
        raise InputError(
            f"{len(short)} queries have fewer than {min_candidates} candidates (e.g. {short[0]!r})"
        )
    loaded = {}
    for spec in teachers:
        say(f"loading teacher {spec.name} ({spec.kind}: {spec.model})")
        loaded[spec.name] = spec.load(max_length)
    n_docs = len({d for c in candidates.values() for d in c})
    say(f"scoring {len(qids)} queries x {n_docs} candidate documents with {len(loaded)} teachers")
    raw = score_candidates(loaded, queries, candidates, data.corpus)
    scores = TeacherScores.build(
        raw,
        weights,
        models={n: t.model for n, t in loaded.items()},
        scale=scale,
        min_candidates=min_candidates,
    )
    target.mkdir(parents=True, exist_ok=True)
    scores.save(target)
    return scores
