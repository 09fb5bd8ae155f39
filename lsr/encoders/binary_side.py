"""``binary``: weight 1.0 for every non-special token present (no model; ``pooling`` is ignored)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from lsr.encoders.transformer_side import TransformerSide
from lsr.encoders.windows import pool_windows, reduce_coo


class BinarySide(TransformerSide):
    """``family="binary"``: 1.0 for every non-special token present; tokenizer only."""

    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        windows = self.windows(texts)
        cols = np.fromiter(
            (t for ids, lo, h in zip(windows.ids, windows.lo, windows.hi, strict=True)
             for t in ids[lo:h]),
            dtype=np.int64,
        )  # fmt: skip
        windows_of = np.repeat(
            np.arange(len(windows)), [h - lo for lo, h in zip(windows.lo, windows.hi, strict=True)]
        )
        keep = cols < len(self.vocab)
        keep[keep] &= self.keep_cols[cols[keep]]
        shape = (len(windows), len(self.vocab))
        ones = np.ones(int(keep.sum()), dtype=np.float32)
        per_window = reduce_coo(windows_of[keep], cols[keep], ones, shape, "max")
        return pool_windows(per_window, np.asarray(windows.text), len(texts), self.config)
