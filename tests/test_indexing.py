"""Indexing text end to end: encode → resumable shards → index → text search (CLI and API)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr.encoders import EncoderConfig, SideConfig, load_encoder
from lsr.ingest import ShardStore, index_corpus
from lsr.retrieval import Retriever
from tests.conftest import SPLADE_TINY, brute_force_topk

QUERIES = [
    "vitamin D deficiency and cancer risk",
    "stem cells differentiate into neurons",
    "antibiotic resistance in bacteria",
]


def _config(**changes) -> EncoderConfig:
    base = dict(
        model=str(SPLADE_TINY),
        query=SideConfig(max_length=32),
        document=SideConfig(max_length=64),
    )
    return EncoderConfig(**(base | changes))


@pytest.fixture(scope="module")
def corpus(beir_slice: Path) -> Path:
    return beir_slice / "corpus.jsonl.gz"


@pytest.fixture(scope="module")
def siamese_index(corpus: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "siamese"
    index_corpus(corpus, out, _config(), shard_size=32)
    return out


def test_text_search_equals_brute_force_over_the_encoders_vectors(siamese_index, corpus):
    from lsr.corpus import iter_corpus

    retriever = Retriever.open(siamese_index)
    assert retriever.sparse.manifest["encoder"]["config"]["query_mode"] == "siamese"
    encoder = load_encoder(_config())
    ids, texts = zip(*iter_corpus(corpus), strict=True)
    docs = encoder.encode_document(list(texts), list(ids))
    queries = encoder.encode_query(QUERIES)
    expected = brute_force_topk(queries.matrix, docs.matrix, 10)
    got = retriever.batch_search(QUERIES, 10)
    scale = retriever.sparse.codec.scale
    for want, hits in zip(expected, got, strict=True):
        # uint8 storage: scores agree within the quantisation bound, and so do the top ranks
        assert [h.doc_id for h in hits[:3]] == [ids[j] for j, _ in want[:3]]
        for hit, (_, score) in zip(hits, want, strict=False):
            assert abs(hit.score - score) <= scale * queries.matrix.sum() + 1e-4
    one = retriever.search(QUERIES[0], 10)
    assert one == got[0]


def test_interrupted_encode_resumes_from_shards(corpus, tmp_path, monkeypatch):
    out, work = tmp_path / "idx", tmp_path / "work"
    calls = {"n": 0}
    save = ShardStore.save

    def crash_on_third(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return save(self, *args, **kwargs)

    monkeypatch.setattr(ShardStore, "save", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(corpus, out, _config(), shard_size=16, work_dir=work)
    assert not out.exists()  # no half index
    monkeypatch.setattr(ShardStore, "save", save)
    result = index_corpus(corpus, out, _config(), shard_size=16, work_dir=work)
    assert result.encoded_docs == result.num_docs - 32  # two shards came from disk
    assert "resumed" in result.summary()
    assert not work.exists()  # shards are removed once the index is published
    # a different document side invalidates old shards: everything is encoded again
    index_corpus(
        corpus, out, _config(), shard_size=16, work_dir=work, keep_shards=True, overwrite=True
    )
    changed = _config(document=SideConfig(max_length=48))
    again = index_corpus(corpus, out, changed, shard_size=16, work_dir=work, overwrite=True)
    assert again.encoded_docs == again.num_docs


def test_existing_output_is_refused_before_encoding(siamese_index, corpus):
    from lsr.errors import InputError

    with pytest.raises(InputError, match="exists"):
        index_corpus(corpus, siamese_index, _config())


def test_inference_free_index_answers_without_torch(corpus, tmp_path):
    out = tmp_path / "if"
    config = _config(query_mode="inference-free", query=SideConfig(family="idf", max_length=32))
    index_corpus(corpus, out, config, shard_size=64)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"idf", "tokenizer"} <= set(manifest["files"])
    code = (
        "import sys\n"
        "from lsr.retrieval import Retriever\n"
        f"r = Retriever.open({str(out)!r}, verify=True)\n"
        f"hits = r.search({QUERIES[0]!r}, 5)\n"
        "assert hits and 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "print(hits[0].doc_id)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # the query vector is tokenizer presence x the stored IDF table
    retriever = Retriever.open(out)
    q = retriever.encode_query(["cancer cancer risk"])
    weights = dict(zip(q.matrix.indices.tolist(), q.matrix.data.tolist(), strict=True))
    idf = json.loads((out / "idf.json").read_text())
    vocab = retriever.sparse.vocab
    assert weights == pytest.approx({vocab.get(t): idf[t] for t in ("cancer", "risk")})


def _lsr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lsr.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_build_and_search_text(corpus, tmp_path):
    out = tmp_path / "cli-idx"
    done = _lsr(
        "index",
        "build",
        "--corpus",
        str(corpus),
        "--model",
        str(SPLADE_TINY),
        "-o",
        str(out),
        "--doc-max-length",
        "64",
        "--query-max-length",
        "32",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "indexed" in done.stdout and "docs/s" in done.stdout
    done = _lsr("search", str(out), QUERIES[0], "-k", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    scores = [float(line.split()[1]) for line in lines]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/nonexistent/model-dir"], "/nonexistent/model-dir"),
        (["--model", str(SPLADE_TINY), "--query-mode", "sideways"], "query_mode"),
    ],
)
def test_cli_build_errors(corpus, tmp_path, args, needle):
    done = _lsr("index", "build", "--corpus", str(corpus), "-o", str(tmp_path / "x"), *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert needle in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_cli_corpus_without_id(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"title": "t", "text": "no id here"}\n')
    done = _lsr(
        "index",
        "build",
        "--corpus",
        str(bad),
        "--model",
        str(SPLADE_TINY),
        "-o",
        str(tmp_path / "x"),
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{bad}:2" in done.stderr and "_id" in done.stderr
    assert not (tmp_path / "x").exists()


def test_cli_text_search_on_a_vector_index_explains(tmp_path, scifact):
    from lsr import SparseIndex

    SparseIndex.build(scifact["docs"], tmp_path / "vec")
    done = _lsr("search", str(tmp_path / "vec"), "some text")
    assert done.returncode == 2 and "names no encoder" in done.stderr
    assert "Traceback" not in done.stderr


def test_shard_order_and_ids_are_preserved(corpus, tmp_path):
    from lsr.corpus import iter_corpus

    out = tmp_path / "order"
    index_corpus(corpus, out, _config(), shard_size=7)
    retriever = Retriever.open(out)
    ids = [retriever.sparse.doc_id(i) for i in range(len(retriever.sparse))]
    assert ids == [doc_id for doc_id, _ in iter_corpus(corpus)]
    assert np.isfinite(retriever.sparse.codec.scale)


def test_a_siamese_index_loads_only_the_query_side(siamese_index, monkeypatch):
    """Searching needs the query side: the document side is not built (start-up time)."""
    from lsr.encoders import sides

    built = []
    make = sides.SpladeSide.__init__

    def counting_init(self, *args, **kwargs):
        built.append(args[1].max_length)  # the SideConfig: query sides have max_length 32 here
        make(self, *args, **kwargs)

    monkeypatch.setattr(sides.SpladeSide, "__init__", counting_init)
    retriever = Retriever.open(siamese_index)
    assert retriever.search(QUERIES[0], 3)
    assert built == [32]
