"""Queries and encoders of a collection: {token: weight} dicts, the canonical term order, and the
document encoder rebuilt from what the collection recorded at creation."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import InputError
from lsr.index import kernels
from lsr.sparse import TermWeights
from lsr.vocab import Vocabulary


def dict_query(query: Mapping[str, float], vocab: Vocabulary) -> TermWeights:
    """``{token: weight}`` as term ids; tokens outside the vocabulary are dropped (no document
    can have them, so they score nothing)."""
    terms, weights = [], []
    for token, weight in query.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float | np.number):
            raise InputError(f"weight of {token!r} is not a number: {weight!r}")
        tid = vocab.get(token)
        if tid is not None:
            terms.append(tid)
            weights.append(weight)
    return TermWeights(np.asarray(terms, np.int64), np.asarray(weights, np.float32))


@functools.cache
def _unit_bounds(n_terms: int) -> np.ndarray:
    """Term bounds of 1 (canonical_query then only checks and prunes; we sort by term id)."""
    bounds = np.ones(n_terms, dtype=np.float32)
    bounds.flags.writeable = False
    return bounds


def in_term_order(query: TermWeights, n_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """The query checked (InputError), zero weights dropped, terms ascending: the order in which
    every part of a collection sums a score, so a document scores the same bits anywhere."""
    status, terms, weights = kernels.canonical_query(
        np.asarray(query.terms, dtype=np.int64),
        np.asarray(query.weights, dtype=np.float32),
        _unit_bounds(n_terms),
        np.float32(0.0),
        0,
    )
    if status != kernels.query.OK:
        raise InputError(kernels.query.PROBLEMS[status].format(n=n_terms))
    order = np.argsort(terms, kind="stable")
    return terms[order], weights[order]


def load_document_encoder(manifest: Mapping[str, Any], path: Path, model: str | None) -> Any:
    """The document side of the encoder a collection recorded (inference-free: with the
    collection's own IDF table)."""
    from lsr.encoders import load_encoder
    from lsr.encoders.config import EncoderConfig
    from lsr.encoders.idf_table import IdfTable

    config = EncoderConfig.model_validate(manifest["config"])
    local = model or (manifest.get("model") or {}).get("local") or config.model
    overrides: dict[str, Any] = {"model": local}
    if config.inference_free:
        overrides["idf"] = None
        encoder_config = config.model_copy(update=overrides)
        vocab_path = path / "vocab.json"
        idf_table = IdfTable.load(path / "idf.json", Vocabulary.load(vocab_path))
        return load_encoder(encoder_config, idf_table=idf_table)
    return load_encoder(config.model_copy(update=overrides))
