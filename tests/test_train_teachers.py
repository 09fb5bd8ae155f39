"""lsr.train.teachers: per-query min-max, the weighted ensemble, errors, save/load, and scoring
with real teachers (splade-tiny, all-MiniLM-L6-v2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SPLADE_TINY

from lsr.errors import InputError
from lsr.train.teachers import (
    BiEncoderTeacher,
    TeacherScores,
    ensemble,
    minmax_normalise,
    score_candidates,
)

DOCS = ["d1", "d2", "d3", "d4"]
RAW = {
    "dense": {"q1": dict(zip(DOCS, [0.9, 0.5, 0.1, 0.3], strict=True))},  # → [1, .5, 0, .25]
    "sparse": {"q1": dict(zip(DOCS, [10.0, 0.0, 5.0, 20.0], strict=True))},  # → [.5, 0, .25, 1]
}


def test_minmax_by_hand() -> None:
    got = minmax_normalise([0.9, 0.5, 0.1, 0.3], min_candidates=4)
    assert got.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.25])


def test_ensemble_by_hand() -> None:
    raw = {t: list(RAW[t]["q1"].values()) for t in RAW}
    # equal weights: 30 · mean of [1, .5, 0, .25] and [.5, 0, .25, 1]
    equal = ensemble(raw, min_candidates=4)
    assert equal.tolist() == pytest.approx([22.5, 7.5, 3.75, 18.75])
    # weights 3 : 1, scale 30: 30 · (3·n_dense + n_sparse) / 4
    weighted = ensemble(raw, {"dense": 3, "sparse": 1}, min_candidates=4)
    assert weighted.tolist() == pytest.approx([26.25, 11.25, 1.875, 13.125])
    assert ensemble(raw, scale=1.0, min_candidates=4).tolist() == pytest.approx(
        [0.75, 0.25, 0.125, 0.625]
    )


def test_two_candidates_collapse_is_refused() -> None:
    # over a positive and one negative every query would get {30, 0}, whatever the margins:
    with pytest.raises(InputError, match="2 candidates, need at least 8"):
        minmax_normalise([0.51, 0.49])
    with pytest.raises(InputError, match="min_candidates must be >= 3"):
        minmax_normalise([0.51, 0.49], min_candidates=2)
    with pytest.raises(InputError, match="3 candidates, need at least 4"):
        ensemble({"a": [1, 2, 3]}, min_candidates=4)


def test_constant_scores() -> None:
    assert minmax_normalise([2.0] * 4, min_candidates=4).tolist() == [0.5] * 4
    with pytest.raises(InputError, match="constant"):
        minmax_normalise([2.0] * 4, min_candidates=4, on_constant="error")
    # a constant teacher shifts the query's labels by a constant: margins are the other's
    labels = ensemble({"a": [0, 0, 0, 0], "b": [1, 2, 3, 5]}, min_candidates=4)
    assert np.diff(labels).tolist() == pytest.approx([3.75, 3.75, 7.5])


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="finite"):
        minmax_normalise([1, 2, float("nan"), 4], min_candidates=4)
    with pytest.raises(InputError, match="weights for"):
        ensemble({"a": [1, 2, 3, 4]}, {"b": 1.0}, min_candidates=4)
    with pytest.raises(InputError, match="not all 0"):
        ensemble({"a": [1, 2, 3, 4]}, {"a": 0.0}, min_candidates=4)
    with pytest.raises(InputError, match="different numbers"):
        ensemble({"a": [1, 2, 3, 4], "b": [1, 2, 3, 4, 5]}, min_candidates=4)
    other = {"dense": RAW["dense"], "sparse": {"q1": {**RAW["sparse"]["q1"], "d9": 1.0}}}
    with pytest.raises(InputError, match="other candidates"):
        TeacherScores.build(other, min_candidates=4)
    with pytest.raises(InputError, match="query 'q1'"):
        TeacherScores.build(RAW)  # 4 candidates, default minimum 8


def test_build_labels_reweight() -> None:
    scores = TeacherScores.build(RAW, models={"dense": "all-MiniLM-L6-v2"}, min_candidates=4)
    assert len(scores) == 1
    assert scores.labels("q1") == pytest.approx([22.5, 7.5, 3.75, 18.75])
    # a training example's positive and negative keep their labels from the full list
    assert scores.labels("q1", ["d4", "d2"]) == pytest.approx([18.75, 7.5])
    assert scores.as_dict()["q1"]["d3"] == pytest.approx(3.75)
    with pytest.raises(KeyError, match="d7"):
        scores.labels("q1", ["d1", "d7"])
    with pytest.raises(KeyError, match="q2"):
        scores.labels("q2")
    again = scores.reweighted({"dense": 3, "sparse": 1})
    assert again.labels("q1") == pytest.approx([26.25, 11.25, 1.875, 13.125])
    assert again.teachers["dense"] == {"weight": 3.0, "model": "all-MiniLM-L6-v2"}
    assert scores.reweighted(scale=1.0).labels("q1")[0] == pytest.approx(0.75)


def test_save_load_round_trip(tmp_path) -> None:
    raw = {t: {**RAW[t], "q2": dict(zip(DOCS, [1.0, 1.0, 1.0, 1.0], strict=True))} for t in RAW}
    scores = TeacherScores.build(raw, {"dense": 2, "sparse": 1}, min_candidates=4)
    out = tmp_path / "teachers"
    scores.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "scores.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teachers"] == {
        "dense": {"weight": 2.0, "model": ""},
        "sparse": {"weight": 1.0, "model": ""},
    }
    assert manifest["scale"] == 30.0 and manifest["min_candidates"] == 4
    assert manifest["queries"] == 2 and manifest["candidates"] == {"min": 4, "max": 4, "total": 8}
    assert manifest["constant_queries"] == {"dense": 1, "sparse": 1}
    back = TeacherScores.load(out)
    assert back.teachers == scores.teachers and back.scale == 30.0
    assert back.as_dict() == scores.as_dict()
    assert back.labels("q2") == [15.0] * 4
    for qid, q in scores.queries.items():
        assert back.queries[qid].docs == q.docs
        for name, s in q.raw.items():
            assert back.queries[qid].raw[name].tolist() == s.tolist()
    assert back.reweighted().labels("q1") == pytest.approx([22.5, 7.5, 3.75, 18.75])

    (out / "scores.jsonl").write_text((out / "scores.jsonl").read_text().replace("d1", "dX"))
    with pytest.raises(InputError, match="does not match"):
        TeacherScores.load(out)
    (out / "manifest.json").unlink()
    with pytest.raises(InputError, match="manifest"):
        TeacherScores.load(out)


def test_score_candidates_with_real_teachers() -> None:
    from lsr.encoders import DenseEncoder, load_encoder

    splade = load_encoder(SPLADE_TINY)
    queries = {"q1": "breast cancer genes", "q2": "how do proteins fold"}
    documents = {
        "a": "BRCA1 mutations increase the risk of breast cancer.",
        "b": "Protein folding is a hard problem.",
        "c": "The quick brown fox jumps over the lazy dog.",
        "d": "Chaperones help proteins fold into their native structure.",
        "e": "Cancer screening in women.",
    }
    candidates = {"q1": ["a", "b", "c", "e"], "q2": ["b", "c", "d", "a"]}
    teachers = {
        "sparse": BiEncoderTeacher(splade, "splade-tiny"),
        "dense": BiEncoderTeacher(DenseEncoder(device="cpu"), "all-MiniLM-L6-v2"),
    }
    raw = score_candidates(teachers, queries, candidates, documents)
    assert set(raw) == {"sparse", "dense"}
    q = splade.encode_query([queries["q1"]]).matrix
    d = splade.encode_document([documents[x] for x in candidates["q1"]]).matrix
    want = (d @ q.T).toarray().ravel()
    assert list(raw["sparse"]["q1"].values()) == pytest.approx(want.tolist(), rel=1e-5)
    # both teachers put the on-topic document first
    for name in teachers:
        assert max(raw[name]["q1"], key=raw[name]["q1"].get) == "a"
        assert max(raw[name]["q2"], key=raw[name]["q2"].get) in {"b", "d"}
    scores = TeacherScores.build(raw, min_candidates=4)
    assert max(scores.labels("q1")) <= 30.0 and min(scores.labels("q1")) >= 0.0
    assert scores.labels("q1", ["a"]) == [pytest.approx(30.0)]
    with pytest.raises(InputError, match="no text for candidate"):
        score_candidates(teachers, queries, {"q1": ["a", "zz", "b", "c"]}, documents)
