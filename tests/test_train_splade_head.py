"""The fast SPLADE head (lsr.train.splade_head) against the stock path: sentence-transformers'
fill-mask logits + ``torch.max(log1p(relu(logits * mask)), dim=1)``.

Forward values are compared bit for bit. Gradients go through different summation orders (dense
matmuls in the stock path, index_add over the argmax positions here), so they are compared with
a tolerance relative to the largest gradient: 1e-5 in float32 (a few ulps of accumulated
rounding) and 1e-12 in float64 (the same formulas, so rounding alone)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from lsr.train.splade_head import (  # noqa: E402
    FastSpladeTransformer,
    auto_chunk_size,
    fast_splade_encoder,
    splade_max_pool,
    stock_splade_encoder,
)
from tests.conftest import SPLADE_TINY  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def stock_pool(h, w, b, mask, activation="relu"):
    """SpladePooling's computation (single chunk), on materialised logits."""
    logits = torch.nn.functional.linear(h, w, b) * mask.unsqueeze(-1).to(h.dtype)
    y = torch.log1p(torch.relu(logits))
    if activation == "log1p_relu":
        y = torch.log1p(y)
    return torch.max(y, dim=1).values


def grads(fn, h, w, b, mask, gout):
    leaves = [t.detach().clone().requires_grad_(True) for t in (h, w, b)]
    out = fn(*leaves, mask)
    (out * gout).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def assert_grads_close(expected, actual, dtype):
    for e, a in zip(expected, actual, strict=True):
        scale = max(float(e.abs().max()), 1e-30)
        assert float((e - a).abs().max()) <= TOL[dtype] * scale


def tiny(dtype, seed=0, batch=3, length=9, width=8, vocab=50, pad=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, length, width, generator=g, dtype=dtype)
    w = torch.randn(vocab, width, generator=g, dtype=dtype)
    b = torch.randn(vocab, generator=g, dtype=dtype) - 1.0  # many pairs stay at 0
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad:
        for i in range(batch):
            mask[i, length - 2 * i :] = 0
    gout = torch.rand(batch, vocab, generator=g, dtype=dtype)
    return h, w, b, mask, gout


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_forward_and_gradients_match_stock(dtype, activation):
    for seed in range(3):
        h, w, b, mask, gout = tiny(dtype, seed)
        ref, ref_g = grads(lambda *a: stock_pool(*a, activation=activation), h, w, b, mask, gout)
        out, got_g = grads(
            lambda *a: splade_max_pool(*a, chunk_size=16, activation=activation),
            h,
            w,
            b,
            mask,
            gout,
        )
        assert out.dtype == dtype
        assert torch.equal(out, ref)
        assert 0 < int((out > 0).sum()) < out.numel()
        assert_grads_close(ref_g, got_g, dtype)


def test_float64_gradcheck():
    h, w, b, mask, _ = tiny(torch.float64, seed=4, batch=2, length=5, width=3, vocab=7)
    b = b + 1.5  # most pairs active
    args = [t.clone().requires_grad_(True) for t in (h, w, b)]
    assert torch.autograd.gradcheck(
        lambda h, w, b: splade_max_pool(h, w, b, mask, chunk_size=3), args, eps=1e-7, atol=1e-8
    )


def test_chunk_size_and_batch_invariance():
    h, w, b, mask, gout = tiny(torch.float32, seed=1, batch=4, length=11, vocab=97)
    runs = [
        grads(lambda *a, n=n: splade_max_pool(*a, chunk_size=n), h, w, b, mask, gout)
        for n in (1, 5, 64, 97, 128, 1000, None)  # rounded up to whole 64-column blocks
    ]
    for out, g in runs[1:]:
        assert torch.equal(out, runs[0][0])
        for x, y in zip(g, runs[0][1], strict=True):
            assert torch.equal(x, y)
    # Batch invariance: a document pooled alone (padding trimmed or not) gets the vector the
    # stock path gives it alone, bit for bit; against its row of the batch, the GEMM's row count
    # changed (its last bits may too, for both paths alike), so up to float32 rounding.
    whole = splade_max_pool(h, w, b, mask)
    for i in range(h.shape[0]):
        trimmed = int(mask[i].sum())
        for sub_h, sub_mask in (
            (h[i : i + 1], mask[i : i + 1]),
            (h[i : i + 1, :trimmed], mask[i : i + 1, :trimmed]),
        ):
            alone = splade_max_pool(sub_h, w, b, sub_mask, chunk_size=13)
            assert torch.equal(alone, stock_pool(sub_h, w, b, sub_mask))
            torch.testing.assert_close(alone[0], whole[i], rtol=1e-6, atol=1e-6)


