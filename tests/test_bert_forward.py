"""The query side without transformers (lean backbone: ``tokenizers`` + a plain-torch BERT) gives
the transformers query side's vectors bit for bit, and anything it might not reproduce falls back.

Evidence: token ids on every SciFact query, hundreds of documents and awkward strings; logits of
splade-tiny (BERT, legacy LayerNorm names), a random DistilBERT and a random untied BERT, alone
and in padded batches; SPLADE vectors of all 1,109 queries at the query length and truncated;
and a search process that never imports transformers returns the parent's hits exactly.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr.corpus import iter_corpus, load_queries
from lsr.encoders.backbone import Backbone, load_backbone, load_lean_backbone
from lsr.encoders.bert_forward import PlainMlm
from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.encoders.sides import load_transformer_sides
from lsr.encoders.splade_side import SpladeSide
from tests.conftest import SCIFACT_BEIR, SPLADE_TINY

AWKWARD = [
    "", " ", "a", "Ünïcödé façade naïve café", "中文字符 and 日本語", "[SEP] typed [CLS] in [MASK]",
    "[mask] [sep] lower-cased", "tabs\tand\nnewlines\r\n", "zero\u200bwidth \u00a0nbsp",
    "x" * 150, "supercalifragilisticexpialidocious" * 4, "emoji 🧬🦠 and symbols ±≤≥",
    "IL-6/STAT3 β-catenin p<0.05 (n=1,234)", "\x00control\x07chars",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return list(load_queries(SCIFACT_BEIR).values())


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return [text for _, text in itertools.islice(iter_corpus(SCIFACT_BEIR), 300)]


@pytest.fixture(scope="module")
def backbones() -> tuple[Backbone, Backbone]:
    lean = load_lean_backbone(str(SPLADE_TINY), device="cpu")
    assert lean is not None and isinstance(lean.model, PlainMlm)
    return lean, load_backbone(str(SPLADE_TINY), device="cpu")


def _copy(model: Path, target: Path) -> Path:
    """A model directory copy whose JSON files a test may edit (weights are linked)."""
    target.mkdir()
    for path in model.iterdir():
        if path.suffix == ".json":
            shutil.copy(path, target / path.name)
        else:
            (target / path.name).symlink_to(path.resolve())
    return target


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(changes)
    path.write_text(json.dumps(data))


def _random_mlm(target: Path, kind: str, **config) -> Path:
    """A small random BERT-vocabulary MLM saved by transformers, with splade-tiny's tokenizer."""
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    if kind == "distilbert":
        shape = {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 96}
        model = DistilBertForMaskedLM(DistilBertConfig(**shape, **config))
    else:
        shape = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4}
        shape |= {"intermediate_size": 96, "layer_norm_eps": 1e-7}
        model = BertForMaskedLM(BertConfig(**shape, **config))
    with torch.no_grad():  # no zero biases or unit norms: every weight matters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SPLADE_TINY / name, target / name)
    if kind == "distilbert":
        _edit(target / "tokenizer_config.json", tokenizer_class="DistilBertTokenizer")
    return target


def _same_logits(model_dir: Path, texts: list[str]) -> None:
    from transformers import AutoModelForMaskedLM

    lean = load_lean_backbone(str(model_dir), device="cpu")
    assert lean is not None
    reference = AutoModelForMaskedLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows = [lean.prefix + ids + lean.suffix for ids in lean.token_ids(texts)]
    with torch.inference_mode():
        for ids in rows:  # alone, as the invariant path runs them
            x = torch.tensor([ids])
            want = reference(input_ids=x, attention_mask=torch.ones_like(x)).logits
            assert torch.equal(
                lean.model(input_ids=x, attention_mask=torch.ones_like(x)).logits, want
            )
        width = max(map(len, rows))  # and right-padded in one batch
        x = torch.tensor([ids + [lean.pad_id] * (width - len(ids)) for ids in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in rows])
        want = reference(input_ids=x, attention_mask=mask).logits
        assert torch.equal(lean.model(input_ids=x, attention_mask=mask).logits, want)


