"""Sparsity regularisers for training sparse encoders, as sentence-transformers plug-ins.

Every regulariser here sees one tensor ``w`` of shape ``(N, V)``: N vectors (rows) over a
vocabulary of V terms. The functions are pure torch; the modules wrap them so they can be passed
to ``SpladeLoss(document_regularizer=..., query_regularizer=...)`` (or ``CachedSpladeLoss``):
SpladeLoss only ever calls ``compute_loss_from_embeddings(embeddings)`` on a regulariser and
multiplies the returned scalar by its ``document_regularizer_weight`` / ``query_regularizer_weight``
(λ_d and λ_q, separate weights). As nn.Modules their buffers (the IDF) move with the loss.

Definitions (``|w|`` is what the SPLADE papers write; SPLADE outputs are non-negative, so it is
``w`` in practice; sentence-transformers' FlopsLoss leaves the ``|·|`` out):

- FLOPS: ``Σ_j (mean_i |w_ij|)²``. Not additive over rows: it is the square of a batch mean, so
  averaging it over micro-batches of a batch is larger than the full-batch value (the mean of
  squares exceeds the square of the mean). :class:`FullBatchFlops` computes the full-batch value
  and its exact gradient when the batch is embedded in micro-batches.
- IDF-aware FLOPS, reading (b) (the v1 wording and the ℓ0 follow-up): IDF inside the sum,
  ``Σ_j (mean_i |w_ij|·idf_j)²`` = ``Σ_j idf_j² (mean_i |w_ij|)²`` with a non-negative IDF
  vector. High-IDF (rare) terms cost more; a term with idf 0 is free.
- IDF-aware FLOPS, reading (a) (the authors' code): no new regulariser. Documents get plain
  FLOPS and queries are inference-free, ``q = presence(tokens) × relu(idf)`` (:func:`idf_query`).
  The ranking gradient on a document weight ``w_dj`` is then scaled by ``idf_j`` while the
  penalty is uniform, so relative to the ranking signal low-IDF terms are penalised more.
- ℓ0 mask (``threshold``), exactly as sentence-transformers' FlopsLoss implements it: a row whose
  number of non-zero entries is ``<= threshold`` is zeroed before the mean; the mean still
  divides by all N rows (masked rows count as zero vectors, they are not dropped). The mask is a
  step function of ``w`` and carries no gradient, so masked rows get no sparsity gradient: only
  vectors with more than ``threshold`` active terms are pushed to be sparser.
- L1: ``mean_i Σ_j |w_ij|`` (additive over rows: micro-batch means, weighted by rows, are exact).

Per-slot FLOPS: SpladeLoss hands the document regulariser the positives and the negatives
concatenated (one mean over ``N = batch × (1 + negatives)`` rows, slot-major). The reference code
computes FLOPS per candidate slot and sums. ``slots=k`` on the modules picks that explicitly: the
rows are cut into k equal consecutive blocks (SpladeLoss' order: all positives, then all first
negatives, ...) and the per-block values are summed; ``slots=1`` is sentence-transformers'
concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FlopsRegularizer",
    "FullBatchFlops",
    "L1Regularizer",
    "flops",
    "idf_query",
    "l0_mask",
    "l1",
    "microbatched_flops_backward",
]


def _check_2d(w: Tensor) -> None:
    if w.dim() != 2:
        raise ValueError(f"expected a (rows, vocabulary) tensor, got shape {tuple(w.shape)}")


def _check_idf(idf: Tensor | None, size: int | None = None) -> Tensor | None:
    if idf is None:
        return None
    idf = torch.as_tensor(idf)
    if idf.dim() != 1:
        raise ValueError(f"idf must be a vector, got shape {tuple(idf.shape)}")
    if size is not None and idf.numel() != size:
        raise ValueError(f"idf has {idf.numel()} entries for a vocabulary of {size}")
    if not bool(torch.isfinite(idf).all()) or bool((idf < 0).any()):
        raise ValueError("idf must be finite and non-negative (clamp it first: relu)")
    return idf


def l0_mask(w: Tensor, threshold: int | None) -> Tensor | None:
    """Per-row float mask ``1[#{j: w_ij != 0} > threshold]`` (sentence-transformers' FlopsLoss
    rule: strictly more than ``threshold`` active terms), or None when ``threshold`` is None.
    No gradient flows through it."""
    if threshold is None:
        return None
    _check_2d(w)
    return ((w.detach() != 0).sum(dim=1) > threshold).to(w.dtype)


def _masked_abs(w: Tensor, threshold: int | None) -> Tensor:
    mask = l0_mask(w, threshold)
    a = w.abs()
    return a if mask is None else a * mask.unsqueeze(1)


def flops(w: Tensor, idf: Tensor | None = None, threshold: int | None = None) -> Tensor:
    """``Σ_j (mean_i m_i·|w_ij|·idf_j)²``: plain FLOPS without ``idf``, reading (b) of IDF-aware
    FLOPS with it; ``m_i`` is the ℓ0 mask (:func:`l0_mask`, all ones without ``threshold``).
    The mean divides by all N rows."""
    _check_2d(w)
    return _flops(w, _check_idf(idf, w.shape[1]), threshold)


def _flops(w: Tensor, idf: Tensor | None, threshold: int | None) -> Tensor:
    """:func:`flops` without the IDF check (a checked buffer: no device sync per step)."""
    if w.dim() != 2 or w.shape[0] == 0:
        raise ValueError(f"FLOPS needs a non-empty (rows, vocabulary) tensor, got {tuple(w.shape)}")
    if idf is not None and idf.numel() != w.shape[1]:
        raise ValueError(f"idf has {idf.numel()} entries for a vocabulary of {w.shape[1]}")
    mean = _masked_abs(w, threshold).mean(dim=0)
    if idf is not None:
        mean = mean * idf.to(mean)
    return (mean**2).sum()


def l1(w: Tensor, threshold: int | None = None) -> Tensor:
    """``mean_i Σ_j m_i·|w_ij|`` (``m_i`` the optional ℓ0 mask)."""
    _check_2d(w)
    if w.shape[0] == 0:
        raise ValueError("L1 of an empty batch is undefined")
    return _masked_abs(w, threshold).sum(dim=1).mean()


def _slot_blocks(w: Tensor, slots: int) -> Sequence[Tensor]:
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if w.shape[0] % slots:
        raise ValueError(f"{w.shape[0]} rows do not split into {slots} equal slots")
    return w.chunk(slots, dim=0) if slots > 1 else (w,)


class FlopsRegularizer(nn.Module):
    """FLOPS (``idf=None``) or IDF-aware FLOPS reading (b) (``idf`` given), with the optional ℓ0
    mask (``threshold``) and per-slot aggregation (``slots``, see the module docstring), for
    ``SpladeLoss(document_regularizer=..., query_regularizer=...)``.

    The IDF is a buffer (moves with ``.to()``, saved in a state dict); it must be non-negative.
    """

    def __init__(
        self, idf: Tensor | None = None, threshold: int | None = None, slots: int = 1
    ) -> None:
        super().__init__()
        idf = _check_idf(idf)
        self.register_buffer("idf", None if idf is None else idf.detach().clone().float())
        self.threshold = threshold
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots

    def compute_loss_from_embeddings(self, embeddings: Tensor) -> Tensor:
        blocks = _slot_blocks(embeddings, self.slots)
        return torch.stack([_flops(b, self.idf, self.threshold) for b in blocks]).sum()

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.compute_loss_from_embeddings(embeddings)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "reading": "plain" if self.idf is None else "idf-in-sum (b)",
            "threshold": self.threshold,
            "slots": self.slots,
        }


class L1Regularizer(nn.Module):
    """L1, ``mean_i Σ_j |w_ij|``, with the optional ℓ0 mask, for SpladeLoss."""

    def __init__(self, threshold: int | None = None) -> None:
        super().__init__()
        self.threshold = threshold

    def compute_loss_from_embeddings(self, embeddings: Tensor) -> Tensor:
        return l1(embeddings, self.threshold)

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.compute_loss_from_embeddings(embeddings)

    def get_config_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold}


def idf_query(
    input_ids: Tensor,
    attention_mask: Tensor,
    idf: Tensor,
    drop_ids: Iterable[int] = (),
) -> Tensor:
    """Inference-free query vectors for reading (a): ``q_bj = presence_bj × relu(idf_j)``, shape
    ``(B, V)``. Presence, not count: a token repeated in the query weighs its IDF once. Padding
    (``attention_mask`` 0) is ignored; ``drop_ids`` (the special tokens, e.g. [CLS] and [SEP])
    are zeroed — sentence-transformers' SparseStaticEmbedding keeps them and applies no relu.
    ``idf`` may be a learnable parameter: the gradient reaches it through the relu.

    Reading (a) of IDF-aware FLOPS = score ``q · d`` with these queries + plain FLOPS on documents.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError("input_ids and attention_mask must be (batch, length) of one shape")
    if idf.dim() != 1:
        raise ValueError(f"idf must be a vector, got shape {tuple(idf.shape)}")
    presence = torch.zeros(
        input_ids.shape[0], idf.numel(), dtype=idf.dtype, device=input_ids.device
    ).scatter_reduce(1, input_ids.long(), attention_mask.to(idf.dtype), reduce="amax")
    drop = list(drop_ids)
    if drop:
        presence[:, drop] = 0
    return presence * torch.relu(idf).unsqueeze(0)


