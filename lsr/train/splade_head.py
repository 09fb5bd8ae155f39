"""A fast SPLADE head for training: max pooling over the vocabulary without [B, L, V] logits.

SPLADE's document vector is ``out[b, v] = max_l mask[b, l] * log1p(relu(h[b, l] · W[v] + c[v]))``
with ``h`` the MLM head's transformed hidden states (BERT: ``cls.predictions.transform``, i.e.
dense + gelu + LayerNorm), ``W`` / ``c`` the decoder's weight [V, H] and bias [V]. The stock path
(sentence-transformers' fill-mask ``Transformer`` + ``SpladePooling``) materialises the full
[B, L, V] logits, applies relu and log1p to all of them and keeps the whole tensor for the
backward. With V = 30,522 that tensor dominates a training step of a small backbone.

:class:`SpladeMaxPool` computes the same numbers in vocabulary chunks:

* forward: for each chunk of the vocabulary, the [B, L, n] logits, masked positions set to -inf,
  their max over L and its position. ``log1p(relu(.))`` is monotone non-decreasing, so applying
  it after the max gives the same values as the stock activate-then-max, on [B, V] instead of
  [B, L, V] elements. Nothing of size [B, L, V] is kept: only the max logit and its position per
  (b, v). Bit-identical to the stock path as long as the chunked matmul returns the unchunked
  one's bits (chunks are whole multiples of :data:`COLUMN_BLOCK` columns for that) and log1p is
  monotone in floating point; both hold for splade-tiny in the tests and the benchmark (float32
  and bf16 autocast, 1 and 2 threads). A batch of another shape (rows trimmed or added) may
  change a GEMM's last bits, for the stock path as much as for this one.
* backward: the gradient of ``out[b, v]`` reaches exactly one logit, the one at the argmax
  position, and only where the max logit is > 0 (relu's gradient is 0 elsewhere, also for
  all-masked rows). So ``dh[b, l*] += g·W[v]``, ``dW[v] += g·h[b, l*]``, ``dc[v] += g`` over
  the active (b, v) pairs: index_add / gather work of size (active pairs) × H instead of two
  dense [B·L, V] × H matmuls. The backward runs in float32 (or the inputs' float64).

Ties. ``torch.max(dim)`` returns the first maximal position and its backward routes the whole
gradient there; the stock path takes that max over the *activated* values. Two logits that differ
can round to the same ``log1p`` value (log1p compresses), and then the stock path routes the
gradient to the first of them while the true max logit may sit later. ``ties="stock"`` (the
default) reproduces the stock choice exactly: for each (b, v) with a positive max it looks for
earlier positions whose activated value equals the activated max (a cheap comparison against a
window just below the max logit, then log1p on the few candidates) and routes to the first one.
``ties="logit"`` routes to the first position of the maximal logit (skips that search, whose
cost is small; a valid gradient as well, the one of the exact function, but it differs from the
stock path on those rare pairs, by one ulp of the max logit in the 1 / (1 + logit) factor and
by the position the gradient lands on). Exact ties of the logit itself go to the first position
in both modes, as ``torch.max`` does.

Plugging into sentence-transformers: :class:`FastSpladeTransformer` is a fill-mask
``Transformer`` whose forward runs the backbone and the head transform and then this pooling,
writing ``sentence_embedding`` as ``SpladePooling`` does; a ``SparseEncoder`` built on it alone
replaces the ``Transformer`` + ``SpladePooling`` pair. :func:`fast_splade_encoder` builds one
that shares the weights of a stock SparseEncoder, :func:`stock_splade_encoder` turns it back into
the standard two-module layout (for saving a standard artifact: a fast model saved as it is
names ``lsr.train.splade_head.FastSpladeTransformer`` in its modules.json, and sentence-transformers
then loads it only with ``trust_remote_code=True``).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from sentence_transformers import SparseEncoder
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.sparse_encoder.modules import SpladePooling
from torch import nn

Ties = Literal["stock", "logit"]
Activation = Literal["relu", "log1p_relu"]

# Elements of one [B, L, n] logits chunk (float32: 4 bytes each): 4 Mi elements = 16 MiB.
DEFAULT_CHUNK_ELEMENTS = 1 << 22
# Chunks are whole multiples of this many vocabulary columns. A GEMM's bits depend on its shape
# (the kernel picked for a narrow or ragged block of columns accumulates in another order): with
# 64·k columns per chunk the chunked logits equal the unchunked matmul's bit for bit (checked on
# x86 oneDNN/MKL for H = 8 and 128, 1 and 2 threads); 1, 5, 16 or 32 columns differ by an ulp.
COLUMN_BLOCK = 64
# Active (b, v) pairs handled per index_add in the backward (each gathers an H-wide row).
BACKWARD_BLOCK = 1 << 15


def auto_chunk_size(
    batch: int, length: int, vocab: int, elements: int = DEFAULT_CHUNK_ELEMENTS
) -> int:
    """Vocabulary columns per chunk so that one chunk holds about ``elements`` logits (a multiple
    of :data:`COLUMN_BLOCK`, at least one block)."""
    n = (elements // max(1, batch * length)) // COLUMN_BLOCK * COLUMN_BLOCK
    return min(max(COLUMN_BLOCK, n), -(-vocab // COLUMN_BLOCK) * COLUMN_BLOCK)


def _activate(x: torch.Tensor, activation: Activation) -> torch.Tensor:
    """SpladePooling's activation on the max logit: log1p(relu(x)) [then log1p again]."""
    y = torch.log1p(torch.relu(x))
    if activation == "log1p_relu":
        y = torch.log1p(y)
    return y


