"""Live collections: segments, write buffer, write-ahead log, metadata filters.

``Collection.create`` / ``Collection.open`` (lsr.collection.collection) is the entry point;
semantics are in docs/collections.md.
"""

from lsr.collection.collection import Collection, Match, WriteResult
from lsr.collection.config import CollectionConfig
from lsr.collection.filters import Filter, parse_filter
from lsr.collection.prf import DensePrf, PrfConfig, SparsePrf
from lsr.collection.reader import CollectionReader
from lsr.collection.schema import Schema
from lsr.collection.snapshot import DocVector

__all__ = [
    "Collection",
    "CollectionConfig",
    "CollectionReader",
    "DensePrf",
    "DocVector",
    "Filter",
    "Match",
    "PrfConfig",
    "Schema",
    "SparsePrf",
    "WriteResult",
    "parse_filter",
]
