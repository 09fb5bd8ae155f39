"""A sharded collection answers exactly as one collection holding the same documents.

The oracle is a plain (unsharded) :class:`Collection` given the same writes: for N in {1, 2, 3, 4}
shards, sparse, dense, hybrid (min-max and RRF), filtered, paginated and PRF searches return the
same ids and the same score bits, ties included (documents with identical vectors) and with empty
shards. Shards are disjoint, cover the collection and hold exactly the ids ``shard_of`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lsr.collection import Collection, CollectionReader, DensePrf, PrfConfig, SparsePrf
from lsr.errors import IndexFormatError, InputError
from lsr.retrieval import FusionConfig
from lsr.shards import shard_of
from lsr.shards.collection import ShardedCollection
from lsr.shards.layout import shard_dir
from lsr.sparse import SparseBatch

DIM = 6
KINDS = ("paper", "note", "review")


def corpus(docs: SparseBatch, n: int, seed: int) -> dict[str, Any]:
    """``n`` SciFact document vectors with dense rows and metadata; the last few repeat earlier
    documents' vectors under new ids, so scores tie across shards."""
    rng = np.random.default_rng(seed)
    rows = [*range(n - 5), 0, 0, 1, 2, 2]
    ids = [f"d{i:04d}" for i in range(n)]
    dense = rng.standard_normal((n - 5, DIM)).astype(np.float32)
    dense = np.concatenate([dense, dense[[0, 0, 1, 2, 2]]])
    metadata = [
        {"year": int(2000 + rng.integers(0, 20)), "kind": KINDS[int(rng.integers(0, 3))]}
        if i % 7
        else {"flag": bool(i % 2)}
        for i in range(n)
    ]
    matrix = docs.matrix[rows]
    return {
        "ids": ids,
        "vectors": SparseBatch(ids=ids, matrix=matrix, vocab=docs.vocab),
        "dense": dense,
        "metadata": metadata,
        "texts": [f"text of {i}" for i in ids],
    }


def both(
    tmp_path: Path, vocab: Any, n_shards: int, **options: Any
) -> tuple[Collection, ShardedCollection]:
    kwargs = {"vocab": vocab, "dense_dim": DIM, "flush_docs": 64, **options}
    one = Collection.create(tmp_path / "one", **kwargs)
    many = ShardedCollection.create(tmp_path / f"many{n_shards}", n_shards, **kwargs)
    return one, many