def _stock_first_positions(
    logits: torch.Tensor, best: torch.Tensor, pos: torch.Tensor, activation: Activation
) -> None:
    """Move ``pos`` (the first position of the max logit, per (b, v) of a chunk) to the first
    position whose *activated* value equals the activated max, the one the stock path picks.

    ``logits`` is the chunk's masked logits [B, L, n]; ``best`` / ``pos`` its max and argmax [B, n]
    (updated in place: ``best`` becomes the logit at the chosen position, whose activated value is
    the same, so that the backward's 1 / (1 + logit) factor is the stock one too).

    A logit x < m can round to the same activated value as the max m only if
    f(m) - f(x) < 2 ulp(f(m)) <= 2·eps·f(m) (each value faithfully rounded), and since f is
    concave, f(m) - f(x) >= (m - x)·f'(m): so m - x <= 2·eps·f(m) / f'(m). A window twice that
    wide is searched in the logits of the active (b, v) pairs only (a gather of [K, L], K the
    pairs with a positive max), and f is evaluated on the few candidates."""
    top = _activate(best, activation)
    b, j = (top > 0).nonzero(as_tuple=True)
    if b.numel() == 0:
        return
    m = best[b, j].float()
    inv_slope = m + 1  # 1 / f'(m) for log1p(relu(m)), m > 0
    if activation == "log1p_relu":
        inv_slope = inv_slope * (torch.log1p(m) + 1)
    window = (4 * torch.finfo(logits.dtype).eps) * top[b, j].float() * inv_slope
    column = logits[b, :, j]  # [K, L]: the logits of the active pairs only
    low = (m - window).to(logits.dtype).unsqueeze(1)
    positions = torch.arange(column.shape[1], device=column.device).unsqueeze(0)
    near = (column >= low) & (column < best[b, j].unsqueeze(1))
    near &= positions < pos[b, j].unsqueeze(1)  # only earlier positions can take the max over
    k, ll = near.nonzero(as_tuple=True)
    if k.numel() == 0:
        return
    tied = _activate(column[k, ll], activation) == top[b[k], j[k]]
    k, ll = k[tied], ll[tied]
    if k.numel():
        b, j = b[k], j[k]
        pos.view(-1).scatter_reduce_(0, b * pos.shape[1] + j, ll, reduce="amin")
        # the logit at the chosen position (same activated value): the backward divides by it
        best[b, j] = logits[b, pos[b, j], j]


