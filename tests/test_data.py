"""BEIR readers (corpus, queries, qrels) and TREC run files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import SHARED

from lsr.corpus import count_corpus, iter_corpus, load_beir, load_corpus, load_qrels, load_queries
from lsr.errors import InputError
from lsr.runs import read_trec_run, sort_hits, write_trec_run

CORPUS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": "", "text": "No title here."},
    {"_id": "d3", "text": "Title missing."},
    {"_id": 4, "title": "Numeric id", "text": "ok"},
]
QUERIES = [{"_id": "q1", "text": "why do cats purr"}, {"_id": "q2", "text": "what"}, {"_id": "q3"}]


def _lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    return _lines(path, [json.dumps(r) for r in records])


def _beir(root: Path, *, gz: bool = False, qrels: list[str] | None = None) -> Path:
    ext = ".jsonl.gz" if gz else ".jsonl"
    _jsonl(root / f"corpus{ext}", CORPUS)
    _jsonl(root / f"queries{ext}", [*QUERIES[:2], {"_id": "q9", "text": "unjudged"}])
    rows = qrels if qrels is not None else ["q1\td1\t1", "q1\td2\t0", "q2\td3\t2"]
    _lines(root / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", *rows])
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_corpus_joins_title_and_text(tmp_path: Path, gz: bool) -> None:
    root = _beir(tmp_path, gz=gz)
    want = {
        "d1": "Cats Cats purr.",
        "d2": "No title here.",
        "d3": "Title missing.",
        "4": "Numeric id ok",  # an integer _id is read as a string
    }
    assert load_corpus(root) == want
    assert next(iter_corpus(root)) == ("d1", "Cats Cats purr.")
    assert count_corpus(root) == 4
    direct = root / ("corpus.jsonl.gz" if gz else "corpus.jsonl")
    assert load_corpus(direct) == want  # a file works as well as the directory


def test_corpus_errors_name_file_and_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "c.jsonl", [CORPUS[0], {"title": "x", "text": "y"}])
    with pytest.raises(InputError, match=r"c\.jsonl:2: missing '_id'") as info:
        load_corpus(path)
    assert info.value.line == 2 and Path(info.value.path) == path

    path = _jsonl(tmp_path / "dup.jsonl", [CORPUS[0], CORPUS[1], CORPUS[0]])
    with pytest.raises(InputError, match=r"dup\.jsonl:3: duplicate id 'd1' \(first on line 1\)"):
        load_corpus(path)

    path = _jsonl(tmp_path / "notext.jsonl", [{"_id": "a", "title": "t"}])
    with pytest.raises(InputError, match=r":1: missing 'text'"):
        load_corpus(path)

    path = _lines(tmp_path / "bad.jsonl", [json.dumps(CORPUS[0]), "", "{oops"])
    with pytest.raises(InputError, match=r"bad\.jsonl:3: malformed JSON"):
        load_corpus(path)

    path = _jsonl(tmp_path / "space.jsonl", [{"_id": "a b", "text": "t"}])
    with pytest.raises(InputError, match="whitespace"):
        load_corpus(path)

    with pytest.raises(InputError, match=r"no corpus\.jsonl"):
        load_corpus(tmp_path)
    with pytest.raises(InputError, match="file not found"):
        load_corpus(tmp_path / "missing.jsonl")


def test_truncated_gzip_is_an_input_error(tmp_path: Path) -> None:
    data = gzip.compress(("".join(json.dumps(r) + "\n" for r in CORPUS * 50)).encode())
    (tmp_path / "corpus.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read"):
        load_corpus(tmp_path)


def test_queries_and_qrels(tmp_path: Path) -> None:
    root = _beir(tmp_path)
    assert load_queries(root) == {"q1": "why do cats purr", "q2": "what", "q9": "unjudged"}
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert load_qrels(root, "test") == qrels
    assert load_qrels(root / "qrels") == qrels
    assert load_qrels(root / "qrels" / "test.tsv") == qrels
    trec = _lines(tmp_path / "trec.qrels", ["q1 0 d1 1", "q1 0 d2 0", "q2 0 d3 2"])
    assert load_qrels(trec) == qrels  # TREC's four columns, no header
    with pytest.raises(InputError, match=r"no qrels/dev\.tsv"):
        load_qrels(root, "dev")
    _jsonl(tmp_path / "q.jsonl", [QUERIES[2]])
    with pytest.raises(InputError, match=r"q\.jsonl:1: missing 'text'"):
        load_queries(tmp_path / "q.jsonl")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["q1\td1"], r"test\.tsv:2: expected 3 columns"),
        (["q1\td1\t1", "q1\td2\thigh"], r"test\.tsv:3: relevance must be an integer"),
        (["q1\td1\t1", "q1\td1\t2"], r"test\.tsv:3: conflicting judgements"),
    ],
)
def test_qrels_errors(tmp_path: Path, rows: list[str], message: str) -> None:
    _beir(tmp_path, qrels=rows)
    with pytest.raises(InputError, match=message):
        load_qrels(tmp_path)


def test_load_beir_restricts_queries_and_checks_ids(tmp_path: Path) -> None:
    data = load_beir(_beir(tmp_path / "ok"))
    assert data.queries == {"q1": "why do cats purr", "q2": "what"}  # q9 has no judgements
    assert data.qrels == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert len(data.corpus) == 4 and data.unknown_qrels_docs == 0

    root = _beir(tmp_path / "badq", qrels=["q1\td1\t1", "q1\td2\t1", "q7\td1\t1"])
    with pytest.raises(InputError, match=r"test\.tsv:4: qrels reference unknown query id 'q7'"):
        load_beir(root)

    root = _beir(tmp_path / "badd", qrels=["q1\td1\t1", "q1\tnope\t1", "q2\tgone\t1"])
    with pytest.warns(UserWarning, match="2 judgements name documents that are not in the corpus"):
        data = load_beir(root)
    assert data.unknown_qrels_docs == 2 and data.qrels["q1"]["nope"] == 1  # kept: lowers recall


def test_trec_run_round_trip_and_order(tmp_path: Path) -> None:
    run = {
        "q2": [("b", 1.5), ("a", 1.5), ("c", 3.0), ("d", 0.1 + 0.2)],
        "q1": {"x": 2.0, "y": -1.0},
        "q3": [],
    }
    path = write_trec_run(run, tmp_path / "out" / "run.trec", tag="bm25")
    lines = path.read_text().splitlines()
    assert lines[:4] == [
        "q2 Q0 c 1 3.0 bm25",
        "q2 Q0 b 2 1.5 bm25",  # equal scores keep the given order (the searcher's tie rule)
        "q2 Q0 a 3 1.5 bm25",
        "q2 Q0 d 4 0.30000000000000004 bm25",  # exact
    ]
    assert lines[4:] == ["q1 Q0 x 1 2.0 bm25", "q1 Q0 y 2 -1.0 bm25"]
    back = read_trec_run(path)
    assert back == {"q2": dict(run["q2"]), "q1": run["q1"]}
    assert sort_hits(back["q2"]) == sort_hits(run["q2"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.trec"]  # no temp file left

    gz = write_trec_run(run, tmp_path / "run.trec.gz", depth=1)
    assert gzip.decompress(gz.read_bytes()).decode().splitlines() == [
        "q2 Q0 c 1 3.0 lsr",
        "q1 Q0 x 1 2.0 lsr",
    ]
    assert read_trec_run(gz) == {"q2": {"c": 3.0}, "q1": {"x": 2.0}}
    fixed = write_trec_run({"q": [("a", 1 / 3)]}, tmp_path / "f.trec", score_format=".6f")
    assert fixed.read_text() == "q Q0 a 1 0.333333 lsr\n"


def test_trec_run_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="whitespace"):
        write_trec_run({"q 1": [("a", 1.0)]}, tmp_path / "r.trec")
    with pytest.raises(InputError, match="appears twice"):
        write_trec_run({"q1": [("a", 1.0), ("a", 2.0)]}, tmp_path / "r.trec")
    assert list(tmp_path.iterdir()) == []  # a failed write leaves nothing behind
    bad = _lines(tmp_path / "bad.trec", ["q1 Q0 a 1 1.0 t", "q1 Q0 b 2 1.0"])
    with pytest.raises(InputError, match=r"bad\.trec:2: expected 6 columns"):
        read_trec_run(bad)
    bad = _lines(tmp_path / "bad2.trec", ["q1 Q0 a 1 high t"])
    with pytest.raises(InputError, match=r"bad2\.trec:1: score is not a number"):
        read_trec_run(bad)
    bad = _lines(tmp_path / "bad3.trec", ["q1 Q0 a 1 1 t", "q1 Q0 a 2 0.5 t"])
    with pytest.raises(InputError, match=r"bad3\.trec:2: document 'a' appears twice"):
        read_trec_run(bad)


@pytest.mark.skipif(not (SHARED / "data/beir/scifact").is_dir(), reason="no shared SciFact")
def test_scifact_loads() -> None:
    data = load_beir(SHARED / "data/beir/scifact", "test")
    assert (len(data.corpus), len(data.queries), len(data.qrels)) == (5183, 300, 300)
    assert data.unknown_qrels_docs == 0
    assert sum(len(r) for r in data.qrels.values()) == 339
