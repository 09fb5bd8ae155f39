"""SPLADE's vocabulary projection, pooled over positions without a [batch, length, vocab] tensor.

A masked (or causal) LM ends in an output projection ``logits = hidden @ W.T + b`` over the whole
vocabulary (``W``: vocab x hidden). SPLADE keeps ``pool_t log1p(relu(logits[t]))`` per text. With
a small backbone on a CPU the projection is nearly all of the cost, and the full logits tensor
(8 texts x 256 tokens x 30,522 terms = 250 MB of float32) is written and read several times. The
functions here take the *input* of the output projection (``LMHeadSplit`` captures it) and:

``pool_reference``  the straightforward computation from full logits (tests, fallback).
``pool_tiled``      exact: vocabulary blocks, reduced over positions as they are made (GPU path,
                    and CPUs without native bf16).
``pool_screened``   exact, the CPU fast path: a bf16 matmul (native on AVX512-BF16/AMX, ~3x the
                    float32 rate) bounds every text's maximum logit per term; only terms that can
                    be positive are recomputed in float32. ``log1p(relu(x))`` is 0 for x <= 0, so
                    a term whose bound is <= 0 has weight 0 under max and sum pooling alike.

The bf16 bound. With unit roundoff u = 2^-8, rounding x and w to bf16 moves each product by at
most (2u + u^2)|x_i w_i|; products are exact and accumulated in float32 (error ~ H·2^-24 of the
sum), and the result is rounded to bf16 once more (u). So |logit_bf16 - logit| <= ~3.01u Σ|x_i w_i|
<= 3.01u ||x|| ||w|| (Cauchy-Schwarz). ``SCREEN_MARGIN`` = 4u covers it; a term is recomputed when
``max_t logit_bf16[t] + b + SCREEN_MARGIN · max_t ||x_t|| · ||w||  > 0``.

Positions that are not pooled (padding; outside the echo copy) are replaced by a pooled row of
the same text before any max: a duplicate row never changes a maximum, so no mask is needed in
the big matmul. Sum pooling multiplies by the mask in the (small) exact step.
"""

from __future__ import annotations

import threading
from typing import Literal

import torch

Pooling = Literal["max", "sum"]

SCREEN_MARGIN = 2.0**-6  # 4 x bf16 unit roundoff (2^-8); see the module docstring
_SCREEN_ROWS = 2048  # token rows per bf16 logits tile (whole texts) ...
_SCREEN_TILE = 2**20  # ... by as many terms as make this many logits (2 MB of bf16), ...
_SCREEN_BLOCK = 512  # ... and at least this many. Measured on a 2-core Zen 4 / Zen 5 (one text
# of 16 tokens: 0.6 ms with the whole vocabulary in one tile, 1.5 ms in tiles of 512 terms; 256
# tokens: best at 4096 terms; batches of 2048 rows: best at 512, ±10%)


class _Captured(Exception):  # control flow: carries the captured hidden states out
    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__("captured")
        self.hidden = hidden


class LMHeadSplit:
    """Runs an LM up to (not including) its output projection and exposes that projection.

    A forward pre-hook on ``model.get_output_embeddings()`` raises with the projection's input
    while capture is on (per thread), so the rest of the model (norms, MLM transform, whatever
    the architecture puts before the decoder) runs unchanged and the vocabulary matmul is
    skipped. ``check`` compares ``decoder(hidden)`` with the model's own logits: an architecture
    that transforms logits after the projection (soft-capping, scaling) fails it and callers fall
    back to the full-logits path.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        decoder = model.get_output_embeddings()
        if not isinstance(decoder, torch.nn.Linear):
            raise TypeError(f"output embeddings are {type(decoder).__name__}, not nn.Linear")
        self.model = model
        self.decoder = decoder
        self._local = threading.local()
        self._handle = decoder.register_forward_pre_hook(self._hook)
        self._screen: tuple[torch.Tensor, torch.Tensor] | None = None
        self._screen_key: tuple[int, int] | None = None

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        if getattr(self._local, "active", False):
            raise _Captured(args[0])

    def hidden(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The output projection's input, [batch, length, hidden]."""
        self._local.active = True
        try:
            self.model(**inputs)
        except _Captured as captured:
            return captured.hidden
        finally:
            self._local.active = False
        raise RuntimeError("the model never called its output embeddings")

    @property
    def weight(self) -> torch.Tensor:
        return self.decoder.weight

    @property
    def bias(self) -> torch.Tensor:
        if self.decoder.bias is not None:
            return self.decoder.bias
        return torch.zeros(self.weight.shape[0], dtype=self.weight.dtype, device=self.weight.device)

    def screen_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """bf16 copy of W and its row norms (float32); remade when W changes (training)."""
        w = self.weight.detach()
        key = (w.data_ptr(), self.weight._version)
        if self._screen is None or self._screen_key != key:
            self._screen = (w.to(torch.bfloat16).contiguous(), w.float().norm(dim=1))
            self._screen_key = key
        return self._screen

    def check(self, **inputs: torch.Tensor) -> float:
        """Largest |decoder(hidden) - logits| on ``inputs`` (0 when the split is faithful)."""
        with torch.inference_mode():
            logits = self.model(**inputs).logits
            split = self.decoder(self.hidden(**inputs))
        return float((split.float() - logits.float()).abs().max())


