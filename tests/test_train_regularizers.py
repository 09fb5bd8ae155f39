"""lsr.train.regularizers and lsr.train.warmup: hand-computed values on tiny tensors, exact
full-batch FLOPS under micro-batching, and the plug-ins inside sentence-transformers' SpladeLoss."""

from __future__ import annotations

import pytest
import torch

from lsr.train.regularizers import (
    FlopsRegularizer,
    FullBatchFlops,
    L1Regularizer,
    flops,
    idf_query,
    l0_mask,
    l1,
    microbatched_flops_backward,
)
from lsr.train.warmup import QuadraticWarmup, warmup_callback

# Two vectors over three terms: mean |w| = [2, 0, 1].
W = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
IDF = torch.tensor([0.5, 2.0, 3.0])


# -- values against hand computation ------------------------------------------------------------
def test_flops_by_hand() -> None:
    assert flops(W).item() == pytest.approx(2**2 + 0 + 1**2)  # 5
    # reading (b): Σ_j (mean_i w_ij · idf_j)² = (2·0.5)² + 0 + (1·3)²
    assert flops(W, IDF).item() == pytest.approx(1 + 9)
    # |w|: the papers' definition (SPLADE outputs are non-negative anyway)
    assert flops(-W).item() == pytest.approx(5)


def test_l0_mask_by_hand() -> None:
    # row 0 has 2 active terms, row 1 has 1: threshold 1 keeps rows with MORE than 1
    assert l0_mask(W, 1).tolist() == [1.0, 0.0]
    assert l0_mask(W, 0).tolist() == [1.0, 1.0]
    assert l0_mask(W, None) is None
    # the masked row counts as a zero vector; the mean still divides by N = 2: [0.5, 0, 1]
    assert flops(W, threshold=1).item() == pytest.approx(0.25 + 1)
    w = W.clone().requires_grad_(True)
    flops(w, threshold=1).backward()
    assert w.grad[1].abs().sum().item() == 0  # a masked row gets no sparsity gradient
    # ∂/∂w_0j = 2·mean_j/N = [0.5, 0, 1]
    assert torch.allclose(w.grad[0], torch.tensor([0.5, 0.0, 1.0]))


def test_l0_mask_matches_sentence_transformers_flops_loss() -> None:
    from sentence_transformers.sparse_encoder.losses import FlopsLoss

    w = torch.relu(torch.randn(7, 11, generator=torch.Generator().manual_seed(3)))
    for threshold in (None, 3, 5, 20):
        st = FlopsLoss(None, threshold=threshold).compute_loss_from_embeddings(w)
        ours = FlopsRegularizer(threshold=threshold).compute_loss_from_embeddings(w)
        assert ours.item() == pytest.approx(st.item(), rel=1e-6)


def test_l1_by_hand() -> None:
    assert l1(W).item() == pytest.approx(3.0)  # row sums 3 and 3
    assert l1(W, threshold=1).item() == pytest.approx(1.5)  # (3 + 0) / 2
    assert L1Regularizer().compute_loss_from_embeddings(-W).item() == pytest.approx(3.0)


def test_slots_by_hand() -> None:
    w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    # concatenated (sentence-transformers): mean [1, 0.5] → 1.25
    assert FlopsRegularizer().compute_loss_from_embeddings(w).item() == pytest.approx(1.25)
    # per slot (reference): [0.5, 0]² + [1.5, 1]² = 0.25 + 3.25
    per_slot = FlopsRegularizer(slots=2).compute_loss_from_embeddings(w)
    assert per_slot.item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="equal slots"):
        FlopsRegularizer(slots=3).compute_loss_from_embeddings(w)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        FlopsRegularizer(idf=torch.tensor([1.0, -0.1, 2.0]))
    with pytest.raises(ValueError, match="entries"):
        flops(W, torch.ones(4))
    with pytest.raises(ValueError, match="rows, vocabulary"):
        flops(torch.ones(3))
    with pytest.raises(ValueError, match="non-empty"):
        flops(torch.zeros(0, 3))


def test_idf_buffer_moves_and_is_saved() -> None:
    reg = FlopsRegularizer(idf=IDF).double()
    assert reg.idf.dtype == torch.float64 and "idf" in reg.state_dict()
    assert reg(W.double()).item() == pytest.approx(10)


