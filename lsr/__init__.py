"""lsr: learned sparse retrieval: sparse encoders, a Numba inverted index, a search service."""

__version__ = "0.1.0"

from lsr.index.searcher import Hit, SparseIndex
from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

__all__ = ["Hit", "SparseBatch", "SparseIndex", "Vocabulary", "__version__"]