def test_masked_positions_never_win():
    h, w, b, mask, gout = tiny(torch.float32, seed=2)
    h = h.clone()
    h[mask == 0] = 1e3 * torch.sign(h[mask == 0])  # huge logits on padding
    out, (gh, _, _) = grads(lambda *a: splade_max_pool(*a, chunk_size=7), h, w, b, mask, gout)
    assert torch.equal(out, stock_pool(h, w, b, mask))
    assert float(out.max()) < 20  # the padded 1e3-scale logits were not taken
    assert torch.count_nonzero(gh[mask == 0]) == 0
    assert torch.count_nonzero(gh[mask == 1]) > 0


def test_zero_rows_give_zero_gradient():
    h, w, b, mask, gout = tiny(torch.float32, seed=3)
    b = b - 100.0  # every logit negative: all-zero vectors
    mask = mask.clone()
    mask[1] = 0  # and one fully padded row
    out, got = grads(splade_max_pool, h, w, b, mask, gout)
    assert torch.count_nonzero(out) == 0
    assert all(torch.count_nonzero(g) == 0 for g in got)
    _, ref = grads(stock_pool, h, w, b, mask, gout)
    assert all(torch.count_nonzero(g) == 0 for g in ref)


def test_ties_follow_torch_max():
    """Logits that differ by one ulp but share their log1p value: the stock path routes the
    gradient to the first position (torch.max's rule on the activated values), ties='stock'
    too; ties='logit' routes to the true max logit. Exact logit ties: first position in both."""
    x = torch.tensor(10.0)
    x_next = torch.nextafter(x, torch.tensor(math.inf))
    assert float(x_next) > float(x)
    assert float(torch.log1p(x_next)) == float(torch.log1p(x))  # one value after activation
    t = torch.stack([x, x_next, x_next, torch.tensor(3.0)])
    h = t.reshape(1, 4, 1)
    w = torch.ones(1, 1)
    b = torch.zeros(1)
    mask = torch.ones(1, 4, dtype=torch.long)
    gout = torch.ones(1, 1)
    _, (ref_h, _, _) = grads(stock_pool, h, w, b, mask, gout)
    _, (stock_h, _, _) = grads(splade_max_pool, h, w, b, mask, gout)
    _, (logit_h, _, _) = grads(lambda *a: splade_max_pool(*a, ties="logit"), h, w, b, mask, gout)
    assert torch.nonzero(ref_h.flatten()).flatten().tolist() == [0]
    assert torch.equal(stock_h, ref_h)
    assert torch.nonzero(logit_h.flatten()).flatten().tolist() == [1]  # first of the exact tie


def test_auto_chunk_size():
    assert auto_chunk_size(32, 256, 30522) == 512
    assert auto_chunk_size(1, 8, 100) == 128
    assert auto_chunk_size(4096, 512, 30522) == 64


@pytest.fixture(scope="module")
def encoders():
    from sentence_transformers import SparseEncoder

    stock = SparseEncoder(str(SPLADE_TINY), device="cpu")
    stock.eval()
    return stock, fast_splade_encoder(stock, chunk_size=4096)


TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of fractures.",
    "short query",
    "The 30,522-wide vocabulary head dominates the training step of a small SPLADE encoder, "
    "which is why the max pooling runs in vocabulary chunks with a sparse backward pass.",
]


