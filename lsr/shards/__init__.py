"""Sharded collections: N live collections behind one router, in-process or on Ray.

``lsr.shards.layout`` fixes where a document lives (``shard_of``) and the directory layout;
``lsr.shards.collection.ShardedCollection`` fans searches out and merges them exactly as one
collection would. Semantics and the capacity plan: docs/scale.md.
"""

from lsr.shards.layout import SHARDED_FILE, create_sharded, is_sharded, read_layout, shard_of

__all__ = ["SHARDED_FILE", "create_sharded", "is_sharded", "read_layout", "shard_of"]
