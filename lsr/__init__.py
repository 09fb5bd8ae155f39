"""lsr: learned sparse retrieval: sparse encoders, a Numba inverted index, a search service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Hit", "SparseBatch", "SparseIndex", "Vocabulary", "__version__"]

if TYPE_CHECKING:
    from lsr.index.searcher import Hit, SparseIndex
    from lsr.sparse import SparseBatch
    from lsr.vocab import Vocabulary

_EXPORTS = {
    "Hit": "lsr.index.searcher",
    "SparseIndex": "lsr.index.searcher",
    "SparseBatch": "lsr.sparse",
    "Vocabulary": "lsr.vocab",
}


def __getattr__(name: str) -> Any:
    """Import on first use, so `lsr --help` and light users do not pay for Numba."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")