def test_sparse_encoder_same_embeddings(encoders):
    from sentence_transformers import SparseEncoder

    stock, fast = encoders
    assert isinstance(fast[0], FastSpladeTransformer)
    assert len(fast) == 1
    assert fast.get_embedding_dimension() == 30522
    names = {n for n, _ in fast.named_parameters()}
    assert names == {n for n, _ in stock.named_parameters()}  # same names, shared tensors
    assert fast[0].auto_model is stock[0].auto_model
    a = stock.encode(TEXTS, convert_to_tensor=True).to_dense()
    b = fast.encode(TEXTS, convert_to_tensor=True).to_dense()
    assert torch.equal(a, b)
    assert stock.get_embedding_dimension() == 30522  # known once SpladePooling has run
    # built from the directory directly (its own copy of the weights), default chunking
    own = SparseEncoder(modules=[FastSpladeTransformer(str(SPLADE_TINY))], device="cpu")
    assert torch.equal(own.encode(TEXTS, convert_to_tensor=True).to_dense(), a)
    assert int((a > 0).sum()) > 50


def test_sparse_encoder_same_gradients(encoders):
    """A FLOPS-style loss through the whole encoder: every parameter's gradient matches."""
    stock, fast = encoders
    params = dict(stock.named_parameters())
    features = stock.preprocess(TEXTS)

    def run(model):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # same dropout masks (the stock pooling is in-place in eval mode)
        emb = model(dict(features))["sentence_embedding"]
        loss = (emb.mean(0) ** 2).sum() + emb.sum() * 1e-3
        loss.backward()
        return emb.detach(), {n: p.grad.clone() for n, p in params.items() if p.grad is not None}

    stock.train()
    try:
        ref_emb, ref = run(stock)
        emb, got = run(fast)
    finally:
        stock.zero_grad(set_to_none=True)
        stock.eval()
    assert torch.equal(emb, ref_emb)
    assert ref.keys() == got.keys()
    assert any(name.endswith("cls.predictions.bias") for name in ref)
    # Per tensor, relative to its largest gradient; tensors whose gradient is pure rounding
    # noise (attention key biases: softmax is shift-invariant) against 1 % of the global largest.
    top = max(float(g.abs().max()) for g in ref.values())
    for name in ref:
        scale = max(float(ref[name].abs().max()), 1e-2 * top)
        assert float((ref[name] - got[name]).abs().max()) <= 1e-4 * scale, name


def test_st_loss_and_stock_round_trip(encoders, tmp_path):
    """SpladeLoss(SparseMultipleNegativesRankingLoss) runs on the fast encoder with the stock
    loss value; the stock layout over the same weights saves and reloads the same model."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.losses import (
        SparseMultipleNegativesRankingLoss,
        SpladeLoss,
    )

    stock, fast = encoders
    queries, docs = TEXTS[:2], TEXTS[1:]
    values = []
    stock.train()
    for model in (stock, fast):
        torch.manual_seed(0)
        loss = SpladeLoss(
            model,
            SparseMultipleNegativesRankingLoss(model),
            document_regularizer_weight=3e-5,
            query_regularizer_weight=5e-5,
        )
        parts = loss([model.preprocess(queries), model.preprocess(docs)], None)
        value = sum(parts.values()) if isinstance(parts, dict) else parts
        value.backward()
        model.zero_grad(set_to_none=True)
        values.append(float(value.detach()))
    stock.eval()
    assert values[0] == pytest.approx(values[1], rel=1e-6)

    # A fast model saved as it is reloads as a fast model; its modules.json names a class outside
    # sentence_transformers, so loading needs trust_remote_code=True.
    fast.save(str(tmp_path / "fast"))
    again = SparseEncoder(str(tmp_path / "fast"), device="cpu", trust_remote_code=True)
    assert isinstance(again[0], FastSpladeTransformer)
    a = stock.encode(TEXTS, convert_to_tensor=True).to_dense()
    assert torch.equal(again.encode(TEXTS, convert_to_tensor=True).to_dense(), a)

    back = stock_splade_encoder(fast)
    assert [type(m).__name__ for m in back] == ["Transformer", "SpladePooling"]
    back.save(str(tmp_path / "m"))
    reloaded = SparseEncoder(str(tmp_path / "m"), device="cpu")
    assert torch.equal(reloaded.encode(TEXTS, convert_to_tensor=True).to_dense(), a)
