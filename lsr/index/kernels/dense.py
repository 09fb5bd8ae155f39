"""Inner products of dense rows with one vector, each row summed alone in a fixed order.

BLAS matrix-vector products may round a row's dot product differently depending on how many rows
are multiplied together and where the row sits (blocking, SIMD remainders), so two copies of one
vector can score differently. Here each row is accumulated in float64, element by element, and
rounded once to float32: a row scores the same bits in any segment, shard or batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)  # one thread: callers already run searches in parallel
def row_dots(rows: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """float32 ``rows @ vector``, each row summed in float64 in index order."""
    n, dim = rows.shape
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        total = 0.0
        for j in range(dim):
            total += np.float64(rows[i, j]) * np.float64(vector[j])
        out[i] = np.float32(total)
    return out
