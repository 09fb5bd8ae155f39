"""Fidelity of the pipeline: our nDCG@10 against independent computations of the same thing.

For one encoder on one BEIR dataset (SciFact, splade-tiny by default):

1. **pipeline** — ``lsr.indexing.index_corpus`` (uint8 index) → ``Retriever`` → ``lsr.metrics``;
2. **brute force** — the same encoder's float32 vectors, ``Q @ D.T`` with scipy, scored by calling
   ``pytrec_eval`` directly (no lsr index, no lsr metrics);
3. **Lucene** — Pyserini's ``LuceneImpactSearcher`` over an Anserini impact index of the same
   vectors quantised to integers (``round(100 w)``, documents and queries), against our index
   built from those very integers (float32 storage: no further rounding);
4. **reference vectors** (full runs) — the vectors in ``../shared`` encoded outside this project,
   brute force + pytrec_eval: checks the encoder itself.

``python -m eval.fidelity`` runs the whole of SciFact test and writes
``eval/results/fidelity_scifact.{json,md}``; ``tests/test_fidelity.py`` runs a slice.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from eval.synthetic import SHARED

SCIFACT = SHARED / "data" / "beir" / "scifact"
SPLADE_TINY = SHARED / "models" / "splade-tiny"
REFERENCE = SHARED / "data" / "vectors" / "scifact-splade-tiny"
RESULTS = Path(__file__).parent / "results"
LUCENE_SCALE = 100


def brute_force_run(queries: sp.csr_matrix, docs: sp.csr_matrix, qids, dids, k: int = 100):
    """Top-k by exact float64 ``Q @ D.T`` (ties: lower doc position), positive scores only."""
    scores = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    run = {}
    for qid, row in zip(qids, scores, strict=True):
        order = np.lexsort((np.arange(row.size), -row))[:k]
        run[qid] = {dids[j]: float(row[j]) for j in order if row[j] > 0}
    return run


def pytrec_ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    """Mean nDCG@10 over every query in ``qrels`` (a query without hits scores 0)."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    per_query = evaluator.evaluate({q: run.get(q, {}) for q in qrels})
    return float(np.mean([per_query.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels]))


def _lucene_run(int_docs, int_queries, tokens, qids, dids, workdir: Path, k: int) -> dict:
    """Pyserini LuceneImpactSearcher over an impact index of the integer vectors."""
    from lsr.baselines.lucene_impact import build_impact_index
    from lsr.jvm import start_jvm

    start_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    index_dir = build_impact_index(dids, int_docs, tokens, workdir / "lucene-impact")
    vectors = {
        qid: {tokens[t]: int(w) for t, w in zip(row.indices, row.data, strict=True)}
        for qid, row in zip(qids, int_queries, strict=True)
    }

    class ByQid:  # the searcher asks its encoder for the vector of each query "text" (the qid)
        def encode(self, qid: str) -> dict[str, int]:
            return vectors[qid]

    searcher = LuceneImpactSearcher(str(index_dir), ByQid())
    run = {}
    for qid in qids:
        run[qid] = {hit.docid: float(hit.score) for hit in searcher.search(qid, k)}
    return run


