"""load_encoder on plain checkpoints and sentence-transformers SparseEncoder directories;
load_query_encoder from an index directory; encoder_manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import SPLADE_TINY

from lsr.encoders import (
    EncoderConfig,
    IdfQueryEncoder,
    IdfTable,
    SideConfig,
    encoder_manifest,
    load_encoder,
    load_query_encoder,
)
from lsr.encoders.loading import compute_idf
from lsr.encoders.st_layout import read_sentence_transformers
from lsr.errors import InputError

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")

TEXTS = [
    "Protein folding is a hard problem.",
    "The quick brown fox jumps over the lazy dog!",
    "BRCA1 mutations increase the risk of breast cancer in women",
    "x",
]
CORPUS = [
    "the cat sat on the mat",
    "proteins fold into structures",
    "breast cancer risk and BRCA1",
    "a quick brown fox",
]


def _special_cols(encoder) -> np.ndarray:
    return np.asarray(encoder.document.backbone.special_ids)


def _st_vectors(model, texts, task: str) -> np.ndarray:
    encode = model.encode_query if task == "query" else model.encode_document
    out = encode(texts, convert_to_tensor=True, convert_to_sparse_tensor=False)
    return out.cpu().numpy()


@pytest.fixture(scope="module")
def st_dirs(tmp_path_factory) -> dict[str, object]:
    """(a) MLMTransformer + SpladePooling; (b) Router: SparseStaticEmbedding | MLM + pooling."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        Router,
        SparseStaticEmbedding,
        SpladePooling,
    )

    root = tmp_path_factory.mktemp("st")
    plain = SparseEncoder(modules=[MLMTransformer(str(SPLADE_TINY)), SpladePooling("max")])
    plain.save(str(root / "a"))

    table = IdfTable.compute(CORPUS, SPLADE_TINY)
    table.save(root / "corpus-idf.json")
    doc = MLMTransformer(str(SPLADE_TINY))
    static = SparseStaticEmbedding.from_json(
        str(root / "corpus-idf.json"), tokenizer=doc.tokenizer, frozen=True
    )
    router = Router.for_query_document(
        query_modules=[static], document_modules=[doc, SpladePooling("max")]
    )
    free = SparseEncoder(modules=[router], similarity_fn_name="dot")
    free.save(str(root / "b"))
    return {"a": root / "a", "b": root / "b", "table": table, "plain": plain, "free": free}


# -- sentence-transformers directories -----------------------------------------------------------
# sentence-transformers encodes these texts as one padded batch; lsr encodes each text alone
# (batch-invariant). sentence-transformers' own weights move by up to 2.3e-6 between its batch and
# a text alone, and both are within 2.1e-6 of a float64 forward pass: allow that much.
ST_BATCH_ATOL = 5e-6


def test_st_plain_directory_matches_sentence_transformers(st_dirs) -> None:
    encoder = load_encoder(st_dirs["a"])
    cfg = encoder.config
    assert cfg.query_mode == "siamese" and cfg.model == str(st_dirs["a"])
    assert cfg.document.pooling == "max" and cfg.document.max_length == 512
    assert cfg.query.max_length == 512
    specials = _special_cols(encoder)
    for task in ("query", "document"):
        ours = (encoder.encode_query if task == "query" else encoder.encode_document)(TEXTS)
        theirs = _st_vectors(st_dirs["plain"], TEXTS, task)
        theirs[:, specials] = 0  # our mlm sides zero the special-token columns
        np.testing.assert_allclose(ours.matrix.toarray(), theirs, rtol=1e-5, atol=ST_BATCH_ATOL)


def test_st_inference_free_directory_matches_sentence_transformers(st_dirs) -> None:
    encoder = load_encoder(st_dirs["b"])
    cfg = encoder.config
    assert cfg.query_mode == "inference-free" and cfg.query.family == "idf"
    assert cfg.model == str(st_dirs["b"] / "document_0_MLMTransformer")
    assert cfg.idf is not None and cfg.idf.endswith("model.safetensors")
    assert cfg.query.max_length == 514  # 512 word pieces, as ST keeps, + [CLS] and [SEP]
    assert isinstance(encoder.query, IdfQueryEncoder)
    np.testing.assert_array_equal(encoder.query.idf.weights, st_dirs["table"].weights)
    ours = encoder.encode_query(TEXTS).matrix.toarray()
    np.testing.assert_array_equal(ours, _st_vectors(st_dirs["free"], TEXTS, "query"))
    docs = encoder.encode_document(TEXTS).matrix.toarray()
    theirs = _st_vectors(st_dirs["free"], TEXTS, "document")
    theirs[:, _special_cols(encoder)] = 0
    np.testing.assert_allclose(docs, theirs, rtol=1e-5, atol=ST_BATCH_ATOL)