def _csr_equal(a, b) -> None:
    a.sort_indices()
    b.sort_indices()
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data.view(np.uint32), b.data.view(np.uint32))  # bits, not values


# -- tokenization ------------------------------------------------------------------------------
def test_tokenizer_json_tokenizes_as_transformers(backbones, queries, documents):
    lean, full = backbones
    assert (lean.prefix, lean.suffix, lean.pad_id) == (full.prefix, full.suffix, full.pad_id)
    assert lean.special_ids == full.special_ids
    assert lean.vocab == full.vocab and lean.max_positions == full.max_positions
    texts = queries + documents + AWKWARD
    assert len(queries) == 1109
    assert lean.token_ids(texts) == full.token_ids(texts)


# -- the forward pass --------------------------------------------------------------------------
def test_splade_tiny_logits_are_bit_identical(queries):
    _same_logits(SPLADE_TINY, queries[:40] + AWKWARD)


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("distilbert", {}),
        ("distilbert", {"tie_word_embeddings": False}),
        ("bert", {"tie_word_embeddings": False}),
        ("bert", {}),
    ],
)
def test_random_models_logits_are_bit_identical(tmp_path, queries, kind, config):
    _same_logits(_random_mlm(tmp_path / kind, kind, **config), queries[:40] + AWKWARD)


@pytest.mark.parametrize(
    ("max_length", "batching"), [(64, "invariant"), (12, "invariant"), (64, "padded")]
)
def test_query_vectors_are_bit_identical(backbones, queries, max_length, batching):
    lean, full = backbones
    config = SideConfig(max_length=max_length, batching=batching)
    ours, theirs = SpladeSide(lean, config), SpladeSide(full, config)
    assert ours.projection == theirs.projection
    texts = queries + AWKWARD
    _csr_equal(ours.encode(texts).matrix, theirs.encode(texts).matrix)
    assert ours.stats.truncated == theirs.stats.truncated
    assert ours.stats.truncated > 0 or max_length > 12  # max_length truncates at 12
    for text in texts[:50]:
        a, b = ours.encode_one(text), theirs.encode_one(text)
        assert np.array_equal(a.terms, b.terms) and np.array_equal(a.weights, b.weights)


def test_bfloat16_query_vectors_are_bit_identical(queries):
    lean = load_lean_backbone(str(SPLADE_TINY), device="cpu", dtype="bfloat16")
    full = load_backbone(str(SPLADE_TINY), device="cpu", dtype="bfloat16")
    assert lean is not None and lean.dtype == full.dtype == torch.bfloat16
    config = SideConfig(max_length=64)
    texts = queries[:200] + AWKWARD
    _csr_equal(
        SpladeSide(lean, config).encode(texts).matrix, SpladeSide(full, config).encode(texts).matrix
    )


def test_random_distilbert_query_vectors_are_bit_identical(tmp_path, queries):
    model = _random_mlm(tmp_path / "distilbert", "distilbert")
    config = EncoderConfig(model=str(model), query=SideConfig(max_length=24), device="cpu")
    lean, _ = load_transformer_sides(config, document=False)
    full, _ = load_transformer_sides(config)  # the document side loads with transformers
    assert isinstance(lean.backbone.model, PlainMlm)
    assert not isinstance(full.backbone.model, PlainMlm)
    texts = queries[:300] + AWKWARD
    _csr_equal(lean.encode(texts).matrix, full.encode(texts).matrix)


