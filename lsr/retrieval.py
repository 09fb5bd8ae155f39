"""Text in, hits out: an index opened together with the query encoder its manifest names.

``Retriever.open(path)`` reads the sparse index's manifest: an inference-free index answers with
its stored tokenizer and IDF table (no model is loaded); a siamese one loads the model's query
side on first use (``model=`` points at a copy when the recorded path is gone). A dense
companion index (``lsr index build --dense``) enables ``dense`` and ``hybrid`` search.

A Retriever is safe to share between threads: encoders load once (under a lock), and timings
are reported per call into a :class:`Timings` the caller owns, never accumulated on the object.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lsr.errors import InputError
from lsr.index.sparse_index import SparseIndex
from lsr.sparse import SparseBatch
from lsr.types import Hit, check_k

if TYPE_CHECKING:
    from lsr.encoders.base import SideEncoder
    from lsr.encoders.dense_encoder import DenseEncoder
    from lsr.index.dense_index import DenseIndex

Mode = Literal["sparse", "dense", "hybrid"]
MODES: tuple[str, ...] = ("sparse", "dense", "hybrid")
FUSIONS: tuple[str, ...] = ("rrf", "minmax", "zscore")


@dataclass
class FusionConfig:
    """How hybrid search fuses the sparse and dense runs (see :mod:`lsr.fusion`)."""

    method: Literal["rrf", "minmax", "zscore"] = "rrf"
    alpha: float = 0.5  # weight of the sparse run in a convex combination
    rrf_k: int = 60
    depth: int = 100  # hits taken from each run before fusing
    rrf_weights: tuple[float, float] = (1.0, 1.0)  # (sparse, dense) in weighted RRF

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.method!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must lie in [0, 1], got {self.alpha}")
        check_k(self.depth, "fusion depth")
        weights = tuple(float(w) for w in self.rrf_weights)
        if len(weights) != 2 or any(not math.isfinite(w) or w < 0 for w in weights):
            raise InputError(f"rrf_weights are two finite numbers >= 0, got {self.rrf_weights}")
        self.rrf_weights = weights  # type: ignore[assignment]


@dataclass
class Timings:
    """Seconds one call spent encoding queries and searching (pass one in to have it filled)."""

    encode: float = 0.0
    search: float = 0.0


class Retriever:
    """A sparse index (and optional dense companion) that takes text queries."""

    def __init__(
        self, sparse: SparseIndex, dense: DenseIndex | None = None, *, model: str | None = None
    ) -> None:
        if "encoder" not in sparse.manifest:
            raise InputError(
                "this index was built from vectors and names no encoder; search it with "
                "--vector/--queries vector files, or rebuild it with --corpus and --model",
                sparse.path,
            )
        self.sparse = sparse
        self.dense = dense
        self.model = model  # where the siamese query model is, when not where the manifest says
        self._query_encoder: SideEncoder | None = None
        self._dense_encoder: DenseEncoder | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        verify: bool = False,
        dense: bool = True,
        model: str | None = None,
    ) -> Retriever:
        """Open the index at ``path`` and, when its manifest names one, the dense companion.

        ``model``: the siamese query model's location, when it moved since the index was built.
        """
        sparse = SparseIndex.open(path, verify=verify)
        dense_index = None
        companion = sparse.manifest.get("dense")
        if dense and companion:
            from lsr.index.dense_index import DenseIndex

            dense_path = (Path(path).absolute().parent / companion["path"]).resolve()
            dense_index = DenseIndex.open(dense_path, verify=verify)
        return cls(sparse, dense_index, model=model)

    @property
    def query_mode(self) -> str:
        return str(self.sparse.manifest["encoder"]["config"]["query_mode"])

    # -- encoders (loaded on first use) -------------------------------------------------------
    @property
    def query_encoder(self) -> SideEncoder:
        if self._query_encoder is None:
            with self._lock:
                if self._query_encoder is None:
                    from lsr.encoders.loading import load_query_encoder

                    self._query_encoder = load_query_encoder(
                        self.sparse.manifest["encoder"], self.sparse.path, model=self.model
                    )
        return self._query_encoder

    @property
    def dense_encoder(self) -> DenseEncoder:
        if self.dense is None:
            raise InputError("this index has no dense companion", self.sparse.path)
        if self._dense_encoder is None:
            with self._lock:
                if self._dense_encoder is None:
                    from lsr.encoders.dense_encoder import DenseEncoder

                    self._dense_encoder = DenseEncoder.from_identity(self.dense.manifest["encoder"])
        return self._dense_encoder

    def encode_query(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        """Sparse query vectors, as this index's query side makes them."""
        return self.query_encoder.encode(list(texts), ids)

    def warm_up(self, k: int = 10, *, mode: Mode = "sparse") -> dict[str, float]:
        """Load the encoders ``mode`` needs and compile the kernels; seconds spent per stage.

        What a first query would otherwise pay on top of its own latency (model load, torch's
        first call, Numba compilation or cache load).
        """
        self._check(mode)
        spent: dict[str, float] = {}
        started = time.perf_counter()
        if mode != "dense":
            self.query_encoder.encode_one("warm up")
            spent["query encoder"] = time.perf_counter() - started
            started = time.perf_counter()
            self.sparse.warm_up(k)
            spent["kernels"] = time.perf_counter() - started
        if mode != "sparse":
            started = time.perf_counter()
            self.dense_encoder.encode_query(["warm up"])
            spent["dense encoder"] = time.perf_counter() - started
        return spent

    # -- search -------------------------------------------------------------------------------
    def _check(self, mode: str) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode != "sparse" and self.dense is None:
            raise InputError(
                f"{mode} search needs a dense index: build with `lsr index build --dense MODEL`",
                self.sparse.path,
            )

    def search(
        self,
        text: str,
        k: int = 10,
        *,
        mode: Mode = "sparse",
        fusion: FusionConfig | None = None,
        timings: Timings | None = None,
    ) -> list[Hit]:
        """Top-k hits for one text query (the low-latency path: no batch machinery)."""
        if mode != "sparse":
            return self.batch_search([text], k, mode=mode, fusion=fusion, timings=timings)[0]
        if not isinstance(text, str):
            raise InputError(f"a query is a string, got {type(text).__name__}")
        started = time.perf_counter()
        query = self.query_encoder.encode_one(text)
        encoded = time.perf_counter()
        hits = self.sparse.search(query, k)
        if timings is not None:
            timings.encode += encoded - started
            timings.search += time.perf_counter() - encoded
        return hits

    def batch_search(
        self,
        texts: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "sparse",
        fusion: FusionConfig | None = None,
        threads: int | None = None,
        timings: Timings | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each text query, by sparse, dense or hybrid (fused) retrieval."""
        k = check_k(k)
        self._check(mode)
        texts = list(texts)
        if not texts:
            return []
        fusion = fusion or FusionConfig()
        depth = k if mode != "hybrid" else max(k, fusion.depth)
        timings = timings if timings is not None else Timings()
        sparse_hits = dense_hits = None
        if mode in ("sparse", "hybrid"):
            started = time.perf_counter()
            queries = self.encode_query(texts)
            encoded = time.perf_counter()
            sparse_hits = self.sparse.batch_search(queries, depth, threads=threads)
            timings.encode += encoded - started
            timings.search += time.perf_counter() - encoded
        if mode in ("dense", "hybrid"):
            started = time.perf_counter()
            vectors = self.dense_encoder.encode_query(texts)
            encoded = time.perf_counter()
            assert self.dense is not None
            dense_hits = self.dense.batch_search(vectors, depth, threads=threads)
            timings.encode += encoded - started
            timings.search += time.perf_counter() - encoded
        if mode == "sparse":
            assert sparse_hits is not None
            return sparse_hits
        if mode == "dense":
            assert dense_hits is not None
            return dense_hits
        assert sparse_hits is not None and dense_hits is not None
        from lsr.fusion import fuse_hits

        return [fuse_hits(s, d, k, fusion) for s, d in zip(sparse_hits, dense_hits, strict=True)]
