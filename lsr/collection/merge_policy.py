"""Which segments to merge next: a tiered, size-aware policy (the shape of Lucene's).

Segments fall into tiers by live size, each ``merge_factor`` times the one below (the first tier:
up to ``flush_docs x merge_factor`` documents); a tier holding ``merge_factor`` segments merges
its smallest ``merge_factor`` into one of the next tier, so each document is rewritten about
log_factor(N / flush_docs) times. A segment more than half deleted is rewritten alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lsr.collection.config import CollectionConfig
from lsr.collection.segment import Segment


def pick_merge(
    segments: Sequence[Segment],
    n_live: Mapping[str, int],
    config: CollectionConfig,
    *,
    everything: bool = False,
) -> list[Segment]:
    """The segments to merge into one now ([]: none). ``everything``: all of them, when there
    is more than one or any holds deleted documents."""
    if everything:
        dirty = any(n_live[s.name] < s.num_docs for s in segments)
        return list(segments) if len(segments) > 1 or (segments and dirty) else []
    for s in segments:
        if n_live[s.name] * 2 < s.num_docs:
            return [s]
    tiers: dict[int, list[Segment]] = {}
    factor = config.merge_factor
    for s in segments:
        size = max(1, n_live[s.name]) / config.flush_docs
        tiers.setdefault(max(0, math.floor(math.log(max(size, 1), factor))), []).append(s)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= factor:
            return sorted(tiers[tier], key=lambda s: n_live[s.name])[:factor]
    return []
