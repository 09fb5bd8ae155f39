"""The trainer and ``lsr train`` (issue #8) on a tiny random BERT-MLM and a SciFact slice.

The student is a 1-layer, 32-wide BertForMaskedLM built from a BertConfig with splade-tiny's
tokenizer, so that a few optimizer steps take seconds; the data is 10 SciFact train queries, the
documents they judge and 20 others.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import SCIFACT_BEIR, save_tiny_bert_mlm, write_beir_slice

pytest.importorskip("sentence_transformers")
pytest.importorskip("bm25s")
pytestmark = pytest.mark.skipif(not SCIFACT_BEIR.is_dir(), reason="needs the shared SciFact data")

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of fractures.",
    "The protein kinase regulates cell division in yeast.",
    "A short one.",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_bert_mlm(tmp_path_factory.mktemp("tiny-bert"), hidden_size=32)


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_beir_slice(tmp_path_factory.mktemp("beir-train"), n_test=0, n_train=10, n_extra=20)


def base_config(model: Path, beir: Path, out: Path, **sections) -> dict:
    config = {
        "student": {"model": str(model), "document_max_length": 48},
        "data": {"beir": str(beir), "negatives": 1},
        "loss": {"name": "infonce"},
        "sparsity": {"regularizer": "flops", "lambda_d": 1e-3},
        "train": {"output_dir": str(out), "batch_size": 4, "max_steps": 3, "precision": "fp32"},
    }
    for section, values in sections.items():
        config[section] = {**config[section], **values}
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(*args: str):
    from lsr.cli import app

    return CliRunner().invoke(app, ["train", *args])


def st_vs_lsr_documents(model_dir: Path) -> float:
    """Largest |difference| between sentence-transformers' and lsr's document vectors.

    lsr removes the special tokens' columns ([CLS], [SEP], [UNK], [MASK]) from document vectors
    (its documented convention); a trained SPLADE never activates them, but a random student
    does, so they are compared separately: lsr's are 0, every other column must agree.
    """
    from sentence_transformers import SparseEncoder

    from lsr.encoders import load_encoder
    from lsr.encoders.tokenizer import load_tokenizer, special_token_ids

    st = SparseEncoder(str(model_dir), device="cpu")
    ours = load_encoder(str(model_dir))
    a = st.encode_document(TEXTS, convert_to_tensor=True).to_dense().float().numpy()
    b = ours.encode_document(TEXTS).matrix.toarray()
    assert a.shape == b.shape
    tok = next(model_dir.rglob("tokenizer.json"))
    special = np.asarray(sorted(special_token_ids(load_tokenizer(tok))), dtype=np.int64)
    assert not b[:, special].any()
    a[:, special] = 0
    return float(np.abs(a - b).max())


def test_cli_siamese_three_steps(tiny_model, beir, tmp_path):
    out = tmp_path / "run"
    config = base_config(tiny_model, beir, out, sparsity={"lambda_q": 1e-3})
    result = run_cli(str(write_config(tmp_path / "c.yaml", config)), "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert not result.stdout.strip()  # stdout stays clean (for --json); messages are on stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("trained 3 steps") and "model:" in summary
    model_dir = out / "model"
    assert (model_dir / "modules.json").is_file() and (model_dir / "README.md").is_file()
    assert not (model_dir / "idf.json").exists()
    assert st_vs_lsr_documents(model_dir) <= 1e-5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if not r.get("eval")]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[0]["lambda_d"] == 0.0 and steps[-1]["lambda_d"] == pytest.approx(1e-3)
    assert {"base_loss", "document_regularizer_loss", "query_regularizer_loss"} <= set(steps[-1])
    # exact unweighted regulariser values (the weighted parts are rounded by the trainer)
    assert all(r["document_regularizer_value"] > 0 for r in steps)
    assert all(r["query_regularizer_value"] > 0 for r in steps)
    # the trained weights differ from the base model's
    from safetensors.numpy import load_file

    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(model_dir / "model.safetensors"))
    key = next(k for k in after if k.endswith("word_embeddings.weight"))
    assert not np.array_equal(before[key], after[key])


def test_cli_inference_free_learned_idf_with_dev_eval(tiny_model, beir, tmp_path):
    from sentence_transformers import SparseEncoder

    from lsr.corpus import load_corpus
    from lsr.encoders import load_encoder
    from lsr.encoders.idf_table import IdfTable
    from lsr.vocab import Vocabulary

    out = tmp_path / "run"
    config = base_config(
        tiny_model,
        beir,
        out,
        student={"learn_idf": True, "idf_lr": 0.05},
        sparsity={"reading_a": True},
        data={"dev_queries": 3, "dev_depth": 10},
        train={"eval_steps": 2, "max_steps": 3},
    )
    path = write_config(tmp_path / "c.yaml", config)
    result = run_cli(str(path))
    assert result.exit_code == 0, result.output
    model_dir = out / "model"
    assert (model_dir / "idf.json").is_file()
    assert st_vs_lsr_documents(model_dir) <= 1e-5
    encoder = load_encoder(str(model_dir))
    assert encoder.config.inference_free
    # queries: ST's SparseStaticEmbedding route and lsr's IdfQueryEncoder agree
    st = SparseEncoder(str(model_dir), device="cpu")
    a = st.encode_query(TEXTS, convert_to_tensor=True).to_dense().float().numpy()
    b = encoder.encode_query(TEXTS).matrix.toarray()
    assert np.abs(a - b).max() <= 1e-6
    # the learned IDF moved, stayed >= 0, and idf.json is what the model holds
    idf = IdfTable.load(model_dir / "idf.json", Vocabulary.load(tiny_model))
    computed = IdfTable.compute(
        load_corpus(beir).values(), tiny_model / "tokenizer.json", max_length=48
    )
    assert idf.weights.min() >= 0
    # moved by Adam steps of the IDF's own learning rate (0.05), not of train.lr (2e-5)
    assert np.abs(idf.weights - computed.weights).max() > 0.02
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("eval")]
    assert [r["step"] for r in evals] == [2, 3]  # every 2 steps, and at the end
    assert {"dev_ndcg_cut_10", "doc_nnz", "flops"} <= set(evals[0])
    assert json.loads((out / "result.json").read_text())["best_step"] in (2, 3)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": {"gradient_accumulation_steps": 2}}, "gradient_accumulation_steps must be 1"),
        ({"loss": {"name": "kl", "teachers": "x"}}, "explicit loss.temperature"),
        ({"loss": {"bogus": 1}}, "loss.bogus: Extra inputs are not permitted"),
        ({"sparsity": {"reading_a": True, "regularizer": "l1"}}, "reading_a uses plain FLOPS"),
        ({"student": {"model": "/nonexistent/model"}}, "student.model: not a directory"),
        ({"data": {"mining": "none"}}, "set data.negatives 0"),
        ({"student": {"query_weights": "binary"}}, "binary needs query_mode inference-free"),
        (
            {
                "student": {
                    "query_weights": "binary",
                    "query_mode": "inference-free",
                    "learn_idf": True,
                }
            },
            "binary is fixed",
        ),
        (
            {"student": {"query_weights": "binary"}, "sparsity": {"reading_a": True}},
            "query_weights binary conflicts",
        ),
    ],
)
def test_config_errors_are_one_line(tiny_model, beir, tmp_path, change, expected):
    config = base_config(tiny_model, beir, tmp_path / "run", **change)
    result = run_cli(str(write_config(tmp_path / "c.yaml", config)))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "run").exists()  # nothing ran


def test_set_overrides_and_check(tiny_model, beir, tmp_path):
    config = base_config(tiny_model, beir, tmp_path / "run")
    path = write_config(tmp_path / "c.yaml", config)
    assert run_cli(str(path), "--check").exit_code == 0
    bad = run_cli(str(path), "--check", "--set", "loss.name=nope")
    assert bad.exit_code == 2 and "loss.name" in bad.output
    assert run_cli(str(path), "--check", "--set", "oops").exit_code == 2
    from lsr.train.config import load_config

    cfg = load_config(path, ["loss.name=kl", "loss.temperature=1.0", "loss.teachers=t"])
    assert cfg.loss.name == "kl" and cfg.loss.temperature == 1.0


def test_mining_excludes_positives_and_is_deterministic(beir):
    from lsr.corpus import load_beir
    from lsr.train.mining import mine_bm25_negatives

    data = load_beir(beir, "train")
    qrels = data.qrels
    mined = mine_bm25_negatives(data.corpus, data.queries, qrels, 3, depth=20, seed=7)
    for qid, negs in mined.negatives.items():
        assert len(negs) == 3 == len(set(negs))
        assert not set(negs) & set(qrels[qid])
        assert set(negs) <= set(data.corpus)
    again = mine_bm25_negatives(data.corpus, data.queries, qrels, 3, depth=20, seed=7)
    assert again.negatives == mined.negatives
    # a query's negatives do not depend on which other queries are mined
    first = next(iter(data.queries))
    alone = mine_bm25_negatives(
        data.corpus, {first: data.queries[first]}, qrels, 3, depth=20, seed=7
    )
    assert alone.negatives[first] == mined.negatives[first]
    other = mine_bm25_negatives(data.corpus, data.queries, qrels, 3, depth=20, seed=8)
    assert other.negatives != mined.negatives


def test_dataset_columns_with_teacher_labels(tiny_model, beir, tmp_path):
    from lsr.corpus import load_beir
    from lsr.train.config import load_config
    from lsr.train.data import build_training_data
    from lsr.train.teachers import TeacherScores

    data = load_beir(beir, "train")
    docs = sorted(data.corpus)
    rng = np.random.default_rng(0)
    raw = {"t": {q: {d: float(rng.random()) for d in docs} for q in data.queries}}
    scores = TeacherScores.build(raw)
    scores.save(tmp_path / "teachers")
    config = base_config(
        tiny_model,
        beir,
        tmp_path / "run",
        loss={"name": "kl", "temperature": 1.0, "teachers": str(tmp_path / "teachers")},
        data={"negatives": 2},
    )
    cfg = load_config(data=config)
    built = build_training_data(cfg, TeacherScores.load(tmp_path / "teachers"))
    ds = built.dataset
    assert ds.column_names == ["query", "positive", "negative_1", "negative_2", "label"]
    assert all(len(label) == 3 for label in ds["label"])
    text_to_id = {text: d for d, text in data.corpus.items()}
    query_to_id = {text: q for q, text in data.queries.items()}
    row = ds[0]
    qid = query_to_id[row["query"]]
    ids = [text_to_id[row[c]] for c in ("positive", "negative_1", "negative_2")]
    assert row["label"] == pytest.approx(scores.labels(qid, ids))
    assert not set(ids[1:]) & set(data.qrels[qid])


@pytest.fixture(scope="module")
def teachers(beir, tmp_path_factory) -> Path:
    from lsr.corpus import load_beir
    from lsr.train.teachers import TeacherScores

    data = load_beir(beir, "train")
    rng = np.random.default_rng(1)
    raw = {
        name: {q: {d: float(rng.random()) for d in sorted(data.corpus)} for q in data.queries}
        for name in ("a", "b")
    }
    return TeacherScores.build(raw).save(tmp_path_factory.mktemp("teachers"))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            {"loss": {"name": "kl", "temperature": 1.0}, "train": {"mini_batch_size": 2}},
            id="kl-cached",
        ),
        pytest.param(
            {
                "loss": {"name": "marginmse"},
                "data": {"negatives": 2},
                "sparsity": {"reading_a": True},
            },
            id="marginmse-inference-free",
        ),
        pytest.param(
            {
                "loss": {"in_batch_negatives": False},
                "sparsity": {"regularizer": "idf_flops", "per_slot": True, "threshold": 5},
            },
            id="infonce-own-candidates-idf-flops",
        ),
        pytest.param(
            {
                "student": {"query_mode": "inference-free"},
                "sparsity": {"regularizer": "l1", "warmup_steps": 1},
                "train": {"fast_head": False},
            },
            id="inference-free-l1-stock-head",
        ),
    ],
)
def test_loss_and_regularizer_variants(tiny_model, beir, teachers, tmp_path, change):
    from lsr.train.config import load_config
    from lsr.train.trainer import train

    if change.get("loss", {}).get("name") in ("kl", "marginmse"):
        change["loss"]["teachers"] = str(teachers)
    config = load_config(data=base_config(tiny_model, beir, tmp_path / "run", **change))
    result = train(config)
    assert result.steps == 3 and result.final_loss is not None
    assert np.isfinite(result.final_loss)
    assert st_vs_lsr_documents(Path(result.model_dir)) <= 1e-5


def test_resume_equals_uninterrupted(tiny_model, beir, tmp_path):
    """Resuming from a mid-epoch checkpoint gives the same weights, bit for bit (fp32, CPU):
    the trainer checkpoint holds optimizer, scheduler and RNG states and the sampler skips the
    batches already seen."""
    from safetensors.numpy import load_file

    from lsr.train.config import load_config
    from lsr.train.trainer import train

    def config(out: Path, **extra):
        train_ = {"max_steps": 4, "save_steps": 2, "save_total_limit": 3, **extra}
        return load_config(data=base_config(tiny_model, beir, out, train=train_))

    whole = train(config(tmp_path / "a"))
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "checkpoint-2",
        tmp_path / "b" / "checkpoints" / "checkpoint-2",
    )
    resumed = train(config(tmp_path / "b", resume_from_checkpoint="latest"))
    assert resumed.steps == whole.steps == 4
    a = load_file(str(Path(whole.model_dir) / "model.safetensors"))
    b = load_file(str(Path(resumed.model_dir) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_binary_query_weights(tiny_model, beir, tmp_path):
    """Binary inference-free queries: every non-special token weighs 1 (fixed), in the trainer,
    in idf.json and in lsr's and sentence-transformers' query vectors."""
    from sentence_transformers import SparseEncoder

    from lsr.encoders import load_encoder
    from lsr.encoders.tokenizer import load_tokenizer, special_token_ids
    from lsr.train.config import load_config
    from lsr.train.trainer import train

    change = {"student": {"query_mode": "inference-free", "query_weights": "binary"}}
    result = train(load_config(data=base_config(tiny_model, beir, tmp_path / "run", **change)))
    model_dir = Path(result.model_dir)
    weights = json.loads((model_dir / "idf.json").read_text())  # {token: weight}, non-zero only
    special = {int(i) for i in special_token_ids(load_tokenizer(tiny_model / "tokenizer.json"))}
    vocab = json.loads((tiny_model / "tokenizer.json").read_text())["model"]["vocab"]
    assert set(weights.values()) == {1.0}
    assert {vocab[t] for t in weights} == set(vocab.values()) - special
    q = load_encoder(str(model_dir)).encode_query(TEXTS).matrix
    assert q.nnz > 0 and set(q.data.tolist()) == {1.0}
    st = SparseEncoder(str(model_dir), device="cpu")
    a = st.encode_query(TEXTS, convert_to_tensor=True).to_dense().float().numpy()
    np.testing.assert_array_equal(a, q.toarray())


@pytest.mark.parametrize("final_model", ["best", "last"])
def test_final_model_best_or_last(tiny_model, beir, tmp_path, final_model):
    """With dev evaluation the saved model is the best evaluated one (its dev metrics, measured
    again on the saved files, equal the logged ones) or the last; a metrics plot is drawn."""
    from lsr.train.config import load_config
    from lsr.train.data import build_training_data
    from lsr.train.trainer import evaluate_artifact, train

    config = load_config(
        data=base_config(
            tiny_model,
            beir,
            tmp_path / "run",
            data={"dev_queries": 3, "dev_depth": 10},
            train={"eval_steps": 1, "max_steps": 4, "lr": 5e-3, "final_model": final_model},
        )
    )
    result = train(config)
    out = tmp_path / "run"
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if r.get("eval")}
    assert sorted(evals) == [1, 2, 3, 4]
    best = max(evals, key=lambda s: (evals[s]["dev_ndcg_cut_10"], -s))
    assert result.best_step == best
    expected_step = best if final_model == "best" else 4
    assert result.model_step == expected_step
    again = evaluate_artifact(Path(result.model_dir), build_training_data(config))
    assert again["dev_ndcg_cut_10"] == pytest.approx(evals[expected_step]["dev_ndcg_cut_10"])
    assert again["doc_nnz"] == pytest.approx(evals[expected_step]["doc_nnz"])
    assert not (out / "best-model").exists() and not (out / "dev-model").exists()
    assert (out / "metrics.png").stat().st_size > 1000


def test_teacher_precompute_cli(tiny_model, beir, tmp_path):
    """``lsr teachers``: candidate lists are positives + BM25 top depth, every teacher's raw
    score equals its own dot product, labels are the min-max ensemble; bad input is one line."""
    from lsr.cli import app
    from lsr.corpus import load_beir
    from lsr.encoders import load_encoder
    from lsr.train.teachers import TeacherScores, ensemble

    out = tmp_path / "scores"
    args = [
        "teachers",
        "--beir",
        str(beir),
        "--out",
        str(out),
        "--depth",
        "9",
        "--max-length",
        "64",
    ]
    teachers = ["--teacher", f"a=sparse:{tiny_model}", "--teacher", "b=sparse:" + str(tiny_model)]
    result = CliRunner().invoke(app, [*args, *teachers, "--weight", "a=3", "--weight", "b=1"])
    assert result.exit_code == 0, result.output
    scores = TeacherScores.load(out)
    data = load_beir(beir, "train")
    assert set(scores.queries) == set(data.qrels)
    encoder = load_encoder(str(tiny_model), query={"max_length": 64}, document={"max_length": 64})
    for qid, q in list(scores.queries.items())[:3]:
        positives = sorted(d for d, g in data.qrels[qid].items() if g > 0)
        assert q.docs[: len(positives)] == positives
        assert len(q.docs) == len(set(q.docs)) == len(positives) + 9
        qv = encoder.encode_query([data.queries[qid]]).matrix
        dv = encoder.encode_document([data.corpus[d] for d in q.docs]).matrix
        np.testing.assert_allclose(q.raw["a"], (dv @ qv.T).toarray().ravel(), rtol=1e-5)
        np.testing.assert_allclose(q.labels, ensemble(q.raw, {"a": 3, "b": 1}))
    again = CliRunner().invoke(app, [*args, *teachers])
    assert again.exit_code == 2 and "not empty" in again.output
    for bad, expected in (
        (["--teacher", "a=sparse"], "NAME=KIND:MODEL"),
        (["--teacher", "a=cross:x"], "kind must be one of"),
        (["--teacher", "a=sparse:/nonexistent"], "not found"),
    ):
        res = CliRunner().invoke(
            app, ["teachers", "--beir", str(beir), "--out", str(tmp_path / "x"), *bad]
        )
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and expected in lines[0], res.output
