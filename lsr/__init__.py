"""lsr: learned sparse retrieval — SPLADE-style encoders, a Numba inverted index, a search service."""

__version__ = "0.1.0"

from lsr.index.searcher import Hit, SparseIndex  # noqa: E402
from lsr.sparse import SparseBatch  # noqa: E402
from lsr.vocab import Vocabulary  # noqa: E402

__all__ = ["Hit", "SparseBatch", "SparseIndex", "Vocabulary", "__version__"]