def fill_unpooled(hidden: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Replace each text's non-pooled positions by its first pooled row (a max ignores duplicates).

    Rows with no pooled position at all keep their values; callers drop those rows.
    """
    first = pool.to(torch.int8).argmax(dim=1)
    dup = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    return torch.where(pool.unsqueeze(-1), hidden, dup.unsqueeze(1))


def _activate(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.relu(x))


def pool_reference(logits: torch.Tensor, pool: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """``pool_t log1p(relu(logits))`` over pooled positions: [B, L, V] -> [B, V] float32.

    Works in place on ``logits`` (one [B, L, V] tensor is enough; they are not needed after).
    """
    weights = logits.float().relu_().log1p_()
    weights.mul_(pool.unsqueeze(-1).to(torch.float32))
    return weights.amax(dim=1) if pooling == "max" else weights.sum(dim=1)


def pool_tiled(
    hidden: torch.Tensor,
    pool: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    pooling: Pooling,
    block: int = 4096,
) -> torch.Tensor:
    """Exact pooled weights [B, V] (float32), one vocabulary block at a time."""
    batch, vocab = hidden.shape[0], weight.shape[0]
    out = torch.empty(batch, vocab, dtype=torch.float32, device=hidden.device)
    filled = fill_unpooled(hidden, pool) if pooling == "max" else hidden
    mask = pool.unsqueeze(-1).to(hidden.dtype)
    for start in range(0, vocab, block):
        stop = min(start + block, vocab)
        logits = torch.matmul(filled, weight[start:stop].T) + bias[start:stop]
        if pooling == "max":
            out[:, start:stop] = _activate(logits.amax(dim=1).float())
        else:
            out[:, start:stop] = (_activate(logits) * mask).float().sum(dim=1)
    out[~pool.any(dim=1)] = 0
    return out


def pool_screened(
    hidden: torch.Tensor,
    pool: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight_bf16: torch.Tensor,
    weight_norms: torch.Tensor,
    pooling: Pooling,
    keep: torch.Tensor | None = None,
    margin: float = SCREEN_MARGIN,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact pooled weights as (row, column, value) triplets: bf16 screen, float32 recompute.

    ``hidden`` [B, L, H] float32, ``pool`` [B, L] bool, ``weight`` [V, H], ``bias`` [V];
    ``keep`` [V] bool drops columns (special tokens) before the recompute. Values may be 0.
    """
    batch, length, dim = hidden.shape
    vocab = weight.shape[0]
    filled = fill_unpooled(hidden, pool)
    # 1. bf16 upper bound of every text's max logit per term, a vocabulary block at a time
    flat = filled.to(torch.bfloat16).reshape(batch * length, dim)
    bound = torch.empty(batch, vocab, dtype=torch.float32, device=hidden.device)
    per_tile = max(1, _SCREEN_ROWS // length)
    tile_rows = max(1, min(per_tile, batch) * length)
    terms = max(_SCREEN_BLOCK, _SCREEN_TILE // tile_rows // 256 * 256)
    for first in range(0, batch, per_tile):
        last = min(first + per_tile, batch)
        rows = flat[first * length : last * length]
        for start in range(0, vocab, terms):
            stop = min(start + terms, vocab)
            tile = torch.matmul(rows, weight_bf16[start:stop].T)
            bound[first:last, start:stop] = tile.view(last - first, length, -1).amax(dim=1)
    row_norm = hidden.norm(dim=-1).masked_fill(~pool, 0).amax(dim=1)
    bound += bias.float()
    bound.addcmul_(row_norm.unsqueeze(1), weight_norms.unsqueeze(0), value=margin)
    candidate = bound > 0
    if keep is not None:
        candidate &= keep
    candidate[~pool.any(dim=1)] = False
    counts = candidate.sum(dim=1)
    width = int(counts.max()) if batch else 0
    if width == 0:
        empty = torch.empty(0, dtype=torch.long, device=hidden.device)
        return empty, empty, torch.empty(0, dtype=torch.float32)
    # 2. float32 recompute of each text's candidates (padded to the widest with non-candidates)
    cols = torch.topk(candidate.to(torch.int8), width, dim=1, sorted=False).indices
    w = weight[cols]  # [B, K, H]
    logits = torch.baddbmm(
        bias[cols].unsqueeze(1), filled if pooling == "max" else hidden, w.transpose(1, 2)
    )
    if pooling == "max":
        values = _activate(logits.amax(dim=1))
    else:
        values = (_activate(logits) * pool.unsqueeze(-1)).sum(dim=1)
    picked = candidate.gather(1, cols)
    rows = torch.arange(batch, device=cols.device).unsqueeze(1).expand_as(cols)
    return rows[picked], cols[picked], values[picked].float()
