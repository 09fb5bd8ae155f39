"""TREC run files and the two shapes of a run in memory.

Runs: ``{qid: [(docid, score), ...]}`` (best first) or ``{qid: {docid: score}}``; the TREC file
has six columns ``qid Q0 docid rank score tag``, ranks from 1, best score first (equal scores in
the order given). :func:`sort_hits` orders equal scores by docid ascending.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO

from lsr.errors import InputError
from lsr.io import atomic_write, iter_rows, open_text
from lsr.types import Hits, RunLike


def hits_to_dict(hits: Hits, qid: str = "?") -> dict[str, float]:
    """``{docid: score}`` from ``[(docid, score), ...]`` or a mapping; repeated docids raise."""
    if isinstance(hits, Mapping):
        return {str(d): float(s) for d, s in hits.items()}
    out: dict[str, float] = {}
    for docid, score in hits:
        docid = str(docid)
        if docid in out:
            raise InputError(f"query {qid!r}: document {docid!r} appears twice in the run")
        out[docid] = float(score)
    return out


def run_to_dicts(run: RunLike) -> dict[str, dict[str, float]]:
    """A run in either shape as ``{qid: {docid: score}}``."""
    return {str(qid): hits_to_dict(hits, str(qid)) for qid, hits in run.items()}


def sort_hits(hits: Hits) -> list[tuple[str, float]]:
    """``(docid, score)`` pairs, highest score first, equal scores by docid ascending."""
    scores = hits_to_dict(hits)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _check_token(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise InputError(f"{what} {value!r} is empty or contains whitespace (TREC run columns)")
    return value


def write_trec_run(
    results: RunLike,
    path: str | Path,
    tag: str = "lsr",
    *,
    depth: int | None = None,
    score_format: str | None = None,
) -> Path:
    """Write a TREC run (``qid Q0 docid rank score tag``), atomically (temp sibling + rename).

    Hits are sorted by score descending, stably (equal scores keep the order given, so a
    searcher's own tie rule survives), ranked from 1 and cut at ``depth``; queries keep their
    order. Scores are written exactly (shortest round-trip repr) unless ``score_format`` (e.g.
    ``".6f"``) is given. Gzip when the name ends in ``.gz``.
    """
    path = Path(path)
    _check_token(tag, "run tag")

    def write(tmp: Path) -> None:
        with open_text(tmp, "xt") as handle:
            write_trec_lines(handle, results, tag, depth=depth, score_format=score_format)

    return atomic_write(path, write)


def write_trec_lines(
    handle: IO[str],
    results: RunLike,
    tag: str = "lsr",
    *,
    depth: int | None = None,
    score_format: str | None = None,
) -> None:
    """The lines of :func:`write_trec_run`, to an open text stream (stdout, say)."""
    for qid, hits in results.items():
        qid = _check_token(str(qid), "query id")
        ranked = sorted(hits_to_dict(hits, qid).items(), key=lambda h: -h[1])[:depth]
        for rank, (docid, score) in enumerate(ranked, start=1):
            _check_token(docid, "document id")
            text = repr(score) if score_format is None else format(score, score_format)
            handle.write(f"{qid} Q0 {docid} {rank} {text} {tag}\n")


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}`` from a 6-column TREC run file (gzip when named ``.gz``)."""
    run: dict[str, dict[str, float]] = {}
    for lineno, parts in iter_rows(path):
        if len(parts) != 6:
            raise InputError(
                f"expected 6 columns (qid Q0 docid rank score tag), got {len(parts)}", path, lineno
            )
        qid, _, docid, _, raw, _ = parts
        try:
            score = float(raw)
        except ValueError:
            raise InputError(f"score is not a number: {raw!r}", path, lineno) from None
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise InputError(f"document {docid!r} appears twice for query {qid!r}", path, lineno)
        hits[docid] = score
    return run
