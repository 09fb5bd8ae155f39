"""The `lsr` command line: builds, info, searches and every user error as a one-line message."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SPLADE_TINY, VECTORS, brute_force_topk
from typer.testing import CliRunner

from lsr.cli import app
from lsr.index.sparse_index import SparseIndex
from lsr.sparse import read_jsonl, write_npz
from lsr.vocab import Vocabulary

LSR = Path(sys.executable).with_name("lsr")

DOCS = [
    {"id": "a", "vector": {"x": 1.0, "y": 2.0}},
    {"id": "b", "vector": {"y": 1.5, "z": 0.5}},
    {"id": "c", "vector": {"x": 3.0}},
    {"id": "d", "vector": {"w": 0.25, "z": 2.0}},
]


# -- helpers ---------------------------------------------------------------------------------------
def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _write_records(path: Path, records: list[dict]) -> Path:
    return _write_lines(path, [json.dumps(r) for r in records])


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _stdout(result) -> str:
    return result.stdout


def _stderr(result) -> str:
    """stderr alone where this click keeps it apart, else the mixed output."""
    try:
        return result.stderr
    except ValueError:  # older click with mix_stderr=True
        return result.output


def _ok(result) -> None:
    assert result.exception is None, (result.exception, result.output)
    assert result.exit_code == 0, result.output


def _fails(result, *needles: str) -> str:
    """A user error: exit != 0, no exception escaped, one 'error:' line on stderr naming it."""
    assert result.exit_code != 0, result.output
    # an exception that escaped the command would have printed a traceback outside the runner
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    err = _stderr(result)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("error: "), message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _parse_hits(text: str) -> list[tuple[int, float, str]]:
    hits = []
    for line in text.splitlines():
        rank, score, doc_id = line.split()
        hits.append((int(rank), float(score), doc_id))
    return hits


def _parse_run(text: str) -> dict[str, list[tuple[str, int, float]]]:
    run: dict[str, list[tuple[str, int, float]]] = {}
    for line in text.splitlines():
        cols = line.split()
        assert len(cols) == 6, line
        qid, q0, doc_id, rank, score, tag = cols
        assert q0 == "Q0"
        assert tag == "lsr"
        run.setdefault(qid, []).append((doc_id, int(rank), float(score)))
    for hits in run.values():
        assert [r for _, r, _ in hits] == list(range(1, len(hits) + 1))
        scores = [s for _, _, s in hits]
        assert scores == sorted(scores, reverse=True)
    return run


def _head_gz(src: Path, dst: Path, n: int) -> Path:
    with gzip.open(src, "rt", encoding="utf-8") as fin:
        head = list(itertools.islice(fin, n))
    with gzip.open(dst, "wt", encoding="utf-8") as fout:
        fout.writelines(head)
    return dst


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    """A 4-document corpus (terms w x y z) and its index built by the CLI."""
    root = tmp_path_factory.mktemp("small")
    docs = _write_records(root / "docs.jsonl", DOCS)
    index = root / "index"
    _ok(_invoke("index", "build", docs, "-o", index, "--quantization", "float32"))
    return {"root": root, "docs": docs, "index": index}


@pytest.fixture(scope="module")
def scifact_small(tmp_path_factory) -> dict[str, Path]:
    """The first 300 SciFact documents and 40 queries (SPLADE-tiny vectors) as .jsonl.gz."""
    root = tmp_path_factory.mktemp("scifact")
    docs = _head_gz(VECTORS / "docs.jsonl.gz", root / "docs.jsonl.gz", 300)
    queries = _head_gz(VECTORS / "queries-siamese.jsonl.gz", root / "queries.jsonl.gz", 40)
    index = root / "index"
    result = _invoke("index", "build", docs, "--vocab", SPLADE_TINY, "-o", index, "--no-progress")
    _ok(result)
    assert _stdout(result).startswith("indexed 300 docs, ")
    return {"root": root, "docs": docs, "queries": queries, "index": index}


# -- success paths ---------------------------------------------------------------------------------
def test_build_from_jsonl(small):
    index = SparseIndex.open(small["index"])
    assert index.num_docs == 4
    assert [index.doc_id(i) for i in range(4)] == ["a", "b", "c", "d"]
    assert index.num_postings == 7
    assert sorted(index.vocab.tokens) == ["w", "x", "y", "z"]


def test_build_summary_line(tmp_path, small):
    result = _invoke("index", "build", small["docs"], "-o", tmp_path / "i", "--block-size", "2")
    _ok(result)
    lines = _stdout(result).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"indexed 4 docs, 7 postings into {tmp_path / 'i'} ")
    assert "Traceback" not in result.output
    assert SparseIndex.open(tmp_path / "i").block_size == 2


def test_build_with_block_rows(tmp_path, small):
    plain, rows = tmp_path / "plain", tmp_path / "rows"
    _ok(_invoke("index", "build", small["docs"], "-o", plain, "--block-size", "2"))
    args = ("--block-size", "2", "--block-rows", "0.5")
    _ok(_invoke("index", "build", small["docs"], "-o", rows, *args))
    a, b = SparseIndex.open(plain), SparseIndex.open(rows)
    assert "num_block_rows" not in a.manifest
    assert b.manifest["num_block_rows"] > 0
    query = {token: 1.0 for token in b.vocab.tokens}
    assert b.search(query, 3, algorithm="blockmax") == a.search(query, 3, algorithm="blockmax")
    info = _invoke("index", "info", rows)
    _ok(info)
    assert f"{b.manifest['num_block_rows']} block rows" in _stdout(info)


def test_build_from_jsonl_gz_with_frozen_vocab(scifact_small):
    index = SparseIndex.open(scifact_small["index"])
    assert index.num_docs == 300
    assert len(index.vocab) == 30522
    assert index.vocab == Vocabulary.load(SPLADE_TINY)
    with gzip.open(scifact_small["docs"], "rt") as handle:
        expected_ids = [json.loads(line)["id"] for line in handle]
    assert [index.doc_id(i) for i in range(300)] == expected_ids


def test_build_from_npz_equals_jsonl(tmp_path, small):
    write_npz(read_jsonl(small["docs"]), tmp_path / "docs.npz")
    result = _invoke(
        "index", "build", tmp_path / "docs.npz", "-o", tmp_path / "i", "--quantization", "float32"
    )
    _ok(result)
    assert _stdout(result).startswith("indexed 4 docs, 7 postings")
    from_npz, from_jsonl = SparseIndex.open(tmp_path / "i"), SparseIndex.open(small["index"])
    for query in ({"x": 1.0}, {"y": 1.0, "z": 2.0}, {"w": 1.0, "x": 0.5}):
        assert from_npz.search(query, 10) == from_jsonl.search(query, 10)
        assert from_npz.search(query, 10)


def test_build_from_several_inputs(tmp_path, small):
    more = _write_records(tmp_path / "more.jsonl", [{"id": "e", "vector": {"x": 9.0, "v": 1.0}}])
    result = _invoke("index", "build", small["docs"], more, "-o", tmp_path / "i")
    _ok(result)
    index = SparseIndex.open(tmp_path / "i")
    assert [index.doc_id(i) for i in range(5)] == ["a", "b", "c", "d", "e"]
    assert index.search({"x": 1.0}, 1)[0].doc_id == "e"


def test_index_info_text(small):
    result = _invoke("index", "info", small["index"])
    _ok(result)
    rows = dict(line.split(None, 1) for line in _stdout(result).splitlines())
    assert rows["documents"] == "4"
    assert rows["postings"] == "7"
    assert rows["weights"] == "float32"
    assert rows["checksums"] == "verified"
    assert rows["terms"].startswith("4 used of 4")


def test_index_info_json(small):
    result = _invoke("index", "info", small["index"], "--json")
    _ok(result)
    manifest = json.loads(_stdout(result))
    assert manifest["num_docs"] == 4
    assert manifest["num_postings"] == 7
    assert manifest["vocab"]["size"] == 4
    assert manifest["quantization"]["dtype"] == "float32"
    assert manifest["sources"] == [str(small["docs"])]


def test_search_vector_prints_ranked_hits(small):
    result = _invoke("search", small["index"], "--vector", '{"x": 1.0, "z": 1.0}', "-k", "3")
    _ok(result)
    hits = _parse_hits(_stdout(result))
    # x·1 + z·1: a=1, b=0.5, c=3, d=2
    assert [(r, d) for r, _, d in hits] == [(1, "c"), (2, "d"), (3, "a")]
    np.testing.assert_allclose([s for _, s, _ in hits], [3.0, 2.0, 1.0])
    assert "3 hits" in _stderr(result)


def test_search_vector_blockmax_equals_exhaustive(small):
    base = _invoke("search", small["index"], "--vector", '{"x": 1.0, "z": 1.0}', "-k", "3")
    bmx = _invoke(
        "search", small["index"], "--vector", '{"x": 1.0, "z": 1.0}', "-k", "3",
        "--algorithm", "blockmax", "--heap-factor", "1.0",
    )  # fmt: skip
    assert base.exit_code == bmx.exit_code == 0, bmx.output
    assert bmx.stdout == base.stdout
    approx = _invoke(
        "search", small["index"], "--vector", '{"x": 1.0, "z": 1.0}', "-k", "3",
        "--algorithm", "approximate",
    )  # fmt: skip
    assert approx.exit_code == 0 and approx.stdout == base.stdout, approx.output  # 2 terms: exact
    bad = _invoke("search", small["index"], "--vector", '{"x": 1}', "--heap-factor", "0.5")
    assert bad.exit_code == 2 and "heap_factor" in bad.output
    split = _invoke(
        "search", small["index"], "--vector", '{"x": 1.0, "z": 1.0}', "-k", "3", "--threads", "2"
    )
    assert split.exit_code == 0 and split.stdout == base.stdout, split.output
    bad = _invoke(
        "search", small["index"], "--vector", '{"x": 1}', "--threads", "2",
        "--algorithm", "maxscore",
    )  # fmt: skip
    assert bad.exit_code == 2 and "threads > 1 for one query" in bad.output


def test_search_vector_only_matching_docs(small):
    result = _invoke("search", small["index"], "--vector", '{"w": 2}')
    _ok(result)
    assert _parse_hits(_stdout(result)) == [(1, 0.5, "d")]


def test_search_queries_trec_run_equals_api(scifact_small, tmp_path):
    run_path = tmp_path / "run.trec"
    k = 7
    result = _invoke(
        "search",
        scifact_small["index"],
        "--queries",
        scifact_small["queries"],
        "-k",
        k,
        "-o",
        run_path,
    )
    _ok(result)
    assert _stdout(result) == ""
    err = _stderr(result)
    assert err.startswith(f"searched 40 queries (k={k}) in ")
    assert f"run written to {run_path}" in err
    run = _parse_run(run_path.read_text())

    index = SparseIndex.open(scifact_small["index"])
    queries = read_jsonl(scifact_small["queries"], index.vocab)
    expected = index.batch_search(queries, k)
    assert list(run) == [qid for qid, hits in zip(queries.ids, expected, strict=True) if hits]
    for qid, hits in zip(queries.ids, expected, strict=True):
        assert [(d, r, s) for d, r, s in run.get(qid, [])] == [
            (h.doc_id, r, float(f"{h.score:.6f}")) for r, h in enumerate(hits, start=1)
        ]
    assert sum(len(h) for h in run.values()) == 40 * k  # every query has >= k matching docs

    # the same run on stdout, and from the same queries as .npz
    stdout_run = _invoke(
        "search", scifact_small["index"], "--queries", scifact_small["queries"], "-k", k
    )
    _ok(stdout_run)
    assert _stdout(stdout_run) == run_path.read_text()
    write_npz(read_jsonl(scifact_small["queries"]), tmp_path / "queries.npz")
    npz_run = _invoke(
        "search", scifact_small["index"], "--queries", tmp_path / "queries.npz", "-k", k
    )
    _ok(npz_run)
    assert _stdout(npz_run) == run_path.read_text()


def test_search_queries_matches_brute_force(small, tmp_path):
    queries = _write_records(
        tmp_path / "q.jsonl",
        [
            {"id": "q1", "vector": {"y": 1.0}},
            {"id": "q2", "vector": {"x": 2.0, "w": 4.0}},
            {"id": "q3", "vector": {"x": 0.0}},  # a zero weight: no terms, no hits
        ],
    )
    result = _invoke("search", small["index"], "--queries", queries, "-k", "2", "--run-tag", "lsr")
    _ok(result)
    run = _parse_run(_stdout(result))
    docs = read_jsonl(small["docs"])
    q = read_jsonl(queries, Vocabulary(docs.vocab.tokens, frozen=True))
    want = brute_force_topk(q.matrix, docs.matrix, 2)
    for qid, row in zip(q.ids, want, strict=True):
        got = [(d, s) for d, _, s in run.get(qid, [])]
        assert got == [(docs.ids[p], pytest.approx(s)) for p, s in row]
    assert "q3" not in run
    assert _stderr(result).startswith("searched 3 queries")


def test_ignore_unknown_query_terms(small, tmp_path):
    queries = _write_records(
        tmp_path / "q.jsonl",
        [
            {"id": "q1", "vector": {"x": 1.0}},
            {"id": "q2", "vector": {"nope": 1.0, "y": 1.0}},
        ],
    )
    result = _invoke("search", small["index"], "--queries", queries, "--ignore-unknown")
    _ok(result)
    run = _parse_run(_stdout(result))
    assert [d for d, _, _ in run["q2"]] == ["a", "b"]
    result = _invoke(
        "search", small["index"], "--vector", '{"nope": 5, "z": 1}', "--ignore-unknown"
    )
    _ok(result)
    assert [d for _, _, d in _parse_hits(_stdout(result))] == ["d", "b"]


def test_overwrite_replaces_index(tmp_path, small):
    target = tmp_path / "i"
    _ok(_invoke("index", "build", small["docs"], "-o", target))
    other = _write_records(tmp_path / "other.jsonl", [{"id": "only", "vector": {"q": 1.0}}])
    result = _invoke("index", "build", other, "-o", target, "--overwrite")
    _ok(result)
    assert _stdout(result).startswith("indexed 1 docs")
    index = SparseIndex.open(target)
    assert index.num_docs == 1
    assert index.doc_id(0) == "only"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i", "other.jsonl"]


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "needles"),
    [
        (
            ['{"id": "a", "vector": {"x": 1}}', '{"id": "b", "vector": {"x": 1'],
            [":2: ", "malformed JSON"],
        ),
        (['{"id": "a", "vector": {"x": 1}}', "", '{"id": "b"}'], [":3: ", '"vector"']),
        (['{"id": "a", "vector": {"x": -1.5}}'], [":1: ", "'x'", ">= 0"]),
        (
            ['{"id": "a", "vector": {"x": 1}}', '{"id": "b", "vector": {"x": "1.0"}}'],
            [":2: ", "'x'", "not a number"],
        ),
        (['{"id": "a", "vector": {"x": true}}'], [":1: ", "not a number"]),
        (['{"id": "a", "vector": {"x": NaN}}'], [":1: ", "finite"]),
        (['{"id": "a", "vector": {"x": Infinity}}'], [":1: ", "finite"]),
        (['{"id": "a", "vector": [1, 2]}'], [":1: ", '"vector" must be an object']),
        (['["a", {"x": 1}]'], [":1: ", '"id" and "vector"']),
        (
            ['{"id": "a", "vector": {"x": 1}}', '{"id": "a", "vector": {"y": 1}}'],
            ["duplicate document id 'a'"],
        ),
        ([], ["empty corpus"]),
        (["", "   "], ["empty corpus"]),
    ],
    ids=[
        "malformed-json",
        "no-vector",
        "negative",
        "string-weight",
        "bool-weight",
        "nan",
        "inf",
        "vector-not-object",
        "record-not-object",
        "duplicate-id",
        "empty-file",
        "blank-file",
    ],
)
def test_build_rejects_bad_documents(tmp_path, lines, needles):
    docs = _write_lines(tmp_path / "docs.jsonl", lines)
    result = _invoke("index", "build", docs, "-o", tmp_path / "out")
    message = _fails(result, *needles)
    if any(n.startswith(":") for n in needles):
        assert f"{docs}:" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]  # nothing written


def test_build_missing_input(tmp_path, small):
    result = _invoke(
        "index", "build", small["docs"], tmp_path / "nope.jsonl", "-o", tmp_path / "out"
    )
    _fails(result, "nope.jsonl", "file not found")
    assert not (tmp_path / "out").exists()


def test_build_truncated_gzip(tmp_path):
    records = [
        {"id": str(i), "vector": {f"t{j}": float(j + 1) for j in range(i % 7 + 1)}}
        for i in range(3000)
    ]
    with gzip.open(tmp_path / "docs.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    data = (tmp_path / "docs.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    _fails(
        _invoke("index", "build", tmp_path / "cut.jsonl.gz", "-o", tmp_path / "out"),
        "cut.jsonl.gz",
        "cannot read",
    )


def test_build_unknown_term_with_frozen_vocab(tmp_path, small):
    (tmp_path / "vocab.txt").write_text("w\nx\ny\n", encoding="utf-8")
    result = _invoke(
        "index", "build", small["docs"], "--vocab", tmp_path / "vocab.txt", "-o", tmp_path / "out"
    )
    _fails(result, f"{small['docs']}:2: ", "unknown term 'z'")
    assert not (tmp_path / "out").exists()


def test_build_missing_vocab(tmp_path, small):
    result = _invoke(
        "index", "build", small["docs"], "--vocab", tmp_path / "nov.txt", "-o", tmp_path / "out"
    )
    _fails(result, "nov.txt", "vocabulary not found")


def test_build_over_existing_index_refused_and_old_intact(tmp_path, small):
    target = tmp_path / "i"
    _ok(_invoke("index", "build", small["docs"], "-o", target))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    other = _write_records(tmp_path / "other.jsonl", [{"id": "only", "vector": {"q": 1.0}}])
    _fails(
        _invoke("index", "build", other, "-o", target), str(target), "already exists", "--overwrite"
    )
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    index = SparseIndex.open(target, verify=True)
    assert index.num_docs == 4
    assert index.search({"x": 1.0}, 1)[0].doc_id == "c"


def test_build_over_non_index_directory_refused(tmp_path, small):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    _fails(
        _invoke("index", "build", small["docs"], "-o", target, "--overwrite"),
        "precious",
        "not an lsr index",
    )
    assert (target / "keep.txt").read_text() == "mine"


def test_build_output_under_a_file(tmp_path, small):
    (tmp_path / "afile").write_text("")
    _fails(_invoke("index", "build", small["docs"], "-o", tmp_path / "afile" / "idx"), "afile")


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--quantization", "int4", "quantization"),
        ("--quantization", "UINT8", "quantization"),
        ("--block-size", "0", "block_size"),
        ("--block-size", "300", "block_size"),
        ("--doc-top-k", "0", "doc_top_k"),
        ("--term-top-n", "-1", "term_top_n"),
        ("--block-rows", "0", "block_rows"),
        ("--block-rows", "1.5", "block_rows"),
    ],
)
def test_build_rejects_bad_options(tmp_path, small, option, value, needle):
    _fails(_invoke("index", "build", small["docs"], "-o", tmp_path / "out", option, value), needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("k", ["0", "-3"])
def test_search_rejects_non_positive_k(small, k):
    _fails(
        _invoke("search", small["index"], "--vector", '{"x": 1}', "-k", k),
        f"k must be a positive integer, got {k}",
    )


@pytest.mark.parametrize(
    ("vector", "needles"),
    [
        ('{"x": 1', ["--vector is not valid JSON"]),
        ("x=1", ["--vector is not valid JSON"]),
        ("[1, 2]", ["--vector must be a JSON object"]),
        ('{"nope": 1.0}', ["unknown term 'nope'"]),
        ('{"x": -1}', ["'x'", ">= 0"]),
        ('{"x": "high"}', ["'x'", "not a number"]),
    ],
)
def test_search_rejects_bad_vector(small, vector, needles):
    _fails(_invoke("search", small["index"], "--vector", vector), *needles)


def test_search_unknown_term_in_queries_file(small, tmp_path):
    queries = _write_records(
        tmp_path / "q.jsonl",
        [
            {"id": "q1", "vector": {"x": 1.0}},
            {"id": "q2", "vector": {"nope": 1.0, "y": 1.0}},
        ],
    )
    _fails(_invoke("search", small["index"], "--queries", queries), f"{queries}:2: ", "'nope'")


def test_search_malformed_queries_file(small, tmp_path):
    queries = _write_lines(tmp_path / "q.jsonl", ['{"id": "q1", "vector": {"x": 1.0}}', "{oops"])
    _fails(
        _invoke("search", small["index"], "--queries", queries), f"{queries}:2: ", "malformed JSON"
    )


def test_search_empty_queries_file(small, tmp_path):
    queries = _write_lines(tmp_path / "q.jsonl", [])
    _fails(_invoke("search", small["index"], "--queries", queries), "no queries")


def test_search_missing_queries_file(small, tmp_path):
    _fails(
        _invoke("search", small["index"], "--queries", tmp_path / "q.jsonl"),
        "q.jsonl",
        "file not found",
    )


@pytest.mark.parametrize(
    "args",
    [[], ["--vector", '{"x": 1}', "--queries", "q.jsonl"]],
    ids=["neither", "both"],
)
def test_search_needs_exactly_one_query_source(small, args):
    _fails(
        _invoke("search", small["index"], *args),
        "exactly one of a text QUERY, --vector or --queries",
    )


def test_search_output_only_for_queries(small, tmp_path):
    _fails(
        _invoke("search", small["index"], "--vector", '{"x": 1}', "-o", tmp_path / "run"),
        "--output",
    )
    assert not (tmp_path / "run").exists()


def test_search_unwritable_output(small, tmp_path):
    queries = _write_records(tmp_path / "q.jsonl", [{"id": "q1", "vector": {"x": 1.0}}])
    (tmp_path / "afile").write_text("")
    run = tmp_path / "afile" / "run"
    _fails(_invoke("search", small["index"], "--queries", queries, "-o", run), "afile")


@pytest.mark.parametrize("command", ["search", "info"])
def test_missing_index(tmp_path, command):
    args = (
        ["index", "info", tmp_path / "nope"]
        if command == "info"
        else ["search", tmp_path / "nope", "--vector", '{"x": 1}']
    )
    _fails(_invoke(*args), "nope", "no such index directory")


@pytest.mark.parametrize("command", ["search", "info"])
def test_directory_that_is_not_an_index(tmp_path, command):
    (tmp_path / "notes.txt").write_text("hello")
    args = (
        ["index", "info", tmp_path]
        if command == "info"
        else ["search", tmp_path, "--vector", '{"x": 1}']
    )
    _fails(_invoke(*args), str(tmp_path), "not an lsr index")


def test_info_detects_corruption(tmp_path, small):
    target = tmp_path / "i"
    _ok(_invoke("index", "build", small["docs"], "-o", target))
    victim = target / "post_codes.npy"  # a weight code: only the checksums can tell
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    _fails(_invoke("index", "info", target), victim.name)
    _ok(_invoke("index", "info", target, "--no-verify"))


# -- help and the installed console script -------------------------------------------------------
HELPS = {
    (): ["index", "search"],
    ("index",): ["build", "info"],
    ("index", "build"): ["--output", "--vocab", "--quantization", "--block-size", "--overwrite"],
    ("index", "info"): ["--json", "--verify"],
    ("search",): ["--vector", "--queries", "--ignore-unknown", "--output", "-k"],
}


@pytest.mark.parametrize("args", list(HELPS), ids=lambda a: " ".join(("lsr", *a)))
def test_help(args):
    result = CliRunner().invoke(app, [*args, "--help"], prog_name="lsr", terminal_width=200)
    _ok(result)
    out = _stdout(result)
    assert "Usage: lsr " + " ".join(args) in out
    for needle in HELPS[args]:
        assert needle in out, needle


def test_console_script_end_to_end(tmp_path, small):
    """The real `lsr` entry point (each start imports numba: ~2 s, so only three runs)."""
    assert LSR.exists(), LSR
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    help_proc = subprocess.Popen(
        [str(LSR), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    index = tmp_path / "index"
    build = subprocess.run(
        [str(LSR), "index", "build", str(small["docs"]), "-o", str(index)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    assert build.stdout.startswith("indexed 4 docs, 7 postings")
    assert build.stderr == ""  # no progress bar when stderr is not a terminal
    search = subprocess.run(
        [str(LSR), "search", str(index), "--vector", '{"y": 1}', "-k", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert search.returncode == 0, search.stderr
    assert [(r, d) for r, _, d in _parse_hits(search.stdout)] == [(1, "a"), (2, "b")]
    assert search.stderr.startswith("2 hits in ") and "start-up" in search.stderr
    out, err = help_proc.communicate(timeout=120)
    assert help_proc.returncode == 0, err
    assert "Usage: lsr " in out
    for needle in HELPS[()]:
        assert needle in out
