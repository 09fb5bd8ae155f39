"""Inference-free queries: the IDF table, idf.json compatibility, and the SciFact reference."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED, SPLADE_TINY, VECTORS
from hypothesis import given, settings
from hypothesis import strategies as st

from lsr.encoders.config import SideConfig
from lsr.encoders.idf_side import IdfQueryEncoder
from lsr.encoders.idf_table import IdfTable
from lsr.errors import InputError
from lsr.vocab import Vocabulary

SCIFACT = SHARED / "data" / "beir" / "scifact"
TOKENIZER = SPLADE_TINY / "tokenizer.json"


def _idf(n: int, df: int) -> float:
    return math.log((n - df + 0.5) / (df + 0.5) + 1)


def _jsonl(path):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.load(TOKENIZER)


@pytest.fixture(scope="module")
def scifact_idf(vocab: Vocabulary) -> IdfTable:
    docs = _jsonl(SCIFACT / "corpus.jsonl.gz")
    return IdfTable.compute((d["title"] + " " + d["text"] for d in docs), TOKENIZER, vocab, 256)


# -- the formula ---------------------------------------------------------------------------------
def test_formula_by_hand(vocab: Vocabulary) -> None:
    docs = ["the cat sat", "the dog sat down", "a cat", "birds fly high"]
    table = IdfTable.compute(docs, TOKENIZER, vocab, max_length=256)
    assert table.n_docs == 4
    expected_df = {"the": 2, "cat": 2, "sat": 2, "dog": 1, "down": 1, "a": 1, "birds": 1, "fly": 1}
    for token, df in expected_df.items():
        assert table.df[vocab.get(token)] == df, token
        assert table[token] == pytest.approx(_idf(4, df), abs=1e-6), token
    assert table["zebra"] == pytest.approx(math.log(10), abs=1e-6)  # unseen: df = 0 -> ln(2N+2)
    for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"):
        assert table[special] == 0.0
    assert table.weights.dtype == np.float32 and table.weights.shape == (len(vocab),)


def test_df_counts_only_the_truncated_input(vocab: Vocabulary) -> None:
    # max_length counts [CLS] and [SEP]: 4 tokens keep two word pieces
    table = IdfTable.compute(["the cat sat", "sat"], TOKENIZER, vocab, max_length=4)
    assert table.df[vocab.get("the")] == 1
    assert table.df[vocab.get("cat")] == 1
    assert table.df[vocab.get("sat")] == 1  # only the second document's "sat" is seen
    presence = IdfTable.compute(["cat cat cat cat"], TOKENIZER, vocab)
    assert presence.df[vocab.get("cat")] == 1


def test_compute_rejects_an_empty_corpus_and_another_vocabulary(vocab: Vocabulary) -> None:
    with pytest.raises(InputError, match="empty corpus"):
        IdfTable.compute([], TOKENIZER, vocab)
    with pytest.raises(InputError, match="not the tokenizer's vocabulary"):
        IdfTable.compute(["x"], TOKENIZER, Vocabulary(["a", "b"], frozen=True))


# -- idf.json ------------------------------------------------------------------------------------
def test_idf_json_round_trip(tmp_path, vocab: Vocabulary) -> None:
    table = IdfTable.compute(["the cat sat", "a dog", "proteins fold"], TOKENIZER, vocab)
    path = tmp_path / "idf.json"
    table.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and "[CLS]" not in data  # zero weights are left out
    assert len(data) == int(np.count_nonzero(table.weights))
    loaded = IdfTable.load(path, vocab)
    np.testing.assert_array_equal(loaded.weights, table.weights)  # bit-identical float32
    assert loaded.sha256 == table.sha256


def test_our_idf_json_loads_in_sentence_transformers(tmp_path, vocab: Vocabulary) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding
    from transformers import AutoTokenizer

    table = IdfTable.compute(["the cat sat", "a dog", "proteins fold"], TOKENIZER, vocab)
    table.save(tmp_path / "idf.json")
    tokenizer = AutoTokenizer.from_pretrained(str(SPLADE_TINY))
    module = SparseStaticEmbedding.from_json(str(tmp_path / "idf.json"), tokenizer=tokenizer)
    np.testing.assert_array_equal(module.weight.detach().numpy(), table.weights)


def test_sentence_transformers_format_loads(tmp_path, vocab: Vocabulary) -> None:
    # the OpenSearch / SparseStaticEmbedding format: {token: weight}, absent tokens weigh 0
    (tmp_path / "idf.json").write_text(
        json.dumps({"cat": 3.5, "the": 0.01, "##s": 1, "[CLS]": 0.0}), encoding="utf-8"
    )
    table = IdfTable.load(tmp_path / "idf.json", vocab)
    assert table["cat"] == 3.5 and table["the"] == pytest.approx(0.01) and table["##s"] == 1.0
    assert table["dog"] == 0.0
    assert int(np.count_nonzero(table.weights)) == 3 and table.dropped_unknown == 0


def test_unknown_tokens_and_bad_weights(tmp_path, vocab: Vocabulary) -> None:
    path = tmp_path / "idf.json"
    path.write_text(json.dumps({"cat": 1.0, "Katze": 2.0, "Hund": 3.0}), encoding="utf-8")
    with pytest.raises(InputError, match=r"2 of 3 tokens are not in the tokenizer's vocabulary"):
        IdfTable.load(path, vocab)
    table = IdfTable.load(path, vocab, unknown="ignore")
    assert table.dropped_unknown == 2 and table["cat"] == 1.0
    for bad in ({"cat": -1.0}, {"cat": "x"}, {"cat": True}, ["cat"]):
        path.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(InputError):
            IdfTable.load(path, vocab)
    path.write_text('{"cat": NaN}', encoding="utf-8")
    with pytest.raises(InputError, match="finite"):
        IdfTable.load(path, vocab)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        IdfTable.load(path, vocab)
    with pytest.raises(InputError, match="not found"):
        IdfTable.load(tmp_path / "missing.json", vocab)


def test_static_embedding_safetensors_loads(tmp_path, vocab: Vocabulary) -> None:
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding
    from transformers import AutoTokenizer

    weight = torch.rand(len(vocab))
    tokenizer = AutoTokenizer.from_pretrained(str(SPLADE_TINY))
    SparseStaticEmbedding(tokenizer=tokenizer, weight=weight, frozen=True).save(str(tmp_path))
    table = IdfTable.load(tmp_path / "model.safetensors", vocab)
    np.testing.assert_array_equal(table.weights, weight.numpy())


# -- the query side ------------------------------------------------------------------------------
def test_query_vectors_are_presence_times_idf(vocab: Vocabulary) -> None:
    table = IdfTable.compute(["the cat sat", "a dog", "proteins fold"], TOKENIZER, vocab)
    encoder = IdfQueryEncoder(TOKENIZER, table, SideConfig(family="idf", max_length=64))
    (vector,) = encoder.encode(["Cat cat CAT [SEP] dog"]).to_dicts()
    assert vector == {"cat": table["cat"], "dog": table["dog"]}  # once each, no special tokens
    batch = encoder.encode(["", "zebra"], ids=["q1", "q2"])
    assert batch.ids == ["q1", "q2"] and batch.matrix[0].nnz == 0
    assert batch.to_dicts()[1] == {"zebra": pytest.approx(math.log(8))}  # ln(2*3 + 2)


def test_query_truncation_counts_special_tokens(vocab: Vocabulary) -> None:
    table = IdfTable.compute(["one two three four five"], TOKENIZER, vocab)
    encoder = IdfQueryEncoder(TOKENIZER, table, SideConfig(max_length=5))  # [CLS] + 3 + [SEP]
    assert encoder.config.family == "idf"
    (vector,) = encoder.encode(["one two three four five"]).to_dicts()
    assert set(vector) == {"one", "two", "three"}
    assert encoder.stats.truncated == 1 and encoder.stats.texts == 1
    windows = IdfQueryEncoder(TOKENIZER, table, SideConfig(max_length=5, stride=1, max_chunks=2))
    (vector,) = windows.encode(["one two three four five"]).to_dicts()
    assert set(vector) == {"one", "two", "three", "four", "five"}  # 3 + 2 new word pieces


def test_scifact_queries_match_the_reference(scifact_idf: IdfTable) -> None:
    queries = _jsonl(SCIFACT / "queries.jsonl.gz")
    reference = {r["id"]: r["vector"] for r in _jsonl(VECTORS / "queries-idf.jsonl.gz")}
    assert scifact_idf.n_docs == 5183 and len(queries) == len(reference) == 1109
    encoder = IdfQueryEncoder(TOKENIZER, scifact_idf, SideConfig(family="idf", max_length=64))
    batch = encoder.encode([q["text"] for q in queries], [q["_id"] for q in queries])
    worst = 0.0
    for qid, vector in zip(batch.ids, batch.to_dicts(), strict=True):
        expected = reference[qid]
        assert set(vector) == set(expected), qid
        worst = max(worst, max(abs(vector[t] - w) for t, w in expected.items()))
    assert worst <= 5.01e-5  # the reference is printed with 4 decimals
    assert encoder.stats.truncated == 1  # query 1218: 77 word pieces, 62 kept


def test_from_files_matches(tmp_path, scifact_idf: IdfTable) -> None:
    scifact_idf.save(tmp_path / "idf.json")
    encoder = IdfQueryEncoder.from_files(
        TOKENIZER, tmp_path / "idf.json", SideConfig(max_length=64)
    )
    np.testing.assert_array_equal(encoder.idf.weights, scifact_idf.weights)
    (tmp_path / "index").mkdir()
    encoder.save(tmp_path / "index")
    assert (tmp_path / "index" / "tokenizer.json").read_bytes() == TOKENIZER.read_bytes()
    again = IdfQueryEncoder.from_files(tmp_path / "index", tmp_path / "index" / "idf.json")
    assert (
        again.encode(["protein folding"]).to_dicts()
        == encoder.encode(["protein folding"]).to_dicts()
    )


def test_query_encoding_does_not_import_torch(tmp_path, vocab: Vocabulary) -> None:
    IdfTable.compute(["the cat sat", "a dog"], TOKENIZER, vocab).save(tmp_path / "idf.json")
    script = f"""
