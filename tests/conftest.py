"""Shared fixtures: real SciFact vectors from ../shared and small random collections."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny"
SPLADE_TINY = SHARED / "models" / "splade-tiny"


def random_batch(
    rng: np.random.Generator,
    n_rows: int,
    n_terms: int,
    density: float,
    levels: int = 8,
    prefix: str = "d",
) -> SparseBatch:
    """Random non-negative vectors with weights on a coarse grid (exact float sums, many ties)."""
    mask = rng.random((n_rows, n_terms)) < density
    weights = rng.integers(1, levels + 1, size=(n_rows, n_terms)).astype(np.float32) / 4
    matrix = sp.csr_matrix(np.where(mask, weights, 0).astype(np.float32))
    vocab = Vocabulary([f"t{i}" for i in range(n_terms)], frozen=True)
    return SparseBatch([f"{prefix}{i}" for i in range(n_rows)], matrix, vocab)


def brute_force_topk(
    queries: sp.csr_matrix, docs: sp.csr_matrix, k: int
) -> list[list[tuple[int, float]]]:
    """The oracle: full Q @ D.T, positive scores, highest first, ties by lower doc position."""
    scores = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    out = []
    for row in scores:
        order = np.lexsort((np.arange(row.size), -row))
        out.append([(int(j), float(row[j])) for j in order[:k] if row[j] > 0])
    return out


@pytest.fixture(scope="session")
def splade_vocab() -> Vocabulary:
    return Vocabulary.load(SPLADE_TINY)


@pytest.fixture(scope="session")
def scifact(splade_vocab: Vocabulary) -> dict[str, SparseBatch]:
    from lsr.sparse import read_jsonl

    return {
        name: read_jsonl(VECTORS / f"{name}.jsonl.gz", splade_vocab)
        for name in ("docs", "queries-siamese", "queries-idf")
    }