def queries(scifact: dict[str, SparseBatch], n: int) -> list[tuple[dict[str, float], np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        batch = scifact["queries-siamese"]
        row = batch.matrix[i]
        tokens = batch.vocab.tokens
        q = {tokens[t]: float(w) for t, w in zip(row.indices, row.data, strict=True)}
        out.append((q, rng.standard_normal(DIM).astype(np.float32)))
    return out


FILTERS = [
    None,
    {"kind": "paper"},
    {"year": {"gte": 2010}},
    {"or": [{"kind": "note"}, {"flag": True}]},
    {"not": {"kind": "review"}},
]


def searches(c: Any, q: dict[str, float], vec: np.ndarray) -> list[Any]:
    """Every kind of search, as comparable lists of (id, score)."""
    out = []
    for flt in FILTERS:
        out.append(c.search(q, 10, filter=flt))
        out.append(c.search(None, 10, filter=flt, mode="dense", dense=vec))
    out.append(c.search(q, 60))  # page 3 of 20 is its tail: pagination slices this list
    out.append(c.search(q, 10, mode="hybrid", dense=vec, fusion=FusionConfig(depth=30)))
    out.append(
        c.search(q, 10, mode="hybrid", dense=vec, fusion=FusionConfig(method="rrf", depth=25))
    )
    out.append(c.search(q, 10, filter={"kind": "paper"}, mode="hybrid", dense=vec))
    prf = PrfConfig(sparse=SparsePrf(m=3), dense=DensePrf(m=2), interpolation="both")
    out.append(c.search(q, 10, mode="hybrid", dense=vec, prf=prf))
    out.append(c.search(q, 10, prf=PrfConfig(sparse=SparsePrf(m=4, beta=0.5))))
    out.append([(m.id, m.score, m.text, m.metadata) for m in c.search(q, 5, with_payload=True)])
    out.append(c.count({"kind": "note"}))
    return out


def check_layout(many: ShardedCollection, expected_ids: set[str]) -> None:
    held = []
    for s, shard in enumerate(many.shards):
        ids = set(shard.view().matching_ids(None))
        assert all(shard_of(i, many.n_shards) == s for i in ids)
        held.append(ids)
    assert sum(len(h) for h in held) == len(expected_ids)  # disjoint
    assert set().union(*held) == expected_ids  # covering


@pytest.mark.parametrize("n_shards", [1, 2, 3, 4])
def test_sharded_equals_one_collection(tmp_path, scifact, splade_vocab, n_shards):
    data = corpus(scifact["docs"], 150, seed=n_shards)
    one, many = both(tmp_path, splade_vocab, n_shards)
    with one, many:
        for c in (one, many):
            c.upsert(data["ids"][:100], **sliced(data, 0, 100))
            c.upsert(data["ids"][100:], **sliced(data, 100, 150))
        qs = queries(scifact, 6)
        for q, vec in qs:
            assert searches(many, q, vec) == searches(one, q, vec)
        check_layout(many, set(data["ids"]))
        # writes: replace, delete by id, delete by filter; the answers stay identical
        for c in (one, many):
            c.upsert(data["ids"][:20], **sliced(data, 30, 50))
            assert c.delete([*data["ids"][40:60], "nope"]).count == 20
            c.delete_by_filter({"kind": "review"})
        assert len(many) == len(one)
        for q, vec in qs[:3]:
            assert searches(many, q, vec) == searches(one, q, vec)
        assert many.vectors(data["ids"][:30]).keys() == one.vectors(data["ids"][:30]).keys()
        for i, v in many.vectors(data["ids"][:30]).items():
            w = one.vectors([i])[i]
            assert np.array_equal(v.terms, w.terms) and np.array_equal(v.weights, w.weights)
        assert many.get(data["ids"][:30]) == one.get(data["ids"][:30])
        live = set(one.snapshot().matching_ids(None))
        check_layout(many, live)
        many.compact()
        one.compact()
        for q, vec in qs[:2]:
            assert searches(many, q, vec) == searches(one, q, vec)


def sliced(data: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {
        "vectors": SparseBatch(
            ids=data["ids"][a:b], matrix=data["vectors"].matrix[a:b], vocab=data["vectors"].vocab
        ),
        "dense": data["dense"][a:b],
        "metadata": data["metadata"][a:b],
        "texts": data["texts"][a:b],
    }


def test_empty_shards_and_ties(tmp_path, scifact, splade_vocab):
    """Three documents over four shards (at least one shard empty); two tie exactly."""
    ids = ["a", "b", "c"]
    matrix = scifact["docs"].matrix[[5, 5, 9]]
    one, many = both(tmp_path, splade_vocab, 4)
    with one, many:
        assert any(not g for g in _groups(ids, 4))
        for c in (one, many):
            c.upsert(
                ids,
                vectors=SparseBatch(ids=ids, matrix=matrix, vocab=splade_vocab),
                dense=np.ones((3, DIM)),
            )
        q = {splade_vocab.tokens[t]: 1.0 for t in scifact["docs"].matrix[5].indices[:5]}
        got = many.search(q, 10)
        assert got == one.search(q, 10)
        assert got[0].score == got[1].score and [got[0].doc_id, got[1].doc_id] == ["a", "b"]
        dense = many.search(None, 2, mode="dense", dense=np.ones(DIM))
        assert [h.doc_id for h in dense] == ["a", "b"]  # three-way tie: smaller ids first
        assert many.search({"zzz-not-a-token": 1.0}, 5) == []


def _groups(ids: list[str], n: int) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(n)]
    for i in ids:
        out[shard_of(i, n)].append(i)
    return out


def test_one_schema_across_shards(tmp_path, scifact, splade_vocab):
    """A field one shard has never seen still filters there (as absent), and a value of another
    kind is refused before any shard writes."""
    one, many = both(tmp_path, splade_vocab, 3)
    vectors = scifact["docs"]
    with one, many:
        ids = [f"x{i}" for i in range(12)]
        batch = SparseBatch(ids=ids, matrix=vectors.matrix[:12], vocab=splade_vocab)
        meta = [{"year": 2001} if i == 0 else None for i in range(12)]
        for c in (one, many):
            c.upsert(ids, vectors=batch, dense=np.zeros((12, DIM)), metadata=meta)
        q = {splade_vocab.tokens[t]: 1.0 for t in vectors.matrix[0].indices[:8]}
        for flt in ({"year": 2001}, {"not": {"year": 2001}}):
            assert many.search(q, 20, filter=flt) == one.search(q, 20, filter=flt)
        before = many.info()["live_docs"]
        with pytest.raises(InputError, match="year"):
            many.upsert(
                ["y1", "y2"],
                vectors=SparseBatch(
                    ids=["y1", "y2"], matrix=vectors.matrix[:2], vocab=splade_vocab
                ),
                dense=np.zeros((2, DIM)),
                metadata=[{"year": 3}, {"year": "x"}],
            )
        assert many.info()["live_docs"] == before
        with pytest.raises(InputError):
            many.search(q, 5, filter={"nofield": 1})


def test_text_collection_encodes_once_and_matches(tmp_path, beir_slice):
    """A model-backed collection (inference-free splade-tiny): the router encodes the texts, the
    shards store them, and searches by text equal one collection's."""
    from conftest import SPLADE_TINY

    from lsr.corpus import iter_corpus

    docs = list(iter_corpus(beir_slice))[:40]
    ids, texts = [d for d, _ in docs], [t for _, t in docs]
    opts = {"model": str(SPLADE_TINY), "query_mode": "siamese"}
    one = Collection.create(tmp_path / "one", **opts)
    many = ShardedCollection.create(tmp_path / "many", 3, **opts)
    with one, many:
        one.upsert(ids, texts=texts)
        many.upsert(ids, texts=texts)
        for text in ("cancer risk", "protein folding in cells", texts[3][:60]):
            assert many.search(text, 10) == one.search(text, 10)
        assert many.get(ids[:3]) == one.get(ids[:3])


def test_readers_follow_and_bad_layouts(tmp_path, scifact, splade_vocab):
    ids = [f"r{i}" for i in range(20)]
    matrix = scifact["docs"].matrix

    def batch(a: int, b: int) -> SparseBatch:
        return SparseBatch(ids=ids[a:b], matrix=matrix[a:b], vocab=splade_vocab)

    with ShardedCollection.create(tmp_path / "s", 2, vocab=splade_vocab) as writer:
        writer.upsert(ids[:10], vectors=batch(0, 10))
        with ShardedCollection.open(tmp_path / "s", read_only=True) as reader:
            assert len(reader) == 10
            assert isinstance(reader.shards[0].collection, CollectionReader)
            writer.upsert(ids[10:], vectors=batch(10, 20))
            reader.refresh()
            q = {splade_vocab.tokens[t]: 1.0 for t in scifact["docs"].matrix[3].indices[:6]}
            assert reader.search(q, 10) == writer.search(q, 10)
            with pytest.raises(InputError, match="read-only"):
                reader.delete(ids[:1])
        with pytest.raises(InputError, match="another process"):
            ShardedCollection.open(tmp_path / "s")  # its shards are held by the writer
    with pytest.raises(IndexFormatError, match="not a sharded collection"):
        ShardedCollection.open(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sharded.json").write_text('{"format": "other"}')
    with pytest.raises(IndexFormatError):
        ShardedCollection.open(tmp_path / "bad")
    with pytest.raises(InputError, match="shards must be"):
        ShardedCollection.create(tmp_path / "zero", 0, vocab=splade_vocab)
    assert not (tmp_path / "zero").exists()
    assert shard_dir(tmp_path / "s", 1).is_dir()


def test_cli_creates_and_searches_a_sharded_collection(tmp_path):
    """`lsr collection create --shards` and the other collection commands on it; `lsr serve
    --ray` refuses a data directory without sharded collections before Ray starts."""
    import json

    from typer.testing import CliRunner

    from lsr.cli import app

    runner = CliRunner()
    (tmp_path / "vocab.json").write_text(json.dumps([f"t{i}" for i in range(8)]))
    rows = [{"id": f"d{i}", "vector": {f"t{i % 8}": 1.0, f"t{(i + 1) % 8}": 0.5}}
            for i in range(20)]  # fmt: skip
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain, split = tmp_path / "plain", tmp_path / "split"
    for path, extra in ((plain, []), (split, ["--shards", "3"])):
        result = runner.invoke(app, ["collection", "create", str(path),
                                     "--vocab", str(tmp_path / "vocab.json"), *extra])  # fmt: skip
        assert result.exit_code == 0, result.stderr
        result = runner.invoke(app, ["collection", "add", str(path), str(tmp_path / "docs.jsonl")])
        assert result.exit_code == 0, result.stderr
    assert "3 shards" in runner.invoke(app, ["collection", "create", str(tmp_path / "x"),
                                             "--vocab", str(tmp_path / "vocab.json"),
                                             "--shards", "3"]).stderr  # fmt: skip
    outs = [
        runner.invoke(app, ["collection", "search", str(p), "--vector", '{"t1": 1.0}', "-k", "8"])
        for p in (plain, split)
    ]
    assert outs[0].exit_code == outs[1].exit_code == 0
    assert outs[0].stdout == outs[1].stdout
    result = runner.invoke(app, ["collection", "info", str(split)])
    assert result.exit_code == 0 and json.loads(result.stdout)["live_docs"] == 20
    result = runner.invoke(app, ["collection", "compact", str(split)])
    assert result.exit_code == 0, result.stderr
    vocab = str(tmp_path / "vocab.json")
    result = runner.invoke(
        app, ["collection", "create", str(tmp_path / "y"), "--vocab", vocab, "--shards", "0"]
    )
    assert result.exit_code != 0
    pytest.importorskip("ray")
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path / "empty"), "--ray", "local"])
    assert result.exit_code == 2
    assert "no sharded collections" in result.stderr and "Traceback" not in result.stderr