import sys
from lsr.encoders import IdfQueryEncoder, SideConfig
encoder = IdfQueryEncoder.from_files({str(TOKENIZER)!r}, {str(tmp_path / "idf.json")!r},
                                     SideConfig(max_length=64))
vectors = encoder.encode(["the cat", "a dog sat"]).to_dicts()
assert vectors[0] and vectors[1], vectors
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


_PIECES = [*"abcdefghij klmnop,.-éßあ\x00", "vitamin ", "cancer ", "[SEP]", "[CLS] ", "[PAD]",
           "[UNK]", "[MASK]", "  "]  # fmt: skip
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@pytest.mark.parametrize(
    "config",
    [
        SideConfig(family="idf", max_length=16),
        SideConfig(family="idf", max_length=64, top_k=3),
        SideConfig(family="idf", max_length=64, min_weight=4.0),
        SideConfig(family="idf", max_length=12, stride=2, max_chunks=3),
    ],
    ids=["truncated", "top_k", "min_weight", "windows"],
)
def test_encode_one_is_the_batch_row(scifact_idf: IdfTable, config: SideConfig) -> None:
    """The single-query fast path gives exactly the batch path's vector, typed-in special
    tokens, repeats, truncation and output pruning included."""
    side = IdfQueryEncoder(SPLADE_TINY, scifact_idf, config)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(st.lists(_TEXT, min_size=1, max_size=6))
    def check(texts: list[str]) -> None:
        batch = side.encode(texts)
        for i, text in enumerate(texts):
            one, row = side.encode_one(text), batch.row(i)
            np.testing.assert_array_equal(one.terms, row.terms)
            np.testing.assert_array_equal(one.weights, row.weights)
            assert one.weights.dtype == np.float32

    check()
