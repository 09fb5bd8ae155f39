"""SparseBatch I/O (JSONL, JSONL.gz, npz), vocabularies, remapping and input validation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import SPLADE_TINY, random_batch

from lsr.errors import InputError, UnknownTermError
from lsr.sparse import (
    SparseBatch,
    concat,
    iter_jsonl_batches,
    iter_vector_batches,
    read_jsonl,
    read_npz,
    write_jsonl,
    write_npz,
)
from lsr.vocab import Vocabulary

ODD_TOKENS = ["[CLS]", "##ing", "é", "naïve", "a b", '"q"', "日本", "\\n", "0"]


def _lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _assert_same(a: SparseBatch, b: SparseBatch) -> None:
    """Same ids, same vocabulary tokens, identical CSR arrays."""
    assert a.ids == b.ids
    assert list(a.vocab.tokens) == list(b.vocab.tokens)
    assert a.matrix.shape == b.matrix.shape
    np.testing.assert_array_equal(a.matrix.indptr, b.matrix.indptr)
    np.testing.assert_array_equal(a.matrix.indices, b.matrix.indices)
    np.testing.assert_array_equal(a.matrix.data, b.matrix.data)
    assert a.matrix.dtype == b.matrix.dtype == np.float32


@pytest.fixture
def batch() -> SparseBatch:
    """Random float32 weights (not round numbers), unicode ids, an empty row."""
    rng = np.random.default_rng(7)
    b = random_batch(rng, 40, 25, density=0.2)
    b.matrix.data = (b.matrix.data * rng.random(b.matrix.nnz) + 1e-3).astype(np.float32)
    b.ids = [f"doc-{i}-é" for i in range(40)]
    b.matrix = sp.csr_matrix(b.matrix)
    b.matrix.data[b.matrix.indptr[3] : b.matrix.indptr[4]] = 0  # row 3 empty
    b.matrix.eliminate_zeros()
    assert b.matrix[3].nnz == 0 and b.matrix.nnz > 50
    return b


@pytest.fixture
def odd_batch() -> SparseBatch:
    vocab = Vocabulary(ODD_TOKENS, frozen=True)
    return SparseBatch.from_dicts(
        [
            {"[CLS]": 0.5, "日本": 2.25},
            {"a b": 1.0, '"q"': 3.0, "\\n": 0.125},
            {"0": 7.0, "é": 1e-6},
        ],
        ids=["x", "007", "id with space"],
        vocab=vocab,
    )


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v.jsonl", "v.jsonl.gz"])
def test_jsonl_round_trip(tmp_path, batch, odd_batch, name):
    for original in (batch, odd_batch):
        path = tmp_path / name
        write_jsonl(original, path)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
        _assert_same(read_jsonl(path, original.vocab), original)
        grown = read_jsonl(path)  # growable vocabulary: the terms seen, in order of appearance
        assert not grown.vocab.frozen
        assert grown.ids == original.ids
        assert grown.to_dicts() == original.to_dicts()
        used = {t for row in original.to_dicts() for t in row}
        assert set(grown.vocab.tokens) == used


def test_jsonl_decimals(tmp_path, odd_batch):
    write_jsonl(odd_batch, tmp_path / "v.jsonl", decimals=2)
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "x", "vector": {"[CLS]": 0.5, "日本": 2.25}}
    assert rows[2]["vector"] == {"0": 7.0, "é": 0.0}


def test_npz_round_trip(tmp_path, batch, odd_batch):
    for original in (batch, odd_batch):
        write_npz(original, tmp_path / "v.npz")
        back = read_npz(tmp_path / "v.npz")
        _assert_same(back, original)
        assert back.vocab.frozen


def test_npz_read_with_vocabulary_remaps(tmp_path, odd_batch):
    write_npz(odd_batch, tmp_path / "v.npz")
    target = Vocabulary(["pad", *reversed(ODD_TOKENS)], frozen=True)
    back = read_npz(tmp_path / "v.npz", target)
    assert back.vocab is target
    assert back.to_dicts() == odd_batch.to_dicts()
    assert back.matrix[0].indices.tolist() == sorted(target.get(t) for t in ("[CLS]", "日本"))
    small = Vocabulary(["[CLS]", "a b", "0"], frozen=True)
    with pytest.raises(UnknownTermError, match="not in the vocabulary"):
        read_npz(tmp_path / "v.npz", small)
    dropped = read_npz(tmp_path / "v.npz", small, unknown="ignore")
    assert dropped.to_dicts() == [{"[CLS]": 0.5}, {"a b": 1.0}, {"0": 7.0}]
    # a growable vocabulary takes in the terms the file uses (building without --vocab)
    grown = read_npz(tmp_path / "v.npz", Vocabulary())
    assert grown.to_dicts() == odd_batch.to_dicts()
    assert set(grown.vocab.tokens) == {t for row in odd_batch.to_dicts() for t in row}


def test_read_jsonl_with_frozen_vocabulary(tmp_path):
    path = _lines(
        tmp_path / "v.jsonl",
        [
            json.dumps({"id": 1, "vector": {"c": 1.0, "a": 2.0}}),
            json.dumps({"id": "two", "vector": {"zz": 5.0, "b": 0.5}}),
        ],
    )
    vocab = Vocabulary(["a", "b", "c"], frozen=True)
    with pytest.raises(UnknownTermError) as info:
        read_jsonl(path, vocab)
    assert f"{path}:2: " in str(info.value) and "'zz'" in str(info.value)
    assert info.value.line == 2
    got = read_jsonl(path, vocab, unknown="ignore")
    assert got.ids == ["1", "two"]
    assert got.vocab is vocab and len(vocab) == 3
    assert got.matrix.toarray().tolist() == [[2.0, 0.0, 1.0], [0.0, 0.5, 0.0]]


def test_iter_jsonl_batches_chunks(tmp_path, batch):
    write_jsonl(batch, tmp_path / "v.jsonl.gz")
    vocab = Vocabulary()
    parts = list(iter_jsonl_batches(tmp_path / "v.jsonl.gz", vocab, chunk_size=7))
    assert [len(p) for p in parts] == [7, 7, 7, 7, 7, 5]
    assert all(p.vocab is vocab for p in parts)
    _assert_same(concat(parts, vocab), read_jsonl(tmp_path / "v.jsonl.gz"))
    assert concat(parts, vocab).to_dicts() == batch.to_dicts()


def test_iter_vector_batches_npz_chunks(tmp_path, batch):
    write_npz(batch, tmp_path / "v.npz")
    parts = list(iter_vector_batches(tmp_path / "v.npz", chunk_size=16))
    assert [len(p) for p in parts] == [16, 16, 8]
    _assert_same(concat(parts, parts[0].vocab), batch)


def test_empty_file_reads_as_empty_batch(tmp_path):
    batch = read_jsonl(_lines(tmp_path / "v.jsonl", []))
    assert len(batch) == 0 and batch.matrix.shape == (0, 0)
    assert list(iter_jsonl_batches(tmp_path / "v.jsonl")) == []


# -- vocabularies ----------------------------------------------------------------------------------
def test_vocabulary_from_splade_tiny_directory(splade_vocab):
    assert len(splade_vocab) == 30522
    assert splade_vocab.tokens[0] == "[PAD]"
    assert splade_vocab.get("[UNK]") == 100
    assert splade_vocab.get("[CLS]") == 101
    assert splade_vocab.get("[SEP]") == 102
    assert splade_vocab.frozen
    assert splade_vocab.id_of("not-a-wordpiece-token") == -1
    assert len(splade_vocab) == 30522  # a frozen vocabulary does not grow
    assert splade_vocab.source.endswith("tokenizer.json")
    assert Vocabulary.load(SPLADE_TINY / "tokenizer.json") == splade_vocab


def test_vocabulary_from_vocab_txt_and_json_list(tmp_path, splade_vocab):
    tokens = [*splade_vocab.tokens[:200], "a b", "é"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    from_txt = Vocabulary.load(tmp_path / "vocab.txt")
    assert list(from_txt.tokens) == tokens
    assert from_txt.frozen
    Vocabulary(tokens).save(tmp_path / "vocab.json")
    from_json = Vocabulary.load(tmp_path / "vocab.json")
    assert list(from_json.tokens) == tokens
    assert from_json.frozen
    assert from_json == from_txt and from_json.sha256 == from_txt.sha256
    # a directory holding only a vocab.txt
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "vocab.txt").write_text("x\ny\n", encoding="utf-8")
    assert list(Vocabulary.load(tmp_path / "model").tokens) == ["x", "y"]


def test_vocabulary_from_tokenizer_json_model_vocab(tmp_path):
    tokenizer = {"model": {"vocab": {"b": 1, "a": 0, "c": 2}}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert list(Vocabulary.load(tmp_path / "tokenizer.json").tokens) == ["a", "b", "c"]
    (tmp_path / "gap.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "c": 2}}}))
    with pytest.raises(InputError, match="not contiguous"):
        Vocabulary.load(tmp_path / "gap.json")


def test_vocabulary_duplicates_rejected(tmp_path):
    with pytest.raises(InputError, match="duplicate token 'a'"):
        Vocabulary(["a", "b", "a"])
    (tmp_path / "vocab.txt").write_text("x\ny\nx\n", encoding="utf-8")
    with pytest.raises(InputError, match="duplicate token 'x'"):
        Vocabulary.load(tmp_path / "vocab.txt")
    (tmp_path / "vocab.json").write_text(json.dumps(["p", "q", "q"]), encoding="utf-8")
    with pytest.raises(InputError, match="duplicate token 'q'"):
        Vocabulary.load(tmp_path / "vocab.json")


def test_vocabulary_bad_files(tmp_path):
    with pytest.raises(InputError, match="vocabulary not found"):
        Vocabulary.load(tmp_path / "missing.txt")
    with pytest.raises(InputError, match=r"no tokenizer\.json"):
        Vocabulary.load(tmp_path)
    (tmp_path / "v.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "v.json")
    (tmp_path / "v.json").write_text(json.dumps({"tokens": ["a"]}))
    with pytest.raises(InputError, match="unrecognised"):
        Vocabulary.load(tmp_path / "v.json")


# -- remap -----------------------------------------------------------------------------------------
def test_remap_onto_another_vocabulary(odd_batch):
    target = Vocabulary(["extra", *sorted(ODD_TOKENS), "more"], frozen=True)
    moved = odd_batch.remap(target)
    assert moved.vocab is target
    assert moved.ids == odd_batch.ids
    assert moved.matrix.shape == (3, len(target))
    assert moved.to_dicts() == odd_batch.to_dicts()
    assert moved.matrix.has_sorted_indices
    for row in range(3):
        assert moved.matrix[row].indices.tolist() == sorted(moved.matrix[row].indices.tolist())
    assert moved.remap(odd_batch.vocab).to_dicts() == odd_batch.to_dicts()
    same = odd_batch.remap(Vocabulary(ODD_TOKENS, frozen=True))  # an equal vocabulary
    assert same.to_dicts() == odd_batch.to_dicts()


def test_remap_unknown_terms(odd_batch):
    target = Vocabulary(["0", "a b", "[CLS]"], frozen=True)
    with pytest.raises(UnknownTermError) as info:
        odd_batch.remap(target)
    assert "'日本'" in str(info.value) and "'x'" in str(info.value)
    kept = odd_batch.remap(target, unknown="ignore")
    assert kept.to_dicts() == [{"[CLS]": 0.5}, {"a b": 1.0}, {"0": 7.0}]
    assert kept.matrix.nnz == 3


def test_remap_onto_growable_vocabulary(odd_batch):
    target = Vocabulary(["a b"])  # growable, already holding one of the terms
    moved = odd_batch.remap(target)
    assert moved.to_dicts() == odd_batch.to_dicts()
    assert target.tokens[0] == "a b"
    assert set(target.tokens) == {t for row in odd_batch.to_dicts() for t in row}
    assert "naïve" not in target  # unused vocabulary entries are not taken in


# -- validation ------------------------------------------------------------------------------------
def test_missing_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl.gz")
    with pytest.raises(InputError, match="file not found"):
        read_npz(tmp_path / "nope.npz")
    with pytest.raises(InputError, match="is a directory"):
        read_jsonl(tmp_path)


def _big_gzip(tmp_path: Path) -> bytes:
    lines = [
        json.dumps({"id": str(i), "vector": {f"t{i % 97}": 1.0 + i % 13, f"u{i % 31}": 0.5}})
        for i in range(5000)
    ]
    with gzip.open(tmp_path / "full.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    assert len(read_jsonl(tmp_path / "full.jsonl.gz")) == 5000
    return (tmp_path / "full.jsonl.gz").read_bytes()


def test_truncated_and_corrupted_gzip(tmp_path):
    data = _big_gzip(tmp_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read") as info:
        read_jsonl(tmp_path / "cut.jsonl.gz")
    assert str(tmp_path / "cut.jsonl.gz") in str(info.value)
    with pytest.raises(InputError):  # also when streamed
        for _ in iter_jsonl_batches(tmp_path / "cut.jsonl.gz", chunk_size=100):
            pass
    garbled = bytearray(data)
    garbled[20:80] = b"\xff" * 60  # a broken deflate stream (zlib.error inside gzip)
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(garbled))
    with pytest.raises(InputError, match="cannot read"):
        read_jsonl(tmp_path / "bad.jsonl.gz")
    (tmp_path / "plain.jsonl.gz").write_text('{"id": "a", "vector": {}}\n')  # not gzip at all
    with pytest.raises(InputError, match="cannot read"):
        read_jsonl(tmp_path / "plain.jsonl.gz")


def test_truncated_and_bad_npz(tmp_path, batch):
    write_npz(batch, tmp_path / "v.npz")
    data = (tmp_path / "v.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read npz"):
        read_npz(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(InputError, match="cannot read npz"):
        read_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", data=np.ones(2, dtype=np.float32))
    with pytest.raises(InputError, match=r"missing arrays: .*indices"):
        read_npz(tmp_path / "partial.npz")


@pytest.mark.parametrize("weight", ["NaN", "Infinity", "-Infinity", "-0.5", "-1e-30"])
def test_non_finite_and_negative_weights_rejected(tmp_path, weight):
    path = _lines(
        tmp_path / "v.jsonl",
        [
            '{"id": "a", "vector": {"x": 1.0}}',
            '{"id": "b", "vector": {"y": 2.0, "x": ' + weight + "}}",
        ],
    )
    with pytest.raises(InputError, match="finite and >= 0") as info:
        read_jsonl(path)
    assert f"{path}:2: " in str(info.value) and "'x'" in str(info.value)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -2.0])
def test_bad_weights_rejected_from_dicts_and_npz(tmp_path, weight):
    with pytest.raises(InputError, match="finite and >= 0"):
        SparseBatch.from_dicts([{"x": 1.0}, {"x": weight}])
    matrix = sp.csr_matrix(np.array([[1.0, weight]], dtype=np.float32))
    write_npz(SparseBatch(["a"], matrix, Vocabulary(["x", "y"])), tmp_path / "v.npz")
    with pytest.raises(InputError, match="finite and >= 0"):
        read_npz(tmp_path / "v.npz")


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ('"x"', '"vector" must be an object'),
        ('{"x": "1"}', "not a number"),
        ('{"x": true}', "not a number"),
        ('{"x": null}', "not a number"),
        ('{"x": [1]}', "not a number"),
    ],
)
def test_bad_vectors_rejected(tmp_path, vector, message):
    path = _lines(tmp_path / "v.jsonl", ['{"id": "a", "vector": ' + vector + "}"])
    with pytest.raises(InputError, match=message) as info:
        read_jsonl(path)
    assert info.value.line == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{bad json", "malformed JSON"),
        ('{"id": "a"}', '"id" and "vector"'),
        ('{"vector": {}}', '"id" and "vector"'),
        ("[1, 2]", '"id" and "vector"'),
    ],
)
def test_bad_records_rejected_with_line(tmp_path, line, message):
    path = _lines(tmp_path / "v.jsonl", ['{"id": "a", "vector": {"x": 1}}', "", line])
    with pytest.raises(InputError, match=message) as info:
        read_jsonl(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")


def test_zero_weights_dropped(tmp_path):
    path = _lines(
        tmp_path / "v.jsonl",
        [
            '{"id": "a", "vector": {"zero": 0, "x": 1.5, "negzero": -0.0}}',
            '{"id": "b", "vector": {"zero": 0.0}}',
        ],
    )
    got = read_jsonl(path)
    assert got.to_dicts() == [{"x": 1.5}, {}]
    assert got.matrix.nnz == 1
    assert "zero" not in got.vocab and "negzero" not in got.vocab
    assert SparseBatch.from_dicts([{"a": 0.0, "b": 2}]).to_dicts() == [{"b": 2.0}]
    # explicit zeros stored in an npz are dropped too
    matrix = sp.csr_matrix((np.array([0.0, 2.0], dtype=np.float32), [0, 1], [0, 2]), shape=(1, 2))
    assert matrix.nnz == 2
    write_npz(SparseBatch(["a"], matrix, Vocabulary(["p", "q"])), tmp_path / "v.npz")
    back = read_npz(tmp_path / "v.npz")
    assert back.matrix.nnz == 1
    assert back.to_dicts() == [{"q": 2.0}]


def test_blank_lines_skipped(tmp_path):
    path = _lines(
        tmp_path / "v.jsonl",
        [
            "",
            '{"id": "a", "vector": {"x": 1}}',
            "   ",
            "\t",
            '{"id": "b", "vector": {"y": 2}}',
            "",
        ],
    )
    got = read_jsonl(path)
    assert got.ids == ["a", "b"]
    assert got.to_dicts() == [{"x": 1.0}, {"y": 2.0}]
    # line numbers in errors count the blank lines
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n{oops}\n")
    with pytest.raises(InputError) as info:
        read_jsonl(path)
    assert info.value.line == 8


def test_batch_shape_checked():
    with pytest.raises(InputError, match="2 ids for 1 rows"):
        SparseBatch(["a", "b"], sp.csr_matrix((1, 2), dtype=np.float32), Vocabulary(["x", "y"]))
    with pytest.raises(InputError, match="3 columns"):
        SparseBatch(["a"], sp.csr_matrix((1, 3), dtype=np.float32), Vocabulary(["x", "y"]))