def test_idf_query_reading_a() -> None:
    idf = torch.zeros(200)
    idf[5], idf[7], idf[101], idf[102], idf[0] = 2.0, -1.0, 0.3, 0.4, 9.0
    idf.requires_grad_(True)
    ids = torch.tensor([[101, 5, 7, 5, 102, 0], [101, 102, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]])
    q = idf_query(ids, mask, idf, drop_ids=(101, 102))
    assert q.shape == (2, 200)
    # presence × relu(idf): token 5 twice weighs 2 once; token 7 (idf < 0) weighs 0; padding and
    # special tokens are out
    assert {int(j): float(q[0, j].detach()) for j in q[0].nonzero()} == {5: 2.0}
    assert q[1].abs().sum().item() == 0
    kept = idf_query(ids, mask, idf)
    assert {int(j) for j in kept[0].nonzero()} == {5, 101, 102}
    assert kept[0, 0].item() == 0  # the padding id is never present
    q.sum().backward()  # a learnable IDF gets its gradient through the relu
    assert idf.grad[5].item() == 1 and idf.grad[7].item() == 0 and idf.grad[0].item() == 0


# -- exact full-batch FLOPS over micro-batches --------------------------------------------------
def _tiny_model(seed: int = 0) -> tuple[torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(24, 6, generator=g)
    layer = torch.nn.Linear(6, 40)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(40, 6, generator=g))
        layer.bias.copy_(torch.randn(40, generator=g) - 1.0)  # relu leaves many zeros
    return x, layer


@pytest.mark.parametrize("size", [1, 3, 8])
@pytest.mark.parametrize(("use_idf", "threshold"), [(False, None), (True, None), (True, 12)])
def test_microbatched_flops_is_exact(size: int, use_idf: bool, threshold: int | None) -> None:
    x, layer = _tiny_model()
    idf = torch.rand(40, generator=torch.Generator().manual_seed(1)) * 3 if use_idf else None

    def embed(rows: slice) -> torch.Tensor:
        return torch.relu(layer(x[rows]))

    full = flops(embed(slice(None)), idf, threshold)
    (0.7 * full).backward()
    want = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()

    batches = [slice(i, i + size) for i in range(0, 24, size)]
    value = microbatched_flops_backward(embed, batches, weight=0.7, idf=idf, threshold=threshold)
    assert value.item() == pytest.approx(full.item(), rel=1e-5)
    for got, exp in zip((p.grad for p in layer.parameters()), want, strict=True):
        assert torch.allclose(got, exp, rtol=1e-5, atol=1e-6)

    # the surrogates' values add up to the full-batch value
    acc = FullBatchFlops(24, idf=idf, threshold=threshold)
    for b in batches:
        acc.accumulate(embed(b))
    shares = sum(acc.surrogate(embed(b)).item() for b in batches)
    assert shares == pytest.approx(full.item(), rel=1e-5)

    # naive: FLOPS per micro-batch, averaged (what gradient accumulation does) is larger
    naive = sum(flops(embed(b), idf, threshold).item() for b in batches) / len(batches)
    assert naive > full.item() * 1.05


def test_full_batch_flops_guards() -> None:
    acc = FullBatchFlops(4)
    with pytest.raises(RuntimeError):
        acc.value()
    acc.accumulate(torch.ones(3, 5))
    with pytest.raises(RuntimeError, match="all 4 rows"):
        acc.value()
    with pytest.raises(ValueError, match="5 rows for a batch of 4"):
        acc.accumulate(torch.ones(2, 5))