def test_overrides_win_over_the_directory(st_dirs) -> None:
    encoder = load_encoder(st_dirs["a"], document={"max_length": 128}, batch_size=4)
    assert encoder.config.document.max_length == 128 and encoder.config.document.pooling == "max"
    assert encoder.config.query.max_length == 512 and encoder.config.batch_size == 4
    config = EncoderConfig(model=str(st_dirs["a"]), query=SideConfig(max_length=32))
    assert load_encoder(config).config.query.max_length == 32
    with pytest.raises(InputError, match="unknown encoder settings: max_len"):
        load_encoder(st_dirs["a"], max_len=3)
    with pytest.raises(InputError, match="no query model"):
        load_encoder(st_dirs["b"], query_mode="siamese")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_unsupported_modules_are_named(st_dirs, tmp_path) -> None:
    model = _copy(st_dirs["a"], tmp_path / "normalize")
    modules = json.loads((model / "modules.json").read_text())
    modules.append(
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.base.modules.normalize.Normalize"}
    )  # fmt: skip
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InputError, match=r"unsupported sentence-transformers module .*Normalize"):
        load_encoder(model)

    model = _copy(st_dirs["a"], tmp_path / "custom")
    modules = json.loads((model / "modules.json").read_text())
    modules[1]["type"] = "my_package.MyPooling"
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InputError, match=r"my_package\.MyPooling"):
        read_sentence_transformers(model)

    model = _copy(st_dirs["a"], tmp_path / "log1p_relu")
    pooling = model / "1_SpladePooling" / "config.json"
    pooling.write_text(json.dumps({"pooling_strategy": "max", "activation_function": "log1p_relu"}))
    with pytest.raises(InputError, match="log1p_relu"):
        read_sentence_transformers(model)

    model = _copy(st_dirs["a"], tmp_path / "dense")
    (model / "sentence_bert_config.json").write_text(
        json.dumps({"transformer_task": "feature-extraction"})
    )
    with pytest.raises(InputError, match="feature-extraction"):
        read_sentence_transformers(model)

    model = _copy(st_dirs["a"], tmp_path / "prompts")
    (model / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": ""}})
    )
    with pytest.raises(InputError, match="prompts"):
        read_sentence_transformers(model)


def test_bad_paths(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_encoder(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="directory"):
        load_encoder(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no config\.json or modules\.json"):
        load_encoder(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "modules.json").write_text("{nope")
    with pytest.raises(InputError, match="cannot read JSON"):
        load_encoder(tmp_path / "broken")


# -- plain checkpoints, inference-free -----------------------------------------------------------
def test_inference_free_needs_idf_weights() -> None:
    config = EncoderConfig(model=str(SPLADE_TINY), query_mode="inference-free")
    with pytest.raises(InputError, match="needs IDF weights"):
        load_encoder(config)
    with pytest.raises(InputError, match="only used by inference-free"):
        load_encoder(str(SPLADE_TINY), idf_table=IdfTable.compute(CORPUS, SPLADE_TINY))


@pytest.fixture(scope="module")
def free_encoder():
    config = EncoderConfig(model=str(SPLADE_TINY), query_mode="inference-free")
    table = compute_idf(config, CORPUS)  # tokenizer only
    assert table.n_docs == len(CORPUS)
    return load_encoder(config, idf_table=table)


def test_inference_free_from_a_corpus_table(free_encoder, tmp_path) -> None:
    assert free_encoder.config.query.family == "idf"
    assert isinstance(free_encoder.query, IdfQueryEncoder)
    (vector,) = free_encoder.encode_query(["cat proteins"]).to_dicts()
    table = free_encoder.query.idf
    assert vector == {"cat": table["cat"], "proteins": table["proteins"]}
    free_encoder.query.save(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (
        SPLADE_TINY / "tokenizer.json"
    ).read_bytes()
    config = free_encoder.config.model_copy(update={"idf": str(tmp_path / "idf.json")})
    again = load_encoder(config)
    np.testing.assert_array_equal(again.query.idf.weights, table.weights)


# -- manifests and query-time loading ------------------------------------------------------------
def test_encoder_manifest_shape(free_encoder) -> None:
    manifest = encoder_manifest(free_encoder)
    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["format"] == "lsr.encoder/1"
    assert EncoderConfig.model_validate(manifest["config"]) == free_encoder.config
    assert manifest["model"]["local"] == str(SPLADE_TINY.resolve())
    assert manifest["model"]["hub_id"] is None and manifest["model"]["format"] == "transformers"
    weights = SPLADE_TINY / "model.safetensors"
    assert manifest["model"]["files"]["model.safetensors"] == {
        "bytes": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert manifest["vocab"] == {"size": 30522, "sha256": free_encoder.vocab.sha256}
    assert manifest["sides"]["query"]["encoder"] == "IdfQueryEncoder"
    assert manifest["sides"]["document"]["family"] == "mlm"
    assert manifest["idf"]["n_docs"] == len(CORPUS)
    assert manifest["files"] == {"tokenizer": "tokenizer.json", "idf": "idf.json"}


def test_load_query_encoder_inference_free_loads_no_model(free_encoder, tmp_path) -> None:
    free_encoder.query.save(tmp_path)
    manifest = encoder_manifest(free_encoder)
    (tmp_path / "encoder.json").write_text(json.dumps(manifest))
    expected = free_encoder.encode_query(TEXTS).to_dicts()
    script = f"""
import json, sys
from pathlib import Path
from lsr.encoders import load_query_encoder
index = Path({str(tmp_path)!r})
query = load_query_encoder(json.loads((index / "encoder.json").read_text()), index)
print(json.dumps(query.encode({TEXTS!r}).to_dicts()))
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
assert not heavy, heavy
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected

    # the index's files are checked against the manifest
    other = IdfTable.compute(["something else entirely"], SPLADE_TINY)
    other.save(tmp_path / "idf.json")
    with pytest.raises(InputError, match="does not match the IDF table"):
        load_query_encoder(manifest, tmp_path)
    (tmp_path / "idf.json").unlink()
    with pytest.raises(InputError, match="missing from the index"):
        load_query_encoder(manifest, tmp_path)


def test_load_query_encoder_siamese(st_dirs) -> None:
    encoder = load_encoder(st_dirs["a"])
    query = load_query_encoder(encoder_manifest(encoder), st_dirs["a"])
    assert type(query).__name__ == "SpladeSide"
    np.testing.assert_array_equal(
        query.encode(TEXTS).matrix.toarray(), encoder.encode_query(TEXTS).matrix.toarray()
    )
