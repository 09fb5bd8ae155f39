"""A bounded min-heap of hits for top-k selection: the root is the worst hit kept.

Ranking: higher score first; equal scores rank the lower document position first.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index.kernels.layout import OPTS


@njit(inline="always", **OPTS)
def worse(s1, d1, s2, d2):
    """True when hit (s1, d1) ranks below hit (s2, d2)."""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@njit(**OPTS)
def heap_push(scores, docs, size, k, s, d):
    """Offer hit (s, d) to a min-heap of at most k hits; returns the new size."""
    if size < k:
        i = size
        size += 1
        while i > 0:
            parent = (i - 1) >> 1
            if worse(s, d, scores[parent], docs[parent]):
                scores[i] = scores[parent]
                docs[i] = docs[parent]
                i = parent
            else:
                break
        scores[i] = s
        docs[i] = d
        return size
    if not worse(scores[0], docs[0], s, d):
        return size
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and worse(scores[right], docs[right], scores[left], docs[left]):
            child = right
        if worse(scores[child], docs[child], s, d):
            scores[i] = scores[child]
            docs[i] = docs[child]
            i = child
        else:
            break
    scores[i] = s
    docs[i] = d
    return size


@njit(**OPTS)
def heap_sorted(scores, docs, size, out_docs, out_scores):
    """Write the heap's hits best first into the output rows (padding stays as given)."""
    order = np.argsort(docs[:size], kind="mergesort")
    order = order[np.argsort(-scores[:size][order], kind="mergesort")]
    for i in range(size):
        out_docs[i] = docs[order[i]]
        out_scores[i] = scores[order[i]]


@njit(**OPTS)
def merge_parts(part_s, part_d, part_n, k, out_docs, out_scores):
    """Merge the hits of parts of one query (row j: part j's ``part_n[j]`` hits) into the k
    best, written best first into the output rows; returns how many. Ties keep the lower
    document, as in every part."""
    heap_s = np.empty(k, dtype=np.float32)
    heap_d = np.empty(k, dtype=np.int32)
    size = 0
    for j in range(part_n.shape[0]):
        for x in range(part_n[j]):
            size = heap_push(heap_s, heap_d, size, k, part_s[j, x], part_d[j, x])
    heap_sorted(heap_s, heap_d, size, out_docs, out_scores)
    return size