class SpladeMaxPool(torch.autograd.Function):
    """``out[b, v] = max_l mask[b, l] · act(hidden[b, l] · weight[v] + bias[v])`` with
    ``act = log1p∘relu`` (or ``log1p∘log1p∘relu``), computed in vocabulary chunks with a sparse
    backward. Use through :func:`splade_max_pool`."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        attention_mask: torch.Tensor,
        chunk_size: int | None,
        activation: Activation,
        ties: Ties,
    ) -> torch.Tensor:
        batch, length, _ = hidden.shape
        vocab = weight.shape[0]
        n = chunk_size or auto_chunk_size(batch, length, vocab)
        n = -(-n // COLUMN_BLOCK) * COLUMN_BLOCK  # whole blocks: same bits as one matmul
        drop = ~attention_mask.bool().unsqueeze(-1)  # [B, L, 1], True where padded
        padded = bool(drop.any())
        best_parts, pos_parts = [], []
        for start in range(0, vocab, n):
            cols = slice(start, min(vocab, start + n))
            logits = F.linear(hidden, weight[cols], None if bias is None else bias[cols])
            if padded:
                logits.masked_fill_(drop, float("-inf"))
            best, pos = torch.max(logits, dim=1)
            if ties == "stock":
                _stock_first_positions(logits, best, pos, activation)
            best_parts.append(best)
            pos_parts.append(pos.to(torch.int32))
            del logits
        best = torch.cat(best_parts, dim=1)
        pos = torch.cat(pos_parts, dim=1)
        out = _activate(best, activation)
        ctx.save_for_backward(hidden, weight, bias, best, pos)
        ctx.activation = activation
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, best, pos = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        work = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        batch, length, width = hidden.shape
        # Chain rule through the activation, in the order the stock path's autograd runs it:
        # log1p backward is grad / (input + 1); relu's gradient is 0 where the max logit <= 0.
        g = grad_out
        if ctx.activation == "log1p_relu":
            g = g / (torch.log1p(torch.relu(best)) + 1)
        g = g / (torch.relu(best) + 1)
        g = g.to(work)
        active = (best > 0) & (g != 0)
        b_idx, v_idx = active.nonzero(as_tuple=True)
        gv = g[b_idx, v_idx]
        rows = b_idx * length + pos[b_idx, v_idx].long()
        w = weight.to(work) if weight.dtype != work else weight
        h = hidden.reshape(batch * length, width)
        h = h.to(work) if h.dtype != work else h
        grad_h = None
        if need_h:
            grad_h = torch.zeros(batch * length, width, dtype=work, device=hidden.device)
        grad_w = torch.zeros_like(w) if need_w else None
        for s in range(0, gv.numel(), BACKWARD_BLOCK):
            blk = slice(s, s + BACKWARD_BLOCK)
            gb = gv[blk].unsqueeze(1)
            if grad_h is not None:
                grad_h.index_add_(0, rows[blk], w[v_idx[blk]] * gb)
            if grad_w is not None:
                grad_w.index_add_(0, v_idx[blk], h[rows[blk]] * gb)
        grad_bias = None
        if need_b and bias is not None:
            grad_bias = torch.where(active, g, 0).sum(0).to(bias.dtype)
        if grad_h is not None:
            grad_h = grad_h.view(batch, length, width).to(hidden.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, grad_bias, None, None, None, None


def splade_max_pool(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    attention_mask: torch.Tensor,
    *,
    chunk_size: int | None = None,
    activation: Activation = "relu",
    ties: Ties = "stock",
) -> torch.Tensor:
    """SPLADE max pooling [B, V] from transformed hidden states [B, L, H], decoder weight [V, H],
    bias [V] and attention mask [B, L], without materialising [B, L, V] (see the module doc).

    ``chunk_size``: vocabulary columns per chunk, rounded up to a multiple of
    :data:`COLUMN_BLOCK`; None: :func:`auto_chunk_size` (about 16 MiB of float32 logits)."""
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [batch, length, hidden], got {tuple(hidden.shape)}")
    if activation not in ("relu", "log1p_relu"):
        raise ValueError(f"activation must be 'relu' or 'log1p_relu', got {activation!r}")
    if ties not in ("stock", "logit"):
        raise ValueError(f"ties must be 'stock' or 'logit', got {ties!r}")
    return SpladeMaxPool.apply(hidden, weight, bias, attention_mask, chunk_size, activation, ties)


# -- sentence-transformers plug-in ----------------------------------------------------------------
def head_parts(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(transform, decoder) of a BERT-style masked-LM head: ``cls.predictions.transform`` (dense
    + activation + LayerNorm) and the decoder Linear [V, H] (its bias is the head's bias)."""
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    transform = getattr(predictions, "transform", None)
    decoder = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(transform, nn.Module) or not isinstance(decoder, nn.Linear):
        raise NotImplementedError(
            "the fast SPLADE head supports BERT-style masked-LM heads (cls.predictions.transform "
            f"+ decoder); got {type(model).__name__}"
        )
    return transform, decoder