# -- warm-up ------------------------------------------------------------------------------------
def test_quadratic_warmup_values() -> None:
    absolute = QuadraticWarmup(warmup_steps=100)
    assert [absolute.weight(2.0, s) for s in (0, 50, 100, 150)] == [0.0, 0.5, 2.0, 2.0]
    ratio = QuadraticWarmup(warmup_ratio=0.25)  # T = 100 of 400
    assert [ratio.weight(2.0, s, 400) for s in (0, 50, 100, 150)] == [0.0, 0.5, 2.0, 2.0]
    reference = QuadraticWarmup(warmup_steps=100, count_from_one=True)  # ((step + 1) / T)²
    assert reference.factor(0) == pytest.approx(1e-4)
    assert reference.factor(99) == 1.0
    assert QuadraticWarmup(warmup_steps=0).factor(0) == 1.0
    with pytest.raises(ValueError, match="exactly one"):
        QuadraticWarmup(warmup_steps=10, warmup_ratio=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        QuadraticWarmup()
    with pytest.raises(ValueError, match="total number"):
        ratio.factor(3)


# -- inside sentence-transformers ---------------------------------------------------------------
QUERIES = ["what is a protein", "cats and dogs", "breast cancer risk", "fox jumps"]
POSITIVES = ["proteins fold", "dogs bark at cats", "BRCA1 raises risk", "the quick brown fox"]
NEGATIVES = ["the sky is blue", "stock markets fell", "a recipe for bread", "rain in spain"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A random 1-layer BERT MLM (hidden 16, no dropout) + SpladePooling; splade-tiny's
    tokenizer. Nothing is downloaded."""
    from conftest import save_tiny_bert_mlm
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    root = save_tiny_bert_mlm(tmp_path_factory.mktemp("tiny-mlm"), dropout=0.0)
    return SparseEncoder(modules=[MLMTransformer(str(root)), SpladePooling("max")])


def _features(model, rows: slice = slice(None)):
    return [model.tokenize(texts[rows]) for texts in (QUERIES, POSITIVES, NEGATIVES)]


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_plugins_inside_splade_loss(tiny_encoder) -> None:
    from sentence_transformers.sparse_encoder import losses

    model = tiny_encoder
    idf = torch.rand(30522, generator=torch.Generator().manual_seed(0)) * 5
    loss = losses.SpladeLoss(
        model,
        losses.SparseMultipleNegativesRankingLoss(model),
        document_regularizer_weight=0.1,
        query_regularizer_weight=0.2,
        document_regularizer=FlopsRegularizer(idf=idf, slots=2),
        query_regularizer=L1Regularizer(threshold=0),
    )
    model.zero_grad()
    out = loss(_features(model))
    sum(out.values()).backward()
    grads = _grads(model)
    assert grads and all(torch.isfinite(g).all() for g in grads)

    with torch.no_grad():
        q, p, n = (model(f)["sentence_embedding"] for f in _features(model))
    want_doc = 0.1 * (flops(p, idf) + flops(n, idf))  # positives and negatives, per slot
    assert out["document_regularizer_loss"].item() == pytest.approx(want_doc.item(), rel=1e-5)
    assert out["query_regularizer_loss"].item() == pytest.approx(0.2 * l1(q).item(), rel=1e-5)
    cfg = loss.get_config_dict()
    assert cfg["document_regularizer"] == "FlopsRegularizer"
    assert cfg["query_regularizer_threshold"] == 0


def test_cached_splade_loss_flops_is_full_batch(tiny_encoder) -> None:
    """CachedSpladeLoss computes the regulariser on the whole trainer batch (exact against
    SpladeLoss, mini-batch 1); two accumulation steps of half the batch inflate FLOPS."""
    from sentence_transformers.sparse_encoder import losses

    model = tiny_encoder

    def make(cached: bool):
        base = losses.SparseMultipleNegativesRankingLoss(model)
        kwargs = dict(document_regularizer_weight=0.5, query_regularizer_weight=0.3)
        kwargs |= dict(document_regularizer=FlopsRegularizer(), query_regularizer=None)
        if cached:
            return losses.CachedSpladeLoss(model, base, mini_batch_size=1, **kwargs)
        return losses.SpladeLoss(model, base, **kwargs)

    model.zero_grad()
    full = make(False)(_features(model))
    sum(full.values()).backward()
    want = _grads(model)

    model.zero_grad()
    cached = make(True)(_features(model))
    sum(cached.values()).backward()
    got = _grads(model)
    for key in full:
        assert cached[key].item() == pytest.approx(full[key].item(), rel=1e-5)
    for g, w in zip(got, want, strict=True):  # float32 sums in another order: 1e-5 of the scale
        assert (g - w).abs().max().item() <= 1e-5 * w.abs().max().item() + 1e-8

    halves = [make(False)(_features(model, s)) for s in (slice(0, 2), slice(2, 4))]
    accumulated = sum(h["document_regularizer_loss"].item() for h in halves) / 2
    assert accumulated > full["document_regularizer_loss"].item()


def test_warmup_callback_in_trainer(tiny_encoder, tmp_path) -> None:
    pytest.importorskip("accelerate")
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import (
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
        losses,
    )
    from sentence_transformers.sparse_encoder.callbacks.splade_callbacks import (
        SpladeRegularizerWeightSchedulerCallback,
    )
    from transformers import TrainerCallback

    model = tiny_encoder
    loss = losses.SpladeLoss(
        model,
        losses.SparseMultipleNegativesRankingLoss(model),
        document_regularizer_weight=0.4,
        query_regularizer_weight=0.2,
        document_regularizer=FlopsRegularizer(),
        query_regularizer=FlopsRegularizer(),
    )
    seen: list[tuple[int, float, float]] = []

    class Spy(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append(
                (state.global_step, loss.document_regularizer_weight, loss.query_regularizer_weight)
            )

    data = Dataset.from_dict({"query": QUERIES, "positive": POSITIVES, "negative": NEGATIVES})
    args = SparseEncoderTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        use_cpu=True,
    )
    callback = warmup_callback(loss, QuadraticWarmup(warmup_steps=2))
    trainer = SparseEncoderTrainer(
        model=model, args=args, train_dataset=data, loss=loss, callbacks=[callback, Spy()]
    )
    ours = [
        c
        for c in trainer.callback_handler.callbacks
        if isinstance(c, SpladeRegularizerWeightSchedulerCallback)
    ]
    assert ours == [callback]  # the trainer kept ours and added no default
    trainer.train()
    assert seen == [(0, 0.0, 0.0), (1, 0.1, 0.05), (2, 0.4, 0.2)]
