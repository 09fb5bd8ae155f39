"""Teacher scores for distillation: per-query min-max normalisation, a weighted ensemble, a scale,
precomputed to disk once and reused by every run.

For each query q and each teacher t with raw scores ``r_t(q, d)`` over the query's candidate
list ``C(q)`` (the same list for every teacher):

    n_t(q, d) = (r_t(q, d) − min_C r_t) / (max_C r_t − min_C r_t)           in [0, 1]
    label(q, d) = scale · Σ_t a_t · n_t(q, d) / Σ_t a_t                        in [0, scale]

(``a_t`` the teacher weights, equal by default — the reference sums the normalised scores and
divides by the number of teachers; ``scale`` 30 by default.)

Why a minimum candidate count: min-max maps a query's best candidate to 1 and its worst to 0 for
every teacher. Over a positive and one negative the labels are therefore always {scale, 0}
(e.g. {30, 0}) whatever the teachers' margins — every query gets the same hard target and the
graded information the teachers carry is gone (with teachers that disagree, {30, 0} or {15, 15}).
Normalise over many candidates (a retrieved top-k) and pick the training pairs' labels from that
list afterwards (:meth:`TeacherScores.labels`). Fewer than ``ABSOLUTE_MIN_CANDIDATES`` (3) is
always an error; the default minimum is ``DEFAULT_MIN_CANDIDATES`` (8).

Constant scores (max = min over a query's list, e.g. a sparse teacher whose query shares no term
with any candidate): ``on_constant="uniform"`` (default) gives every candidate n = 1/2, i.e. the
teacher states no preference (it shifts that query's labels by a constant, which changes neither
margins nor a softmax over the list); ``on_constant="error"`` raises. The manifest counts them.

On disk, a directory: ``scores.jsonl`` (one query per line: ``qid``, ``docs``, the raw scores of
each teacher, the labels) and ``manifest.json`` (teachers with weights and models, scale,
normalisation, minimum candidates, candidate counts, constant-score counts, the scores file's
SHA-256). Both are written atomically, the manifest last: a directory without a manifest is
incomplete. Raw scores are kept so other weights or another scale need no re-scoring
(:meth:`TeacherScores.reweighted`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from lsr.errors import InputError
from lsr.io import atomic_write, read_json, sha256_file

__all__ = [
    "ABSOLUTE_MIN_CANDIDATES",
    "DEFAULT_MIN_CANDIDATES",
    "DEFAULT_SCALE",
    "BiEncoderTeacher",
    "TeacherScores",
    "ensemble",
    "minmax_normalise",
    "score_candidates",
]

DEFAULT_SCALE = 30.0
DEFAULT_MIN_CANDIDATES = 8
ABSOLUTE_MIN_CANDIDATES = 3
FORMAT = "lsr-teacher-scores"
VERSION = 1
MANIFEST = "manifest.json"
SCORES = "scores.jsonl"

OnConstant = Literal["uniform", "error"]


def _check_min(min_candidates: int) -> None:
    if min_candidates < ABSOLUTE_MIN_CANDIDATES:
        raise InputError(
            f"min_candidates must be >= {ABSOLUTE_MIN_CANDIDATES}: min-max over 2 candidates "
            "always gives {0, 1}, whatever the teacher's margin"
        )


def minmax_normalise(
    scores: Sequence[float] | np.ndarray,
    *,
    min_candidates: int = DEFAULT_MIN_CANDIDATES,
    on_constant: OnConstant = "uniform",
) -> np.ndarray:
    """One query's raw scores min-max normalised to [0, 1] (float64).

    InputError for fewer than ``min_candidates`` scores (see the module docstring: over 2 the
    result is always {0, 1}), non-finite scores, or — with ``on_constant="error"`` — a constant
    list; a constant list is otherwise all 0.5.
    """
    _check_min(min_candidates)
    if on_constant not in ("uniform", "error"):
        raise InputError(f"on_constant must be 'uniform' or 'error', got {on_constant!r}")
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"expected one query's scores (a vector), got shape {x.shape}")
    if x.size < min_candidates:
        raise InputError(
            f"{x.size} candidates, need at least {min_candidates}: min-max normalisation maps "
            "the best to 1 and the worst to 0, so over few candidates (a positive and a negative: "
            "always {0, 1} → labels {0, scale}) the teacher's graded scores are lost"
        )
    if not np.isfinite(x).all():
        raise InputError("teacher scores must be finite")
    lo, hi = x.min(), x.max()
    if hi == lo:
        if on_constant == "error":
            raise InputError("constant teacher scores: min-max normalisation is undefined")
        return np.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def _weights(names: Iterable[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    names = list(names)
    if not names:
        raise InputError("no teachers")
    if weights is None:
        return dict.fromkeys(names, 1.0)
    if set(weights) != set(names):
        raise InputError(f"weights for {sorted(weights)}, teachers are {sorted(names)}")
    out = {n: float(weights[n]) for n in names}
    if any(not np.isfinite(w) or w < 0 for w in out.values()) or sum(out.values()) <= 0:
        raise InputError(f"teacher weights must be finite, >= 0 and not all 0: {out}")
    return out


def ensemble(
    raw: Mapping[str, Sequence[float] | np.ndarray],
    weights: Mapping[str, float] | None = None,
    *,
    scale: float = DEFAULT_SCALE,
    min_candidates: int = DEFAULT_MIN_CANDIDATES,
    on_constant: OnConstant = "uniform",
) -> np.ndarray:
    """One query's labels: each teacher's raw scores (aligned on one candidate list) min-max
    normalised, averaged with ``weights`` (equal when None), times ``scale``."""
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"scale must be > 0, got {scale}")
    w = _weights(raw, weights)
    sizes = {len(v) for v in raw.values()}
    if len(sizes) != 1:
        raise InputError(f"teachers scored different numbers of candidates: {sorted(sizes)}")
    total = sum(
        w[name] * minmax_normalise(s, min_candidates=min_candidates, on_constant=on_constant)
        for name, s in raw.items()
    )
    return scale * total / sum(w.values())


@dataclass
class QueryScores:
    """One query's candidates, each teacher's raw scores on them and the ensemble labels."""

    docs: list[str]
    raw: dict[str, np.ndarray]
    labels: np.ndarray


@dataclass
class TeacherScores:
    """Ensemble teacher labels for many queries, with the raw scores they came from.

    ``teachers`` maps each teacher's name to ``{"weight": a_t, "model": description}``.
    """

    teachers: dict[str, dict[str, Any]]
    scale: float
    min_candidates: int
    on_constant: OnConstant
    queries: dict[str, QueryScores] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        raw: Mapping[str, Mapping[str, Mapping[str, float]]],
        weights: Mapping[str, float] | None = None,
        *,
        models: Mapping[str, str] | None = None,
        scale: float = DEFAULT_SCALE,
        min_candidates: int = DEFAULT_MIN_CANDIDATES,
        on_constant: OnConstant = "uniform",
    ) -> TeacherScores:
        """From ``raw[teacher][qid][doc_id] = score``. Every teacher must score the same queries
        and, per query, the same candidates (InputError otherwise)."""
        _check_min(min_candidates)
        w = _weights(raw, weights)
        names = list(raw)
        qids = list(raw[names[0]])
        for name in names[1:]:
            if set(raw[name]) != set(qids):
                raise InputError(f"teacher {name!r} scored other queries than {names[0]!r}")
        models = dict(models or {})
        teachers = {n: {"weight": w[n], "model": models.get(n, "")} for n in names}
        out = cls(teachers, float(scale), int(min_candidates), on_constant)
        for qid in qids:
            docs = list(raw[names[0]][qid])
            for name in names[1:]:
                if set(raw[name][qid]) != set(docs):
                    raise InputError(
                        f"query {qid!r}: teacher {name!r} scored other candidates than {names[0]!r}"
                    )
            scores = {n: np.array([raw[n][qid][d] for d in docs], np.float64) for n in names}
            out.queries[str(qid)] = QueryScores(docs, scores, out._labels(qid, scores))
        return out

    def _labels(self, qid: str, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        weights = {n: t["weight"] for n, t in self.teachers.items()}
        try:
            return ensemble(
                raw,
                weights,
                scale=self.scale,
                min_candidates=self.min_candidates,
                on_constant=self.on_constant,
            )
        except InputError as exc:
            raise InputError(f"query {qid!r}: {exc}") from None

    def reweighted(
        self, weights: Mapping[str, float] | None = None, scale: float | None = None
    ) -> TeacherScores:
        """The same raw scores under other teacher weights (equal when None) and/or scale."""
        w = _weights(self.teachers, weights)
        teachers = {n: {**t, "weight": w[n]} for n, t in self.teachers.items()}
        out = TeacherScores(
            teachers,
            self.scale if scale is None else float(scale),
            self.min_candidates,
            self.on_constant,
        )
        for qid, q in self.queries.items():
            out.queries[qid] = QueryScores(q.docs, q.raw, out._labels(qid, q.raw))
        return out

    def __len__(self) -> int:
        return len(self.queries)

    def labels(self, qid: str, docs: Sequence[str] | None = None) -> list[float]:
        """The labels of ``docs`` (all candidates, in stored order, when None) for ``qid``, e.g.
        the positive and negatives of one training example (labels for SparseDistillKLDivLoss /
        SparseMarginMSELoss). KeyError naming what is missing."""
        q = self.queries.get(qid)
        if q is None:
            raise KeyError(f"no teacher scores for query {qid!r}")
        if docs is None:
            return q.labels.tolist()
        where = {d: i for i, d in enumerate(q.docs)}
        missing = [d for d in docs if d not in where]
        if missing:
            raise KeyError(f"query {qid!r}: no teacher scores for candidates {missing}")
        return [float(q.labels[where[d]]) for d in docs]

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``qid → {doc id: label}``."""
        return {
            qid: dict(zip(q.docs, q.labels.tolist(), strict=True))
            for qid, q in self.queries.items()
        }

    def manifest(self) -> dict[str, Any]:
        sizes = [len(q.docs) for q in self.queries.values()]
        constant = {
            n: sum(1 for q in self.queries.values() if q.raw[n].max() == q.raw[n].min())
            for n in self.teachers
        }
        return {
            "format": FORMAT,
            "version": VERSION,
            "teachers": self.teachers,
            "scale": self.scale,
            "normalisation": "per-query min-max over the candidate list, then weighted mean",
            "min_candidates": self.min_candidates,
            "on_constant": self.on_constant,
            "queries": len(sizes),
            "candidates": {
                "min": min(sizes, default=0),
                "max": max(sizes, default=0),
                "total": sum(sizes),
            },
            "constant_queries": constant,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``scores.jsonl`` then ``manifest.json`` (each atomically) into ``directory``."""
        directory = Path(directory)

        def write_scores(tmp: Path) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                for qid, q in self.queries.items():
                    row = {
                        "qid": qid,
                        "docs": q.docs,
                        "raw": {n: s.tolist() for n, s in q.raw.items()},
                        "labels": q.labels.tolist(),
                    }
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")

        scores = atomic_write(directory / SCORES, write_scores)
        manifest = {**self.manifest(), "scores_file": SCORES, "scores_sha256": sha256_file(scores)}
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        atomic_write(directory / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TeacherScores:
        """Read a directory written by :meth:`save`; InputError when the manifest is missing or
        of another format, or the scores file does not match its checksum."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise InputError("no teacher-score manifest (incomplete, or not scores)", path)
        manifest = read_json(path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InputError(f"not a {FORMAT} manifest", path)
        if manifest.get("version") != VERSION:
            raise InputError(f"unsupported version {manifest.get('version')!r}", path)
        scores = directory / manifest["scores_file"]
        if not scores.is_file() or sha256_file(scores) != manifest["scores_sha256"]:
            raise InputError("scores file missing or does not match the manifest", scores)
        out = cls(
            {n: dict(t) for n, t in manifest["teachers"].items()},
            float(manifest["scale"]),
            int(manifest["min_candidates"]),
            manifest["on_constant"],
        )
        with open(scores, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                raw = {n: np.asarray(row["raw"][n], np.float64) for n in out.teachers}
                out.queries[row["qid"]] = QueryScores(
                    list(row["docs"]), raw, np.asarray(row["labels"], np.float64)
                )
        if len(out.queries) != manifest["queries"]:
            raise InputError(f"{len(out.queries)} queries, manifest says {manifest['queries']}")
        return out


class _Encodes(Protocol):
    def encode_query(self, texts: Sequence[str]) -> Any: ...
    def encode_document(self, texts: Sequence[str]) -> Any: ...


@dataclass
class BiEncoderTeacher:
    """A teacher that scores by dot product between its query and document vectors: an lsr
    :class:`~lsr.encoders.Encoder` (``encode_*`` → SparseBatch; a siamese splade-tiny) or a
    :class:`~lsr.encoders.DenseEncoder` (``encode_*`` → ndarray; all-MiniLM-L6-v2, unit rows, so
    cosine). ``model`` describes it in the manifest."""

    encoder: _Encodes
    model: str = ""

    @staticmethod
    def _matrix(out: Any) -> Any:
        return out.matrix if hasattr(out, "matrix") else np.asarray(out)

    def score(self, queries: Sequence[str], documents: Sequence[str]) -> tuple[Any, Any]:
        """``(Q, D)`` matrices; ``Q[i] · D[j]`` is the score of document j for query i."""
        q = self._matrix(self.encoder.encode_query(list(queries)))
        d = self._matrix(self.encoder.encode_document(list(documents)))
        return q, d


def score_candidates(
    teachers: Mapping[str, BiEncoderTeacher],
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    documents: Mapping[str, str],
) -> dict[str, dict[str, dict[str, float]]]:
    """``raw[teacher][qid][doc_id]``: every teacher scores each query's candidates (each query
    and each distinct candidate document is encoded once per teacher). The result feeds
    :meth:`TeacherScores.build`."""
    missing_q = [q for q in candidates if q not in queries]
    if missing_q:
        raise InputError(f"no text for queries {missing_q[:5]}")
    doc_ids = sorted({d for ds in candidates.values() for d in ds})
    missing_d = [d for d in doc_ids if d not in documents]
    if missing_d:
        raise InputError(f"no text for candidate documents {missing_d[:5]}")
    qids = list(candidates)
    column = {d: j for j, d in enumerate(doc_ids)}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, teacher in teachers.items():
        q, d = teacher.score([queries[i] for i in qids], [documents[i] for i in doc_ids])
        per_query: dict[str, dict[str, float]] = {}
        for row, qid in enumerate(qids):
            cols = [column[x] for x in candidates[qid]]
            s = d[cols] @ q[row].T
            s = np.asarray(s.toarray() if hasattr(s, "toarray") else s, np.float64).ravel()
            per_query[qid] = dict(zip(candidates[qid], s.tolist(), strict=True))
        out[name] = per_query
    return out
