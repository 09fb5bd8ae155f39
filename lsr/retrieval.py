"""Text in, hits out: an index opened together with the query encoder its manifest names.

``Retriever.open(path)`` reads the sparse index's manifest: an inference-free index answers with
its stored tokenizer and IDF table (no model is loaded); a siamese one loads the model's query
side on first use. A dense companion index (``lsr index build --dense``) enables ``dense`` and
``hybrid`` search.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lsr.errors import InputError
from lsr.index.searcher import Hit, SparseIndex
from lsr.sparse import SparseBatch

Mode = Literal["sparse", "dense", "hybrid"]
MODES: tuple[str, ...] = ("sparse", "dense", "hybrid")


@dataclass
class FusionConfig:
    """How hybrid search fuses the sparse and dense runs (see :mod:`lsr.fusion`)."""

    method: Literal["rrf", "minmax", "zscore"] = "rrf"
    alpha: float = 0.5  # weight of the sparse run in a convex combination
    rrf_k: int = 60
    depth: int = 100  # hits taken from each run before fusing


@dataclass
class Timings:
    """Seconds spent encoding queries and searching, summed over a call."""

    encode: float = 0.0
    search: float = 0.0


class Retriever:
    """A sparse index (and optional dense companion) that takes text queries."""

    def __init__(self, sparse: SparseIndex, dense: Any | None = None) -> None:
        if "encoder" not in sparse.manifest:
            raise InputError(
                "this index was built from vectors and names no encoder; search it with "
                "--vector/--queries vector files, or rebuild it with --corpus and --model",
                sparse.path,
            )
        self.sparse = sparse
        self.dense = dense
        self._query_encoder: Any | None = None
        self._dense_encoder: Any | None = None
        self.timings = Timings()

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = False, dense: bool = True) -> Retriever:
        """Open the index at ``path`` and, when its manifest names one, the dense companion."""
        sparse = SparseIndex.open(path, verify=verify)
        dense_index = None
        companion = sparse.manifest.get("dense")
        if dense and companion:
            from lsr.dense import DenseIndex

            dense_path = (Path(path).absolute().parent / companion["path"]).resolve()
            dense_index = DenseIndex.open(dense_path, verify=verify)
        return cls(sparse, dense_index)

    @property
    def query_mode(self) -> str:
        return str(self.sparse.manifest["encoder"]["config"]["query_mode"])

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.dense is not None else ("sparse",)

    # -- encoders (loaded on first use) -------------------------------------------------------
    @property
    def query_encoder(self) -> Any:
        if self._query_encoder is None:
            from lsr.encoders import load_query_encoder

            self._query_encoder = load_query_encoder(
                self.sparse.manifest["encoder"], self.sparse.path
            )
        return self._query_encoder

    @property
    def dense_encoder(self) -> Any:
        if self._dense_encoder is None:
            from lsr.encoders.dense import DenseEncoder

            self._dense_encoder = DenseEncoder.from_identity(self.dense.manifest["encoder"])
        return self._dense_encoder

    def encode_queries(self, texts: Sequence[str], ids: Sequence[str] | None = None) -> SparseBatch:
        return self.query_encoder.encode(list(texts), ids)

    # -- search -------------------------------------------------------------------------------
    def _check(self, mode: str, k: int) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode != "sparse" and self.dense is None:
            raise InputError(
                f"{mode} search needs a dense index: build with `lsr index build --dense MODEL`",
                self.sparse.path,
            )
        if k < 1:
            raise InputError(f"k must be a positive integer, got {k}")

    def search(
        self, text: str, k: int = 10, *, mode: Mode = "sparse", fusion: FusionConfig | None = None
    ) -> list[Hit]:
        """Top-k hits for one text query."""
        return self.batch_search([text], k, mode=mode, fusion=fusion, threads=1)[0]

    def batch_search(
        self,
        texts: Sequence[str],
        k: int = 10,
        *,
        mode: Mode = "sparse",
        fusion: FusionConfig | None = None,
        threads: int | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each text query, by sparse, dense or hybrid (fused) retrieval."""
        self._check(mode, k)
        texts = list(texts)
        if not texts:
            return []
        fusion = fusion or FusionConfig()
        depth = k if mode != "hybrid" else max(k, fusion.depth)
        sparse_hits = dense_hits = None
        if mode in ("sparse", "hybrid"):
            started = time.perf_counter()
            queries = self.encode_queries(texts)
            encoded = time.perf_counter()
            sparse_hits = self.sparse.batch_search(queries, depth, threads=threads)
            self.timings.encode += encoded - started
            self.timings.search += time.perf_counter() - encoded
        if mode in ("dense", "hybrid"):
            started = time.perf_counter()
            vectors = self.dense_encoder.encode_queries(texts)
            encoded = time.perf_counter()
            dense_hits = self.dense.batch_search(vectors, depth, threads=threads)
            self.timings.encode += encoded - started
            self.timings.search += time.perf_counter() - encoded
        if mode == "sparse":
            return sparse_hits
        if mode == "dense":
            return dense_hits
        return [fuse_hits(s, d, k, fusion) for s, d in zip(sparse_hits, dense_hits, strict=True)]


def fuse_hits(sparse: list[Hit], dense: list[Hit], k: int, fusion: FusionConfig) -> list[Hit]:
    """Fuse one query's sparse and dense hits (see :mod:`lsr.fusion`)."""
    from lsr import fusion as fusion_lib

    runs = {"q": [(h.doc_id, h.score) for h in sparse]}, {"q": [(h.doc_id, h.score) for h in dense]}
    if fusion.method == "rrf":
        fused = fusion_lib.rrf(list(runs), k=fusion.rrf_k)
    else:
        fused = fusion_lib.convex(*runs, alpha=fusion.alpha, norm=fusion.method)
    return [Hit(doc, float(score)) for doc, score in fused.get("q", [])[:k]]