class FullBatchFlops:
    """Exact full-batch FLOPS (plain or reading (b), optional ℓ0 mask) when the N rows of a batch
    are embedded in micro-batches (gradient accumulation, memory-bounded steps).

    FLOPS ``L = Σ_j c_j (S_j / N)²`` with ``S_j = Σ_i m_i |w_ij|`` and ``c_j = idf_j²`` (1 without
    IDF) is a function of the column sums S only, so two passes give it exactly:

    1. :meth:`accumulate` each micro-batch's embeddings (computed without a graph): adds its
       masked column sums to S.
    2. Re-embed each micro-batch with a graph and backpropagate :meth:`surrogate`: a scalar whose
       gradient with respect to that micro-batch's rows is ``∂L/∂w_ij = 2 c_j S_j / N² · m_i ·
       sign(w_ij)``, i.e. the full-batch gradient restricted to those rows. Its value is half of
       ``Σ_j 2 c_j S_j s_j / N²`` (``s`` the micro-batch's column sums), so the surrogates of all
       micro-batches sum to L.

    Exact when pass 2 reproduces pass 1's embeddings (same weights; dropout replayed or off).
    ``n_rows`` (N), when given, is checked against the rows accumulated; else N is their count.
    """

    def __init__(
        self, n_rows: int | None = None, idf: Tensor | None = None, threshold: int | None = None
    ) -> None:
        if n_rows is not None and n_rows < 1:
            raise ValueError(f"n_rows must be >= 1, got {n_rows}")
        self.n_rows = n_rows
        self.idf = _check_idf(idf)
        self.threshold = threshold
        self.column_sums: Tensor | None = None
        self.rows_seen = 0

    def accumulate(self, embeddings: Tensor) -> None:
        """Pass 1: add one micro-batch (no graph is kept)."""
        _check_2d(embeddings)
        with torch.no_grad():
            sums = _masked_abs(embeddings.detach(), self.threshold).sum(dim=0)
        if self.column_sums is None:
            _check_idf(self.idf, sums.numel())
            self.column_sums = sums.clone()
        else:
            if sums.shape != self.column_sums.shape:
                raise ValueError("micro-batches over different vocabularies")
            self.column_sums += sums
        self.rows_seen += embeddings.shape[0]
        if self.n_rows is not None and self.rows_seen > self.n_rows:
            raise ValueError(f"accumulated {self.rows_seen} rows for a batch of {self.n_rows}")

    @property
    def n(self) -> int:
        """N, the rows of the full batch."""
        if self.column_sums is None or self.rows_seen == 0:
            raise RuntimeError("accumulate the batch's rows first")
        if self.n_rows is not None and self.rows_seen != self.n_rows:
            raise RuntimeError(f"accumulate all {self.n_rows} rows first (have {self.rows_seen})")
        return self.rows_seen

    def _weights(self) -> Tensor:
        c = self.column_sums / self.n
        if self.idf is not None:
            c = c * self.idf.to(c) ** 2
        return c

    def value(self) -> Tensor:
        """The full-batch FLOPS (a detached scalar)."""
        c = self._weights()
        return (c * self.column_sums).sum() / self.n

    def surrogate(self, embeddings: Tensor) -> Tensor:
        """Pass 2: the micro-batch's share of the loss, carrying the exact full-batch gradient."""
        _check_2d(embeddings)
        grad_coef = 2 * self._weights() / self.n  # ∂L/∂|w_ij| = 2 c_j S_j / N²
        linear = (_masked_abs(embeddings, self.threshold) * grad_coef.to(embeddings)).sum()
        return linear - linear.detach() / 2


def microbatched_flops_backward(
    embed: Callable[[Any], Tensor],
    micro_batches: Sequence[Any],
    *,
    weight: float = 1.0,
    idf: Tensor | None = None,
    threshold: int | None = None,
) -> Tensor:
    """Backpropagate ``weight × FLOPS`` of the whole batch through ``embed``, one micro-batch at a
    time (at most one micro-batch's graph alive), and return the full-batch FLOPS value.

    ``embed(micro_batch)`` returns that micro-batch's ``(rows, V)`` embeddings; it is called twice
    per micro-batch (pass 1 under ``torch.no_grad``, pass 2 with a graph), so it must be
    deterministic between the two calls (dropout off, or its RNG state replayed). Gradients
    accumulate into the parameters' ``.grad`` as with any backward.
    """
    total = FullBatchFlops(idf=idf, threshold=threshold)
    with torch.no_grad():
        for mb in micro_batches:
            total.accumulate(embed(mb))
    for mb in micro_batches:
        (weight * total.surrogate(embed(mb))).backward()
    return total.value()
