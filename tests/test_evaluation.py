"""`lsr eval beir` on a small SciFact slice: every system scored, reports written, metrics checked
against pytrec_eval on the written run files, fusion weights tuned on train only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lsr.beir_eval import BeirEvalConfig, run_beir
from tests.conftest import SPLADE_TINY


@pytest.fixture(scope="module")
def report(beir_slice: Path, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("eval")
    config = BeirEvalConfig(
        data=beir_slice,
        output=out,
        mode="hybrid",
        model=str(SPLADE_TINY),
        query_modes=["siamese", "inference-free"],
        baselines=["bm25s"],
        doc_max_length=64,
        query_max_length=32,
        depth=100,
    )
    return run_beir(config, log=lambda m: None), out


def test_every_system_is_reported(report):
    body, out = report
    names = [s["name"] for s in body["systems"]]
    assert names[0] == "BM25 (bm25s)"
    assert "splade (siamese)" in names and "splade (inference-free)" in names
    assert sum(s["kind"] == "hybrid" for s in body["systems"]) == 6  # 3 fusions x 2 query modes
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["queries"] == 12
    md = (out / "results.md").read_text()
    assert all(s["name"] in md for s in body["systems"])


def test_metrics_equal_pytrec_eval_on_the_written_runs(report, beir_slice):
    import pytrec_eval

    from lsr.corpus import load_qrels
    from lsr.runs import read_trec_run

    body, out = report
    qrels = load_qrels(beir_slice, "test")
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    for system in body["systems"]:
        run = read_trec_run(out / system["details"]["run_file"])
        per_query = evaluator.evaluate(run)
        for key, name in (("ndcg_cut_10", "ndcg@10"), ("recall_100", "recall@100")):
            mean = sum(per_query[q][key] for q in qrels) / len(qrels)
            assert system["metrics"][name] == pytest.approx(mean, abs=1e-9), system["name"]


def test_sparse_system_measurements(report):
    body, _ = report
    sparse = next(s for s in body["systems"] if s["name"] == "splade (siamese)")
    free = next(s for s in body["systems"] if s["name"] == "splade (inference-free)")
    for s in (sparse, free):
        assert s["latency_ms"]["mean_ms"] > 0 and s["search_ms"]["n"] == 12
        assert s["details"]["flops"] > 0 and s["details"]["index_bytes"] > 0
    # inference-free queries carry no expansion terms: fewer terms than the siamese encoder's
    assert free["details"]["avg_query_terms"] < sparse["details"]["avg_query_terms"]


def test_fusion_alpha_is_tuned_on_train(report):
    body, _ = report
    convex = [s for s in body["systems"] if s["details"].get("method") in ("minmax", "zscore")]
    assert convex
    for s in convex:
        assert s["details"]["tuned_on"] == "train"
        table = s["details"]["tuning"]
        best = max(value for _, value in table)
        assert dict(map(tuple, table))[s["details"]["alpha"]] == best


def test_cli_rejects_qrels_with_unknown_queries(beir_slice, tmp_path):
    import shutil

    data = tmp_path / "bad"
    shutil.copytree(beir_slice, data)
    with open(data / "qrels" / "test.tsv", "a", encoding="utf-8") as out:
        out.write("no-such-query\t123\t1\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lsr.cli",
            "eval",
            "beir",
            "--data",
            str(data),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(SPLADE_TINY),
            "--baseline",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "unknown query id 'no-such-query'" in done.stderr and "test.tsv:" in done.stderr
