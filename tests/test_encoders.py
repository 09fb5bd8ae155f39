"""Transformer encoder sides: SPLADE (mlm), mlp, binary, echo on decoder-only backbones.

Every vector is checked against a hand computation from the model's own logits / hidden states,
and splade-tiny against the reference vectors in ../shared (encoded outside the project).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr.encoders.backbone import load_backbone
from lsr.encoders.binary_side import BinarySide
from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.encoders.mlp_side import MLP_HEAD_FILE, MlpSide
from lsr.encoders.sides import load_transformer_sides
from lsr.encoders.splade_side import SpladeSide
from lsr.encoders.windows import window_spans
from lsr.errors import InputError
from lsr.sparse import read_jsonl
from tests.conftest import SHARED, SPLADE_TINY, VECTORS

CORPUS = SHARED / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
SPECIAL = [0, 100, 101, 102, 103]  # [PAD] [UNK] [CLS] [SEP] [MASK]
SHORT = [
    "protein folding in cancer cells",
    "a",
    "Vitamin D deficiency is associated with increased risk of fractures in older adults.",
    "",
    "the the the cell cell",
]


def scifact_docs(n: int) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            ids.append(doc["_id"])
            texts.append(doc["title"] + " " + doc["text"])
            if len(ids) == n:
                break
    return ids, texts


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and on a shared 2-core machine two OpenMP
    threads wait on each other whenever another process holds a core (tests ran 4x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splade_backbone():
    return load_backbone(str(SPLADE_TINY), device="cpu")


def splade_side(backbone, projection="auto", **side):
    side.setdefault("max_length", 256)
    return SpladeSide(backbone, SideConfig(**side), projection=projection)


def dense(batch) -> np.ndarray:
    return batch.matrix.toarray()


def hand_splade(model, sequences, lo_hi=None, pooling="max") -> np.ndarray:
    """log1p(relu(logits)) pooled over positions [lo, hi) of each sequence run alone."""
    out = []
    with torch.inference_mode():
        for k, seq in enumerate(sequences):
            logits = model(input_ids=torch.tensor([seq])).logits[0]
            lo, hi = lo_hi[k] if lo_hi else (0, len(seq))
            w = torch.log1p(torch.relu(logits[lo:hi]))
            if hi == lo:  # nothing to pool
                w = torch.zeros_like(logits[:1])
            v = w.amax(0) if pooling == "max" else w.sum(0)
            v[SPECIAL] = 0
            out.append(v.numpy())
    return np.stack(out)


def with_specials(backbone, tokens):
    return backbone.prefix + list(tokens) + backbone.suffix


def tokens_of(backbone, text):
    return backbone.tokenizer(text, add_special_tokens=False)["input_ids"]


# -- SPLADE on splade-tiny -----------------------------------------------------------------------
def test_matches_reference_vectors(splade_backbone):
    ids, texts = scifact_docs(5)
    side = splade_side(splade_backbone)
    assert side.projection == "screened" or side.projection == "tiled"
    ours = side.encode(texts, ids, batch_size=4)
    ref = read_jsonl(VECTORS / "docs.jsonl.gz", splade_backbone.vocab)
    pos = {doc_id: i for i, doc_id in enumerate(ref.ids)}
    expected = ref.matrix[[pos[i] for i in ids]].toarray()
    assert np.abs(dense(ours) - expected).max() < 1e-4  # reference rounded to 4 decimals
    assert side.stats.truncated == sum(len(tokens_of(splade_backbone, t)) > 254 for t in texts)


@pytest.mark.parametrize("batching", ["invariant", "padded"])
@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("projection", ["reference", "tiled", "screened"])
def test_pooling_and_masking_by_hand(splade_backbone, pooling, projection, batching):
    side = splade_side(splade_backbone, projection, pooling=pooling, batching=batching)
    got = dense(side.encode(SHORT, batch_size=len(SHORT)))  # padded: one batch
    seqs = [with_specials(splade_backbone, tokens_of(splade_backbone, t)) for t in SHORT]
    want = hand_splade(splade_backbone.model, seqs, pooling=pooling)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_special_positions_pooled_and_columns_zeroed(splade_backbone):
    """What the reference's "special tokens zeroed" means: [CLS]/[SEP] positions are pooled,
    the special-token vocabulary columns are zeroed."""
    _, texts = scifact_docs(3)
    side = splade_side(splade_backbone)
    got = dense(side.encode(texts))
    seqs = [with_specials(splade_backbone, tokens_of(splade_backbone, t)[:254]) for t in texts]
    inner = [(1, len(s) - 1) for s in seqs]
    assert not np.allclose(got, hand_splade(splade_backbone.model, seqs, inner), atol=1e-3)
    assert got[:, SPECIAL].max() == 0
    # a model that would put weight on [CLS] and [PAD] columns: still zeroed
    model = splade_backbone.model
    bias = model.get_output_embeddings().bias
    saved = bias.detach().clone()
    try:
        with torch.no_grad():
            bias[[0, 101]] += 20.0
        for projection in ("reference", "tiled", "screened"):
            out = dense(splade_side(splade_backbone, projection).encode(texts[:1]))
            assert out[:, SPECIAL].max() == 0 and out.max() > 0
    finally:
        with torch.no_grad():
            bias.copy_(saved)


@pytest.mark.parametrize("batching", ["invariant", "padded"])
@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_fast_paths_equal_reference(splade_backbone, pooling, batching):
    _, texts = scifact_docs(12)
    ref = dense(
        splade_side(splade_backbone, "reference", pooling=pooling).encode(texts, batch_size=6)
    )
    for projection in ("tiled", "screened"):
        side = splade_side(splade_backbone, projection, pooling=pooling, batching=batching)
        got = dense(side.encode(texts, batch_size=6))
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
        assert ((got > 0) == (ref > 0)).all()


def test_padding_and_order_invariance(splade_backbone):
    """Padded batches agree with texts alone to float32 rounding (invariant batching: exactly,
    see test_batch_invariance)."""
    _, texts = scifact_docs(7)
    texts = [*texts, *SHORT]
    side = splade_side(splade_backbone, batching="padded")
    batched = dense(side.encode(texts, batch_size=5))
    alone = np.vstack([dense(side.encode([t], batch_size=1)) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-5)
    invariant = dense(splade_side(splade_backbone).encode(texts, batch_size=5))
    np.testing.assert_allclose(invariant, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "side_config",
    [
        {},
        {"top_k": 5},
        {"min_weight": 0.8},
        {"max_length": 16, "stride": 4, "chunk_pooling": "mean"},  # several windows
        {"batching": "padded"},
        {"pooling": "sum", "top_k": 12},
    ],
)
def test_encode_one_is_encode_row(splade_backbone, side_config):
    """The lean single-text path returns exactly what the batch path does for that text."""
    _, docs = scifact_docs(1)
    side = splade_side(splade_backbone, **side_config)
    for text in [*SHORT, docs[0][:300]]:
        one = side.encode_one(text)
        row = side.encode([text]).row(0)
        assert one.terms.dtype == row.terms.dtype and one.weights.dtype == row.weights.dtype
        assert np.array_equal(one.terms, row.terms) and np.array_equal(one.weights, row.weights)
    assert side.stats.texts == 2 * (len(SHORT) + 1)


def test_output_pruning(splade_backbone):
    _, texts = scifact_docs(3)
    full = dense(splade_side(splade_backbone).encode(texts))
    top = dense(splade_side(splade_backbone, top_k=10).encode(texts))
    assert ((top > 0).sum(1) == 10).all()
    for row_full, row_top in zip(full, top, strict=True):
        kept = np.flatnonzero(row_top)
        assert np.allclose(row_top[kept], row_full[kept])
        assert row_full[kept].min() >= np.sort(row_full)[-10]
    floor = dense(splade_side(splade_backbone, min_weight=1.0).encode(texts))
    assert floor[floor > 0].min() > 1.0
    assert (floor > 0).sum() == (full > 1.0).sum()


# -- chunking ------------------------------------------------------------------------------------
def test_window_spans():
    assert window_spans(5, 10, 2, None) == ([(0, 5)], False)
    assert window_spans(25, 10, None, None) == ([(0, 10)], True)
    assert window_spans(25, 10, 2, None) == ([(0, 10), (8, 18), (16, 25)], False)
    assert window_spans(26, 10, 0, None) == ([(0, 10), (10, 20), (20, 26)], False)
    assert window_spans(25, 10, 2, 2) == ([(0, 10), (8, 18)], True)
    assert window_spans(18, 10, 2, None) == ([(0, 10), (8, 18)], False)


@pytest.mark.parametrize("chunk_pooling", ["max", "mean"])
def test_chunking_by_hand(splade_backbone, chunk_pooling):
    _, texts = scifact_docs(1)
    tokens = tokens_of(splade_backbone, texts[0])[:70]
    text = splade_backbone.tokenizer.decode(tokens)
    assert tokens_of(splade_backbone, text) == tokens
    side = splade_side(splade_backbone, max_length=32, stride=8, chunk_pooling=chunk_pooling)
    windows = side.windows([text])
    starts = [0, 22, 44]  # 30 text tokens per window, step 30 - 8
    assert [w[1:-1] for w in windows.ids] == [tokens[s : s + 30] for s in starts]
    assert windows.ids[0][-9:-1] == windows.ids[1][1:9]  # overlap of 8 tokens
    got = dense(side.encode([text]))
    per_window = hand_splade(splade_backbone.model, windows.ids)
    want = per_window.max(0) if chunk_pooling == "max" else per_window.mean(0)
    np.testing.assert_allclose(got[0], want, atol=1e-5, rtol=1e-5)
    assert side.stats.chunks == 6 and side.stats.truncated == 0  # windows() ran once before

    capped = splade_side(splade_backbone, max_length=32, stride=8, max_chunks=2)
    got = dense(capped.encode([text, "short"]))
    np.testing.assert_allclose(got[0], per_window[:2].max(0), atol=1e-5)
    assert capped.stats.truncated == 1 and capped.stats.chunks == 3


def test_truncation_is_counted(splade_backbone):
    _, texts = scifact_docs(1)
    tokens = tokens_of(splade_backbone, texts[0])
    side = splade_side(splade_backbone, max_length=16)
    got = dense(side.encode([texts[0], "tiny text"]))
    want = hand_splade(splade_backbone.model, [with_specials(splade_backbone, tokens[:14])])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    assert side.stats.truncated == 1 and side.stats.texts == 2


def test_bad_window_settings(splade_backbone):
    with pytest.raises(InputError, match="stride"):
        splade_side(splade_backbone, max_length=16, stride=14)
    with pytest.raises(InputError, match="positions"):
        splade_side(splade_backbone, max_length=600)


# -- mlp and binary ------------------------------------------------------------------------------
@pytest.fixture()
def splade_copy(tmp_path: Path) -> Path:
    """A directory that is splade-tiny (links), where a test may add files."""
    for item in SPLADE_TINY.iterdir():
        (tmp_path / item.name).symlink_to(item)
    return tmp_path


def hand_mlp(base, head, sequences, pooling="max") -> np.ndarray:
    out = np.zeros((len(sequences), 30522), dtype=np.float32)
    with torch.inference_mode():
        for k, seq in enumerate(sequences):
            hidden = base(input_ids=torch.tensor([seq])).last_hidden_state[0]
            w = torch.relu(head(hidden)).squeeze(-1).numpy()
            for pos in range(1, len(seq) - 1):  # not the special positions
                t = seq[pos]
                out[k, t] = max(out[k, t], w[pos]) if pooling == "max" else out[k, t] + w[pos]
    out[:, SPECIAL] = 0
    return out


def test_mlp_random_head_warns_and_flags(splade_copy, caplog):
    config = EncoderConfig(model=str(splade_copy), document=SideConfig(family="mlp"))
    config.query.family = "mlp"
    with caplog.at_level(logging.WARNING, logger="lsr.encoders.mlp_side"):
        query, doc = load_transformer_sides(config)
    assert isinstance(doc, MlpSide) and doc.random_head and doc.stats.extra["random_head"]
    assert "RANDOMLY INITIALISED" in caplog.text
    assert query is not None and query.head is doc.head and query.backbone is doc.backbone
    got = dense(doc.encode(SHORT, batch_size=3))
    seqs = [with_specials(doc.backbone, tokens_of(doc.backbone, t)) for t in SHORT]
    np.testing.assert_allclose(got, hand_mlp(doc.backbone.base(), doc.head, seqs), atol=1e-6)
    assert set(np.flatnonzero(got[4])) <= {1996, 3526}  # "the", "cell": no expansion

    with torch.no_grad():  # a "trained" head: every token gets a positive weight
        g = torch.Generator().manual_seed(1)
        doc.head.weight.copy_(torch.randn(doc.head.weight.shape, generator=g) * 0.01)
        doc.head.bias.fill_(5.0)
    doc.save_head(splade_copy)
    _, trained = load_transformer_sides(config)
    assert not trained.random_head and trained.head_path.endswith(MLP_HEAD_FILE)
    assert torch.equal(trained.head.weight, doc.head.weight)
    cfg = SideConfig(family="mlp", pooling="sum")
    summed = MlpSide(trained.backbone, cfg).encode(SHORT)  # same directory: the saved head
    want = hand_mlp(trained.backbone.base(), trained.head, seqs, pooling="sum")
    np.testing.assert_allclose(dense(summed), want, atol=1e-5)
    assert dense(summed)[4, 1996] > dense(trained.encode(SHORT))[4, 1996]  # "the" x 3


def test_binary_needs_no_model():
    config = EncoderConfig(
        model=str(SPLADE_TINY),
        query=SideConfig(family="binary", max_length=8),
        document=SideConfig(family="binary"),
    )
    query, doc = load_transformer_sides(config)
    assert isinstance(doc, BinarySide) and doc.backbone.model is None
    got = dense(doc.encode(SHORT))
    assert set(np.unique(got)) == {0.0, 1.0}
    assert list(np.flatnonzero(got[4])) == [1996, 3526]
    assert got[3].sum() == 0 and got[:, SPECIAL].max() == 0
    long = dense(query.encode([SHORT[2]]))  # 6 text tokens fit
    assert long.sum() == len(set(tokens_of(doc.backbone, SHORT[2])[:6]))
    assert query.stats.truncated == 1


# -- factory -------------------------------------------------------------------------------------
def test_factory_siamese_and_inference_free():
    query, doc = load_transformer_sides(EncoderConfig(model=str(SPLADE_TINY)))
    assert isinstance(query, SpladeSide) and isinstance(doc, SpladeSide)
    assert query.backbone is doc.backbone and query.config.max_length == 64
    assert doc.backbone.device.type == "cpu" and doc.backbone.dtype == torch.float32
    query, doc = load_transformer_sides(
        EncoderConfig(model=str(SPLADE_TINY), query_mode="inference-free")
    )
    assert query is None and isinstance(doc, SpladeSide)
    query, _ = load_transformer_sides(
        EncoderConfig(model=str(SPLADE_TINY), query=SideConfig(family="idf"))
    )
    assert query is None


def test_factory_bad_model(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_transformer_sides(EncoderConfig(model=str(tmp_path / "missing")))
    with pytest.raises(InputError, match="cannot load"):
        load_transformer_sides(EncoderConfig(model=str(tmp_path)))  # empty directory
    with pytest.raises(InputError, match="document side"):
        load_transformer_sides(
            EncoderConfig(model=str(SPLADE_TINY), document=SideConfig(family="idf"))
        )


# -- decoder-only backbones: echo ----------------------------------------------------------------
def tiny_causal(tmp_path: Path, kind: str) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    shape = dict(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
    )  # fmt: skip
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape))
    else:
        model = MistralForCausalLM(MistralConfig(sliding_window=None, **shape))
    with torch.no_grad():  # bigger logits than the default init: fewer terms, clearer tests
        model.lm_head.weight.normal_(0, 0.5)
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SPLADE_TINY / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_echo_pooling_by_hand(tmp_path, kind):
    path = tiny_causal(tmp_path, kind)
    config = EncoderConfig(model=str(path), document=SideConfig(max_length=64))
    query, doc = load_transformer_sides(config)
    assert doc.backbone.causal and doc.echo and query.echo and doc.width == 31
    assert doc.projection == "screened" or doc.projection == "tiled"
    model = doc.backbone.model
    seqs, spans = [], []
    for text in SHORT:
        x = tokens_of(doc.backbone, text)
        seqs.append([101, *x, *x, 102])  # [CLS] x x [SEP]
        spans.append((1 + len(x), 1 + 2 * len(x)))  # the second copy only
    want = hand_splade(model, seqs, spans)
    reference = SpladeSide(doc.backbone, doc.config, echo=True, projection="reference")
    padded_config = doc.config.model_copy(update={"batching": "padded"})
    padded = SpladeSide(doc.backbone, padded_config, echo=True)
    for side in (doc, reference, padded):
        batched = dense(side.encode(SHORT, batch_size=len(SHORT)))  # padded batch
        alone = np.vstack([dense(side.encode([t], batch_size=1)) for t in SHORT])
        np.testing.assert_allclose(batched, want, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(alone, want, atol=1e-5, rtol=1e-4)
        assert (batched > 0).sum() > 100
    # echo off: every position of [CLS] x [SEP] is pooled, as for a bidirectional encoder
    plain = SpladeSide(doc.backbone, doc.config, echo=False)
    seqs = [with_specials(doc.backbone, tokens_of(doc.backbone, t)) for t in SHORT[:3]]
    np.testing.assert_allclose(
        dense(plain.encode(SHORT[:3])), hand_splade(model, seqs), atol=1e-5, rtol=1e-4
    )


def test_echo_mlp_on_causal_backbone(tmp_path):
    path = tiny_causal(tmp_path, "llama")
    config = EncoderConfig(model=str(path), document=SideConfig(family="mlp", max_length=64))
    query, doc = load_transformer_sides(config)  # mlm queries, mlp documents: one backbone
    assert isinstance(query, SpladeSide) and query.backbone is doc.backbone
    assert doc.echo and doc.random_head and doc.backbone.base() is doc.backbone.model.model
    batched = dense(doc.encode(SHORT, batch_size=5))
    alone = np.vstack([dense(doc.encode([t])) for t in SHORT])
    assert np.array_equal(batched, alone)  # invariant batching: bit for bit
    doc.config = doc.config.model_copy(update={"batching": "padded"})
    np.testing.assert_allclose(dense(doc.encode(SHORT, batch_size=5)), alone, atol=1e-6)
    text_terms = set(tokens_of(doc.backbone, SHORT[0]))
    assert set(np.flatnonzero(batched[0])) <= text_terms