def _integers(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    out.data = np.round(out.data * LUCENE_SCALE)
    out.eliminate_zeros()
    return out


def measure(
    data: Path,
    model: Path,
    *,
    workdir: Path,
    doc_ids: list[str] | None = None,
    query_ids: list[str] | None = None,
    lucene: bool = True,
    reference: Path | None = None,
    log=print,
) -> dict[str, Any]:
    """nDCG@10 of the pipeline and of the independent computations (module docstring)."""
    from lsr.corpus import corpus_file, iter_corpus, load_beir
    from lsr.encoders import EncoderConfig, SideConfig, load_encoder
    from lsr.index.sparse_index import SparseIndex
    from lsr.ingest import index_corpus
    from lsr.metrics import evaluate
    from lsr.retrieval import Retriever
    from lsr.types import hits_to_run

    beir = load_beir(data, "test")
    queries, qrels = beir.queries, beir.qrels
    corpus = corpus_file(data)
    if doc_ids is not None:  # a slice: write it as a small corpus file
        keep = set(doc_ids)
        corpus = workdir / "corpus.jsonl.gz"
        with gzip.open(corpus, "wt", encoding="utf-8") as out:
            for did, text in iter_corpus(corpus_file(data)):
                if did in keep:
                    out.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    if query_ids is not None:
        qrels = {q: qrels[q] for q in query_ids}
    qids = sorted(qrels)
    texts = [queries[q] for q in qids]
    config = EncoderConfig(
        model=str(model), query=SideConfig(max_length=64), document=SideConfig(max_length=256)
    )
    timings: dict[str, float] = {}

    started = time.perf_counter()
    index_corpus(
        corpus,
        workdir / "index",
        config,
        overwrite=True,
        keep_shards=True,
        work_dir=workdir / "shards",
    )
    retriever = Retriever.open(workdir / "index")
    hits = retriever.batch_search(texts, 100)
    pipeline_run = hits_to_run(qids, hits)
    pipeline = {"ndcg@10": evaluate(qrels, pipeline_run).mean["ndcg_cut_10"]}
    timings["pipeline_s"] = time.perf_counter() - started
    log(f"pipeline: nDCG@10 {pipeline['ndcg@10']:.4f}")

    # independent: the encoder's own float vectors (read back from the encoder, not the index)
    started = time.perf_counter()
    encoder = load_encoder(config)
    dids, dtexts = zip(*iter_corpus(corpus), strict=True)
    dids = list(dids)
    d = encoder.encode_document(list(dtexts), dids).matrix
    q = encoder.encode_query(texts, qids).matrix
    brute = pytrec_ndcg10(qrels, brute_force_run(q, d, qids, dids))
    timings["brute_force_s"] = time.perf_counter() - started
    log(f"brute force + pytrec_eval: nDCG@10 {brute:.4f}")
    out: dict[str, Any] = {
        "docs": len(dids),
        "queries": len(qids),
        "ndcg@10": {"pipeline": pipeline["ndcg@10"], "brute_force_pytrec_eval": brute},
        "max_abs_diff_vs_brute_force": abs(pipeline["ndcg@10"] - brute),
    }

    if lucene:
        started = time.perf_counter()
        int_d, int_q = _integers(d), _integers(q)
        tokens = list(encoder.vocab.tokens)
        lucene_run = _lucene_run(int_d, int_q, tokens, qids, dids, workdir, 100)
        from lsr.sparse import SparseBatch

        ours = SparseIndex.build(
            SparseBatch(dids, int_d, encoder.vocab), workdir / "index-int", quantization="float32"
        )
        ours_hits = ours.batch_search(SparseBatch(qids, int_q, encoder.vocab), 100)
        ours_run = {
            qid: {h.doc_id: h.score for h in hs} for qid, hs in zip(qids, ours_hits, strict=True)
        }
        same_top10 = sum(
            [h for h, _ in sorted(lucene_run[qid].items(), key=lambda x: (-x[1], x[0]))[:10]]
            == [h for h, _ in sorted(ours_run[qid].items(), key=lambda x: (-x[1], x[0]))[:10]]
            for qid in qids
        )
        out["ndcg@10"]["lucene_impact_searcher_int"] = pytrec_ndcg10(qrels, lucene_run)
        out["ndcg@10"]["lsr_int"] = pytrec_ndcg10(qrels, ours_run)
        out["int_scale"] = LUCENE_SCALE
        out["queries_same_top10_as_lucene"] = same_top10
        timings["lucene_s"] = time.perf_counter() - started
        log(
            f"LuceneImpactSearcher (int x{LUCENE_SCALE}): "
            f"{out['ndcg@10']['lucene_impact_searcher_int']:.4f}, "
            f"lsr on the same ints: {out['ndcg@10']['lsr_int']:.4f}, "
            f"same top-10 for {same_top10}/{len(qids)} queries"
        )

    if reference is not None:
        from lsr.sparse import read_jsonl

        ref_docs = read_jsonl(reference / "docs.jsonl.gz", encoder.vocab)
        ref_queries = read_jsonl(reference / "queries-siamese.jsonl.gz", encoder.vocab)
        position = {qid: i for i, qid in enumerate(ref_queries.ids)}
        ref_q = ref_queries.matrix[[position[qid] for qid in qids]]
        ref_run = brute_force_run(ref_q, ref_docs.matrix, qids, list(ref_docs.ids))
        out["ndcg@10"]["reference_vectors_brute_force"] = pytrec_ndcg10(qrels, ref_run)
        common = d.shape == ref_docs.matrix.shape and dids == list(ref_docs.ids)
        if common:
            out["max_abs_weight_diff_vs_reference_docs"] = float(abs(d - ref_docs.matrix).max())
    out["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Fidelity: splade-tiny on SciFact test ({result['queries']} queries, "
        f"{result['docs']:,} docs)",
        "",
        "| computation | nDCG@10 |",
        "|---|---:|",
    ]
    names = {
        "pipeline": "lsr pipeline (encode → uint8 index → search → lsr.metrics)",
        "brute_force_pytrec_eval": "same float vectors, scipy Q·Dᵀ + pytrec_eval",
        "lucene_impact_searcher_int": f"Pyserini LuceneImpactSearcher, ints (×{LUCENE_SCALE})",
        "lsr_int": f"lsr index on the same ints (×{LUCENE_SCALE})",
        "reference_vectors_brute_force": "reference vectors from ../shared, brute force",
    }
    for key, value in result["ndcg@10"].items():
        lines.append(f"| {names.get(key, key)} | {value:.4f} |")
    lines += [
        "",
        f"|pipeline − brute force| = {result['max_abs_diff_vs_brute_force']:.5f}.",
    ]
    if "queries_same_top10_as_lucene" in result:
        lines.append(
            f"Same top-10 as Lucene for {result['queries_same_top10_as_lucene']} of "
            f"{result['queries']} queries."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SCIFACT)
    parser.add_argument("--model", type=Path, default=SPLADE_TINY)
    parser.add_argument("--no-lucene", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(
            args.data,
            args.model,
            workdir=Path(tmp),
            lucene=not args.no_lucene,
            reference=REFERENCE,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fidelity_scifact.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fidelity_scifact.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
