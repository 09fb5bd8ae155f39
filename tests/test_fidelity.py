"""The pipeline's nDCG@10 equals independent computations on a SciFact slice (eval/fidelity.py
runs the whole test split)."""

from __future__ import annotations

import pytest

from eval.fidelity import measure
from tests.conftest import SPLADE_TINY


@pytest.mark.slow
@pytest.mark.pyserini
def test_pipeline_ndcg_equals_brute_force_and_lucene(beir_slice, tmp_path):
    result = measure(beir_slice, SPLADE_TINY, workdir=tmp_path, lucene=True, log=lambda m: None)
    ndcg = result["ndcg@10"]
    assert result["queries"] == 12 and result["docs"] > 60
    assert 0.2 < ndcg["pipeline"] <= 1.0  # a real ranking, not an empty or trivial one
    assert round(ndcg["pipeline"], 3) == round(ndcg["brute_force_pytrec_eval"], 3)
    assert round(ndcg["lucene_impact_searcher_int"], 3) == round(ndcg["lsr_int"], 3)
    assert result["queries_same_top10_as_lucene"] >= 11