def fast_splade_pool(
    model: nn.Module,
    last_hidden_state: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    chunk_size: int | None = None,
    activation: Activation = "relu",
    ties: Ties = "stock",
) -> torch.Tensor:
    """SPLADE max pooling [B, V] of a masked-LM ``model`` (e.g. ``BertForMaskedLM``) from its
    backbone's ``last_hidden_state`` [B, L, H]: the head transform, then :func:`splade_max_pool`
    with the decoder. Equals ``SpladePooling(max)`` over ``model(...).logits``."""
    transform, decoder = head_parts(model)
    return splade_max_pool(
        transform(last_hidden_state),
        decoder.weight,
        decoder.bias,
        attention_mask,
        chunk_size=chunk_size,
        activation=activation,
        ties=ties,
    )


class FastSpladeTransformer(Transformer):
    """A fill-mask ``Transformer`` that also pools: backbone, head transform, then the chunked max
    pooling, written to ``features["sentence_embedding"]`` as ``SpladePooling("max")`` does. A
    ``SparseEncoder`` whose only module is this one replaces the ``Transformer`` +
    ``SpladePooling`` pair, with the same parameters (names and tied weights included). Padded
    text inputs only (no flattened / unpadded batches)."""

    def __init__(
        self,
        model_name_or_path: str,
        *,
        chunk_size: int | None = None,
        activation_function: Activation = "relu",
        ties: Ties = "stock",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("transformer_task", "fill-mask")
        super().__init__(model_name_or_path, **kwargs)
        self._setup_fast_head(chunk_size, activation_function, ties)

    @classmethod
    def from_transformer(
        cls,
        transformer: Transformer,
        *,
        chunk_size: int | None = None,
        activation_function: Activation = "relu",
        ties: Ties = "stock",
    ) -> FastSpladeTransformer:
        """A fast view of a loaded fill-mask ``Transformer``: it shares the model, processor and
        settings (no copy, no reload)."""
        if transformer.transformer_task != "fill-mask":
            raise ValueError(f"need a fill-mask Transformer, got {transformer.transformer_task!r}")
        fast = cls.__new__(cls)
        fast.__dict__.update(transformer.__dict__)
        for slot in ("_parameters", "_buffers", "_modules"):
            setattr(fast, slot, dict(getattr(transformer, slot)))
        fast._setup_fast_head(chunk_size, activation_function, ties)
        return fast

    def to_transformer(self) -> Transformer:
        """The stock ``Transformer`` view of the same model (for :func:`stock_splade_encoder`)."""
        stock = Transformer.__new__(Transformer)
        stock.__dict__.update(self.__dict__)
        for slot in ("_parameters", "_buffers", "_modules"):
            setattr(stock, slot, dict(getattr(self, slot)))
        for key in ("chunk_size", "activation_function", "ties", "_base_params"):
            stock.__dict__.pop(key, None)
        return stock

    def _setup_fast_head(
        self, chunk_size: int | None, activation_function: Activation, ties: Ties
    ) -> None:
        if activation_function not in ("relu", "log1p_relu"):
            raise ValueError(
                f"activation_function must be 'relu' or 'log1p_relu', got {activation_function!r}"
            )
        if ties not in ("stock", "logit"):
            raise ValueError(f"ties must be 'stock' or 'logit', got {ties!r}")
        head_parts(self.model)  # fails early on an unsupported architecture
        self.chunk_size = chunk_size
        self.activation_function = activation_function
        self.ties = ties
        self._base_params = set(inspect.signature(self.model.base_model.forward).parameters)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if "cu_seq_lens_q" in features:
            raise ValueError("FastSpladeTransformer takes padded inputs (set unpad_inputs=False)")
        if features.get("modality", "text") != "text":
            raise ValueError(f"FastSpladeTransformer encodes text, got {features['modality']!r}")
        inputs = {k: v for k, v in {**features, **kwargs}.items() if k in self._base_params}
        inputs["return_dict"] = True
        hidden = self.model.base_model(**inputs).last_hidden_state
        features["sentence_embedding"] = fast_splade_pool(
            self.model,
            hidden,
            features["attention_mask"],
            chunk_size=self.chunk_size,
            activation=self.activation_function,
            ties=self.ties,
        )
        return features

    def get_embedding_dimension(self) -> int:
        return head_parts(self.model)[1].out_features

    def __repr__(self) -> str:
        return (
            f"FastSpladeTransformer(chunk_size={self.chunk_size}, activation_function="
            f"{self.activation_function!r}, ties={self.ties!r}, "
            f"architecture={self.model.__class__.__name__})"
        )


def fast_splade_encoder(
    model: SparseEncoder, *, chunk_size: int | None = None, ties: Ties = "stock"
) -> SparseEncoder:
    """A SparseEncoder equal to ``model`` (fill-mask ``Transformer`` + ``SpladePooling("max")``)
    that shares its weights but pools with the fast head. Train it with any sentence-transformers
    sparse loss; save with :func:`stock_splade_encoder` for a standard artifact."""
    modules = list(model)
    if (
        len(modules) != 2
        or not isinstance(modules[0], Transformer)
        or not isinstance(modules[1], SpladePooling)
        or modules[1].pooling_strategy != "max"
    ):
        raise ValueError(
            "expected [fill-mask Transformer, SpladePooling('max')], got " + str(model)
        )
    fast = FastSpladeTransformer.from_transformer(
        modules[0],
        chunk_size=chunk_size,
        activation_function=modules[1].activation_function,
        ties=ties,
    )
    return _encoder_like(model, [fast])


def stock_splade_encoder(model: SparseEncoder) -> SparseEncoder:
    """The standard ``Transformer`` + ``SpladePooling("max")`` SparseEncoder over the same weights
    as a :func:`fast_splade_encoder` model (what to save and serve)."""
    fast = model[0]
    if len(model) != 1 or not isinstance(fast, FastSpladeTransformer):
        raise ValueError("expected a SparseEncoder built by fast_splade_encoder")
    pooling = SpladePooling("max", activation_function=fast.activation_function)
    pooling.embedding_dimension = fast.get_embedding_dimension()
    return _encoder_like(model, [fast.to_transformer(), pooling])


def _encoder_like(model: SparseEncoder, modules: list[nn.Module]) -> SparseEncoder:
    out = SparseEncoder(
        modules=modules,
        device=str(model.device),
        prompts=model.prompts,
        default_prompt_name=model.default_prompt_name,
        similarity_fn_name=model.similarity_fn_name,
        max_active_dims=model.max_active_dims,
    )
    out.train(model.training)
    return out
