"""Building sharded collections on Ray (lsr.shards.ray_build): routing, exact vectors, one global
IDF table, empty shards, resuming after a failure, and the ``lsr index build --shards`` CLI.

One local Ray cluster (2 CPUs) serves the whole module; the builds join it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SCIFACT_BEIR, SPLADE_TINY

ray = pytest.importorskip("ray")

from lsr.collection import Collection  # noqa: E402
from lsr.corpus import load_corpus  # noqa: E402
from lsr.errors import InputError  # noqa: E402
from lsr.shards import ray_build  # noqa: E402
from lsr.shards.layout import is_sharded, read_layout, shard_dir, shard_of  # noqa: E402
from lsr.shards.ray_build import RayBuildResult, build_sharded  # noqa: E402

MODEL = str(SPLADE_TINY)
N_DOCS = 200


def _write_corpus(path: Path, n: int, skip: int = 0) -> Path:
    """The first ``n`` SciFact documents (after ``skip``) as a corpus JSONL."""
    lines = []
    with gzip.open(SCIFACT_BEIR / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= skip + n:
                break
            if i >= skip:
                lines.append(line.rstrip("\n"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cluster():
    if not SPLADE_TINY.is_dir():
        pytest.skip("splade-tiny is not in the shared folder")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level="WARNING",
        )
    yield
    if started_here:
        ray.shutdown()


@pytest.fixture(scope="module")
def built(cluster, tmp_path_factory):
    """200 SciFact docs, inference-free (IDF computed on Ray), 3 shards, work dir kept."""
    root = tmp_path_factory.mktemp("ray-build")
    corpus = _write_corpus(root / "corpus.jsonl", N_DOCS)
    messages: list[str] = []
    result = build_sharded(
        corpus,
        root / "out",
        model=MODEL,
        shards=3,
        query_mode="inference-free",
        keep_work=True,
        batch_size=16,
        log=messages.append,
    )
    return {"root": root, "corpus": corpus, "result": result, "log": messages}


def _shard_ids(path: Path, n_shards: int, ids: list[str]) -> list[set[str]]:
    out = []
    for i in range(n_shards):
        with Collection.open(shard_dir(path, i)) as collection:
            out.append(set(collection.vectors(ids)))
    return out


def _assert_vectors_match(path: Path, n_shards: int, corpus: dict[str, str], encoder) -> None:
    """Every stored vector is the single-process encoding of its text (through the codec)."""
    ids, texts = list(corpus), list(corpus.values())
    reference = encoder.encode_document(texts, ids)
    found = 0
    for i in range(n_shards):
        with Collection.open(shard_dir(path, i)) as collection:
            stored = collection.vectors(ids)
            texts_back = collection.get(list(stored))
            codec = collection.codec
        for doc_id, vector in stored.items():
            row = reference.row(ids.index(doc_id))
            order = np.argsort(row.terms)
            np.testing.assert_array_equal(vector.terms, row.terms[order])
            want = codec.decode(codec.encode(row.weights[order]))
            np.testing.assert_array_equal(vector.weights, want)
            assert texts_back[doc_id][0] == corpus[doc_id]
        found += len(stored)
    assert found == len(corpus)


# -- the 200-document build ----------------------------------------------------------------------
def test_shards_are_disjoint_cover_the_corpus_and_follow_shard_of(built):
    out = built["root"] / "out"
    corpus = load_corpus(built["corpus"])
    assert is_sharded(out) and read_layout(out)["shards"] == 3
    assert not (out.parent / ".out.building").exists()
    parts = _shard_ids(out, 3, list(corpus))
    assert sum(len(p) for p in parts) == len(corpus) == N_DOCS
    assert set().union(*parts) == set(corpus)
    for i, part in enumerate(parts):
        assert all(shard_of(doc_id, 3) == i for doc_id in part)
    result: RayBuildResult = built["result"]
    assert result.shard_docs == [len(p) for p in parts]
    assert result.encoded_docs == N_DOCS and result.built_shards == 3
    line = result.summary()
    assert "\n" not in line and "200 docs into 3 shards" in line and "docs/s" in line


def test_global_idf_equals_compute_idf_and_is_the_same_in_every_shard(built):
    from lsr.encoders import IdfTable, compute_idf
    from lsr.vocab import Vocabulary

    corpus = load_corpus(built["corpus"])
    reference = compute_idf(MODEL, corpus.values(), query_mode="inference-free")
    out, work = built["root"] / "out", built["root"] / "out.work"
    vocab = Vocabulary.load(out / "shard-000" / "vocab.json")
    computed = IdfTable.load(work / "idf.json", vocab)
    np.testing.assert_array_equal(computed.weights, reference.weights)
    digests = set()
    for i in range(3):
        table = IdfTable.load(shard_dir(out, i) / "idf.json", vocab)
        np.testing.assert_array_equal(table.weights, reference.weights)
        digests.add((shard_dir(out, i) / "idf.json").read_bytes())
    assert len(digests) == 1


def test_stored_vectors_equal_the_single_process_encoding(built):
    from lsr.encoders import compute_idf, load_encoder

    corpus = load_corpus(built["corpus"])
    table = compute_idf(MODEL, corpus.values(), query_mode="inference-free")
    encoder = load_encoder(MODEL, query_mode="inference-free", idf_table=table)
    _assert_vectors_match(built["root"] / "out", 3, corpus, encoder)


# -- siamese, an empty shard, one shard ----------------------------------------------------------
def test_siamese_build_with_an_empty_shard(cluster, tmp_path):
    from lsr.encoders import load_encoder

    corpus_path = _write_corpus(tmp_path / "corpus.jsonl", 3)
    corpus = load_corpus(corpus_path)
    result = build_sharded(corpus_path, tmp_path / "out", model=MODEL, shards=4)
    assert sum(result.shard_docs) == 3 and 0 in result.shard_docs
    parts = _shard_ids(tmp_path / "out", 4, list(corpus))
    assert [len(p) for p in parts] == result.shard_docs
    for i, part in enumerate(parts):
        assert all(shard_of(doc_id, 4) == i for doc_id in part)
        with Collection.open(shard_dir(tmp_path / "out", i)) as collection:
            assert collection.query_mode == "siamese"
            assert collection.info()["live_docs"] == len(part)
    _assert_vectors_match(tmp_path / "out", 4, corpus, load_encoder(MODEL))
    assert not (tmp_path / "out.work").exists()  # removed once published


# -- resume ----------------------------------------------------------------------------------------
def test_a_rerun_after_a_failure_rebuilds_only_what_is_missing(cluster, tmp_path, monkeypatch):
    from lsr.encoders import load_encoder

    corpus_path = _write_corpus(tmp_path / "corpus.jsonl", 12, skip=300)
    out, work = tmp_path / "out", tmp_path / "out.work"

    def killed(staging, output):
        raise RuntimeError("killed before publishing")

    monkeypatch.setattr(ray_build, "_publish", killed)
    with pytest.raises(RuntimeError, match="killed"):
        build_sharded(corpus_path, out, model=MODEL, shards=2)
    monkeypatch.undo()
    assert not out.exists()  # never half-written
    markers = sorted((work / "built").glob("*.done"))
    assert [m.name for m in markers] == ["shard-000.done", "shard-001.done"]
    # shard 1 died half way: no marker, junk in its directory
    markers[1].unlink()
    (tmp_path / ".out.building" / "shard-001" / "junk").write_text("half-written")
    kept = markers[0].stat().st_mtime_ns
    encoded = sorted(p.stat().st_mtime_ns for p in (work / "encoded").rglob("*.parquet"))

    messages: list[str] = []
    result = build_sharded(
        corpus_path, out, model=MODEL, shards=2, keep_work=True, log=messages.append
    )
    assert "encode: vectors encoded by a previous run" in messages
    assert "shard 0: built by a previous run" in messages
    assert any(m.startswith("shard 1: ") and "docs" in m for m in messages)
    assert result.encoded_docs == 0 and result.built_shards == 1 and result.num_docs == 12
    assert "encoded vectors resumed" in result.summary()
    assert is_sharded(out) and not (out / "shard-001" / "junk").exists()
    assert (work / "built" / "shard-000.done").stat().st_mtime_ns == kept
    assert (work / "built" / "shard-001.done").is_file()
    assert sorted(p.stat().st_mtime_ns for p in (work / "encoded").rglob("*.parquet")) == encoded
    _assert_vectors_match(out, 2, load_corpus(corpus_path), load_encoder(MODEL))


def test_another_job_in_the_work_dir_starts_over(tmp_path, monkeypatch):
    corpus_path = _write_corpus(tmp_path / "corpus.jsonl", 4)
    work = tmp_path / "out.work"
    work.mkdir()
    (work / "job.json").write_text(json.dumps({"corpus": "something else"}))
    (work / "encoded.done.json").write_text("{}")

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before starting Ray")

    monkeypatch.setattr(ray_build, "_start_ray", stop)
    messages: list[str] = []
    with pytest.raises(RuntimeError, match="stopped"):
        build_sharded(corpus_path, tmp_path / "out", model=MODEL, shards=1, log=messages.append)
    assert any("starting over" in m for m in messages)
    assert [p.name for p in work.iterdir()] == ["job.json"]
    assert json.loads((work / "job.json").read_text())["shards"] == 1


# -- validation before any work ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shards": 0}, "shards must be an integer"),
        ({"shards": 2000}, "shards must be an integer"),
        ({"corpus": "missing.jsonl"}, "file not found"),
        ({"model": "/no/such/model"}, "model directory not found"),
        ({"query_mode": "dense"}, "query_mode must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"quantization": "uint8"}, "needs max_weight"),
        ({"output": "full"}, "already exists and is not empty"),
        ({"work_dir": "full"}, "holds no lsr build"),
        ({"corpus": "bad.jsonl"}, "duplicate id"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, change, message):
    _write_corpus(tmp_path / "corpus.jsonl", 2)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    row = json.dumps({"_id": "a", "text": "t"})
    (tmp_path / "bad.jsonl").write_text(f"{row}\n{row}\n")
    args = {"corpus": "corpus.jsonl", "output": "out", "model": MODEL, "shards": 2, **change}
    corpus, output = tmp_path / args.pop("corpus"), tmp_path / args.pop("output")
    if "work_dir" in args:
        args["work_dir"] = tmp_path / args["work_dir"]
    with pytest.raises(InputError, match=message):
        build_sharded(corpus, output, **args)
    assert not (tmp_path / "out.work").exists() and not (tmp_path / ".out.building").exists()


def test_actors_leave_cpus_for_the_read_and_write_tasks():
    plan = ray_build._plan_actors
    cluster = ray_build._Cluster
    actors, resources, data_cpus, total = plan(cluster(False, 2.0, 0.0, 0.0), None)
    assert total == 1.0
    assert (actors, resources, data_cpus) == (1, {"num_cpus": 1.0}, 1.0)
    actors, resources, data_cpus, _ = plan(cluster(False, 16.0, 0.0, 0.0), None)
    assert actors == 15 and actors * resources["num_cpus"] < 16
    actors, resources, _, _ = plan(cluster(False, 2.0, 0.0, 0.0), 4)
    assert actors * resources["num_cpus"] <= 1.0
    actors, resources, _, _ = plan(cluster(False, 16.0, 0.0, 0.0), 3)
    assert actors == 3 and resources["num_cpus"] == 5.0
    actors, resources, _, _ = plan(cluster(False, 1.0, 0.0, 0.0), None)
    assert actors == 1 and resources["num_cpus"] < 1.0
    actors, resources, _, _ = plan(cluster(False, 8.0, 2.0, 0.0), None)
    assert actors == 2 and resources["num_gpus"] == 1.0
    with pytest.raises(InputError, match="GPUs"):
        plan(cluster(False, 8.0, 2.0, 0.0), 3)


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_builds_a_sharded_collection(cluster, tmp_path):
    from typer.testing import CliRunner

    from lsr.cli import app

    beir = tmp_path / "beir"  # a BEIR directory with a gzipped corpus
    beir.mkdir()
    plain = _write_corpus(tmp_path / "corpus.jsonl", 5, skip=50)
    with gzip.open(beir / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(plain.read_text(encoding="utf-8"))
    out = tmp_path / "out"
    args = ["index", "build", "--corpus", beir, "--model", MODEL, "-o", out]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--shards", "1", "--ray", "local"]])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("built 5 docs into 1 shards")
    assert read_layout(out)["shards"] == 1
    with Collection.open(shard_dir(out, 0)) as collection:
        assert len(collection) == 5
        stored = collection.get(list(load_corpus(plain)))
    assert {i: text for i, (text, _) in stored.items()} == load_corpus(plain)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shards", "0"], "shards must be an integer from 1 to 1024"),
        (["--shards", "2", "--doc-stride", "32"], "--doc-stride cannot be used with --shards"),
        (["--ray", "local", "--overwrite"], "--overwrite cannot be used"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, extra, message):
    from typer.testing import CliRunner

    from lsr.cli import app

    corpus_path = _write_corpus(tmp_path / "corpus.jsonl", 2)
    args = ["index", "build", "--corpus", corpus_path, "--model", MODEL, "-o", tmp_path / "out"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, *extra]])
    assert result.exit_code == 2
    try:
        err = result.stderr
    except ValueError:
        err = result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "out").exists()


def test_cli_without_a_corpus_is_refused(tmp_path):
    from typer.testing import CliRunner

    from lsr.cli import app

    vectors = tmp_path / "v.jsonl"
    vectors.write_text(json.dumps({"id": "a", "vector": {"x": 1.0}}) + "\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["index", "build", str(vectors), "-o", str(out), "--shards=2"])
    assert result.exit_code == 2 and "--corpus" in result.output
    assert not out.exists()