# -- what falls back ---------------------------------------------------------------------------
FALLBACKS = {
    "gelu_new": ("config.json", {"hidden_act": "gelu_new"}),
    "relative positions": ("config.json", {"position_embedding_type": "relative_key"}),
    "decoder": ("config.json", {"is_decoder": True}),
    "roberta": ("config.json", {"model_type": "roberta"}),
    "eager attention": ("config.json", {"attn_implementation": "eager"}),
    "chunked ffn": ("config.json", {"chunk_size_feed_forward": 4}),
    "cased config": ("tokenizer_config.json", {"do_lower_case": False}),
    "accents": ("tokenizer_config.json", {"strip_accents": True}),
    "other tokenizer": ("tokenizer_config.json", {"tokenizer_class": "RobertaTokenizer"}),
    "extra specials": ("tokenizer_config.json", {"additional_special_tokens": ["[unused0]"]}),
    "bos": ("tokenizer_config.json", {"bos_token": "[unused1]"}),
    "renamed mask": ("special_tokens_map.json", {"mask_token": "[unused2]"}),
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_unusual_settings_fall_back_to_transformers(tmp_path, case):
    model = _copy(SPLADE_TINY, tmp_path / "model")
    assert load_lean_backbone(str(model), device="cpu") is not None  # the copy itself is lean
    name, changes = FALLBACKS[case]
    _edit(model / name, **changes)
    assert load_lean_backbone(str(model), device="cpu") is None


@pytest.mark.parametrize("missing", ["tokenizer.json", "model.safetensors", "config.json"])
def test_missing_files_fall_back(tmp_path, missing):
    model = _copy(SPLADE_TINY, tmp_path / "model")
    (model / missing).unlink()
    assert load_lean_backbone(str(model), device="cpu") is None


def test_misshapen_or_ambiguous_weights_fall_back(tmp_path):
    from safetensors.torch import load_file, save_file

    model = _copy(SPLADE_TINY, tmp_path / "model")
    weights = load_file(SPLADE_TINY / "model.safetensors")
    (model / "model.safetensors").unlink()
    both = {
        **weights,
        "bert.embeddings.LayerNorm.weight": weights["bert.embeddings.LayerNorm.gamma"].clone(),
    }
    save_file(both, model / "model.safetensors")  # stored under the old and the new name
    assert load_lean_backbone(str(model), device="cpu") is None
    untied = {**weights, "cls.predictions.decoder.weight": weights[
        "bert.embeddings.word_embeddings.weight"] * 2}  # fmt: skip
    save_file(untied, model / "model.safetensors")
    assert load_lean_backbone(str(model), device="cpu") is None
    _edit(model / "config.json", num_hidden_layers=3)
    save_file(weights, model / "model.safetensors")
    assert load_lean_backbone(str(model), device="cpu") is None


def test_only_a_lone_mlm_query_side_is_lean():
    config = EncoderConfig(model=str(SPLADE_TINY), device="cpu")
    query, _ = load_transformer_sides(config, document=False)
    assert isinstance(query.backbone.model, PlainMlm)
    query, document = load_transformer_sides(config)
    assert not isinstance(query.backbone.model, PlainMlm) and query.backbone is document.backbone
    echo = config.model_copy(update={"echo": True})
    query, _ = load_transformer_sides(echo, document=False)
    assert not isinstance(query.backbone.model, PlainMlm)


# -- a search process --------------------------------------------------------------------------
SEARCH = """
import json, sys
from lsr.retrieval import Retriever
retriever = Retriever.open(sys.argv[1])
hits = [[(h.doc_id, h.score) for h in retriever.search(q, 10)] for q in json.loads(sys.argv[2])]
print(json.dumps({"hits": hits, "transformers": "transformers" in sys.modules}))
"""


def test_search_process_never_imports_transformers(beir_slice, tmp_path, monkeypatch):
    from lsr.encoders import sides
    from lsr.ingest import index_corpus
    from lsr.retrieval import Retriever

    config = EncoderConfig(
        model=str(SPLADE_TINY), query=SideConfig(max_length=32), document=SideConfig(max_length=64)
    )
    index = tmp_path / "siamese"
    index_corpus(beir_slice / "corpus.jsonl.gz", index, config)
    texts = [*load_queries(beir_slice).values(), "vitamin D and cancer", "[SEP]", ""]
    done = subprocess.run(
        [sys.executable, "-c", SEARCH, str(index), json.dumps(texts)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert child["transformers"] is False
    monkeypatch.setattr(sides, "load_lean_backbone", lambda *args, **kwargs: None)
    retriever = Retriever.open(index)  # the transformers query side, here
    assert not isinstance(retriever.query_encoder.backbone.model, PlainMlm)
    expected = [[[h.doc_id, h.score] for h in retriever.search(q, 10)] for q in texts]
    assert child["hits"] == expected
    assert sum(map(len, expected)) > 10
