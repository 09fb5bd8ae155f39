"""lsr: learned sparse retrieval: sparse encoders, a Numba inverted index, a search service."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Hit": "lsr.types",
    "SparseBatch": "lsr.sparse",
    "Vocabulary": "lsr.vocab",
    "SparseIndex": "lsr.index.sparse_index",
    "DenseIndex": "lsr.index.dense_index",
    "Retriever": "lsr.retrieval",
    "FusionConfig": "lsr.retrieval",
    "EncoderConfig": "lsr.encoders.config",
    "SideConfig": "lsr.encoders.config",
    "load_encoder": "lsr.encoders.loading",
    "Collection": "lsr.collection",
    "CollectionConfig": "lsr.collection",
}
__all__ = [
    "Collection",
    "CollectionConfig",
    "DenseIndex",
    "EncoderConfig",
    "FusionConfig",
    "Hit",
    "Retriever",
    "SideConfig",
    "SparseBatch",
    "SparseIndex",
    "Vocabulary",
    "__version__",
    "load_encoder",
]

if TYPE_CHECKING:
    from lsr.collection import Collection, CollectionConfig
    from lsr.encoders.config import EncoderConfig, SideConfig
    from lsr.encoders.loading import load_encoder
    from lsr.index.dense_index import DenseIndex
    from lsr.index.sparse_index import SparseIndex
    from lsr.retrieval import FusionConfig, Retriever
    from lsr.sparse import SparseBatch
    from lsr.types import Hit
    from lsr.vocab import Vocabulary


def __getattr__(name: str) -> Any:
    """Import on first use, so `lsr --help` and light users pay for neither Numba nor torch."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsr' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
