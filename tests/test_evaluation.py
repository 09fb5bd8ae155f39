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


@pytest.fixture()
def no_train_qrels(beir_slice: Path, tmp_path: Path) -> Path:
    import shutil

    data = tmp_path / "test-only"
    shutil.copytree(beir_slice, data)
    (data / "qrels" / "train.tsv").unlink()
    return data


def test_missing_tuning_split_fails_before_any_work(no_train_qrels, tmp_path):
    """Hybrid convex fusion tunes α on train: without train qrels the run must stop at once,
    saying how to go on, before BM25, encoding or any file is written."""
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable, "-m", "lsr.cli", "eval", "beir", "--data", str(no_train_qrels),
            "-o", str(out), "--model", str(SPLADE_TINY), "--mode", "hybrid",
            "--baseline", "bm25s",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "qrels/train.tsv" in done.stderr and "--alpha" in done.stderr
    assert "--tune-split none" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # nothing was computed, so nothing was written


def test_fixed_alpha_or_no_tuning_needs_no_train_qrels(no_train_qrels, tmp_path):
    base = dict(
        data=no_train_qrels, mode="hybrid", model=str(SPLADE_TINY), baselines=[],
        query_modes=["inference-free"], fusions=["minmax", "rrf"], doc_max_length=64,
        query_max_length=32, depth=100, cache=tmp_path / "cache",
    )  # fmt: skip
    fixed = run_beir(BeirEvalConfig(**base, output=tmp_path / "a", alpha=0.3), log=lambda m: None)
    untuned = run_beir(
        BeirEvalConfig(**base, output=tmp_path / "b", tune_split=None, rrf_weights=(2.0, 1.0)),
        log=lambda m: None,
    )
    for report, alpha in ((fixed, 0.3), (untuned, 0.5)):
        convex = next(s for s in report["systems"] if s["details"].get("method") == "minmax")
        assert convex["details"]["alpha"] == alpha and convex["details"]["tuned_on"] is None
        assert report["complete"]
    rrf = next(s for s in untuned["systems"] if s["details"].get("method") == "rrf")
    assert rrf["details"]["rrf_weights"] == [2.0, 1.0]
    assert "fixed, not tuned" in (tmp_path / "a" / "results.md").read_text()


def test_each_system_is_written_when_done(beir_slice, tmp_path, monkeypatch):
    """A failure late in the run keeps what was finished: runs and a report marked incomplete."""
    from lsr.beir_eval import BeirEvaluation

    def broken(self, query_mode):
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(BeirEvaluation, "sparse_system", broken)
    out = tmp_path / "out"
    config = BeirEvalConfig(
        data=beir_slice, output=out, model=str(SPLADE_TINY), baselines=["bm25s"], depth=100
    )
    with pytest.raises(RuntimeError):
        run_beir(config, log=lambda m: None)
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is False
    assert [s["name"] for s in saved["systems"]] == ["BM25 (bm25s)"]
    assert (out / saved["systems"][0]["details"]["run_file"]).stat().st_size > 0
    assert "Incomplete" in (out / "results.md").read_text()


def test_latency_leaves_warm_up_queries_out():
    """The first calls (compilation, lazy loading) are run untimed before any query is timed."""
    from lsr.beir_eval import _timed
    from lsr.types import Hit

    calls = []

    def search_one(text, timings):
        calls.append(text)
        timings.encode += 100.0 if len(calls) <= 2 else 1.0  # the first two calls are slow
        timings.search += 1.0
        return [Hit("d", 1.0)]

    run, encode, search = _timed(["q1", "q2", "q3"], ["a", "b", "c"], search_one, warm_up=2)
    assert calls == ["a", "b", "a", "b", "c"]
    assert encode == [1.0, 1.0, 1.0] and search == [1.0, 1.0, 1.0]
    assert list(run) == ["q1", "q2", "q3"]


def test_report_shows_median_and_tail_latency(report):
    _, out = report
    header = next(line for line in (out / "results.md").read_text().splitlines() if "nDCG" in line)
    assert "p50" in header and "p99" in header


def test_cli_scores_written_runs_like_pytrec_eval(report, beir_slice):
    import pytrec_eval

    from lsr.corpus import load_qrels
    from lsr.runs import read_trec_run

    body, out = report
    files = [out / s["details"]["run_file"] for s in body["systems"][:2]]
    done = subprocess.run(
        [sys.executable, "-m", "lsr.cli", "eval", "runs", *map(str, files), "--qrels",
         str(beir_slice), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    qrels = load_qrels(beir_slice, "test")
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    for path in files:
        per_query = evaluator.evaluate(read_trec_run(path))
        mean = sum(per_query[q]["ndcg_cut_10"] for q in qrels) / len(qrels)
        assert scores[str(path)]["ndcg_cut_10"] == pytest.approx(mean, abs=1e-12)
        assert scores[str(path)]["queries"] == len(qrels)
