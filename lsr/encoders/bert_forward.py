"""BERT and DistilBERT masked LMs in plain torch, from ``config.json`` and ``model.safetensors``.

A search process needs only the query side, and importing transformers' BERT code costs seconds
(torch._dynamo, torch.distributed.tensor, sympy). :func:`load_mlm` reads the checkpoint itself
and :class:`PlainMlm` runs embeddings → layers → MLM transform → decoder with the ops transformers
5 runs for ``BertForMaskedLM`` / ``DistilBertForMaskedLM`` with sdpa attention, in the same order
(``F.embedding`` sums, ``F.layer_norm`` with the model's eps, ``F.linear``, exact ``F.gelu``,
``F.scaled_dot_product_attention`` with ``scale=head_dim**-0.5``, no mask without padding and a
[B, 1, L, L] boolean one with it), so the logits are the same bit for bit
(tests/test_bert_forward.py). The decoder is an ``nn.Linear`` that ``get_output_embeddings()``
returns and the forward pass calls last: :class:`~lsr.encoders.projection.LMHeadSplit` splits it
as it splits a transformers model, so SPLADE's projection and pooling code is shared.

What this module does not reproduce exactly raises ValueError with the reason (callers then load
the model with transformers): other model types or activations, relative or sinusoidal
positions, decoders, chunked feed-forward, another attention implementation, missing, ambiguous
or misshapen weights, sharded or ``.bin`` checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

MODEL_TYPES = ("bert", "distilbert")
_MUST_BE_OFF = ("is_decoder", "add_cross_attention", "is_encoder_decoder", "output_attentions")
_BERT_LAYER = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "o": "attention.output.dense", "norm1": "attention.output.LayerNorm",
    "ff1": "intermediate.dense", "ff2": "output.dense", "norm2": "output.LayerNorm",
}  # fmt: skip
_DISTILBERT_LAYER = {
    "q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
    "o": "attention.out_lin", "norm1": "sa_layer_norm", "ff1": "ffn.lin1", "ff2": "ffn.lin2",
    "norm2": "output_layer_norm",
}  # fmt: skip


@dataclass(frozen=True)
class MlmShape:
    """What the forward pass needs from ``config.json``."""

    kind: str  # "bert" | "distilbert"
    vocab: int
    hidden: int
    heads: int
    layers: int
    ffn: int
    positions: int
    eps: float
    tied: bool  # the decoder's weight is the word embeddings


def mlm_shape(config: dict[str, Any]) -> MlmShape:
    """The shape of a BERT/DistilBERT MLM; ValueError for a config this module does not run."""
    kind = config.get("model_type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"model_type {kind!r} is not one of {MODEL_TYPES}")
    for key in _MUST_BE_OFF:
        if config.get(key):
            raise ValueError(f"{key} is set")
    if any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or ()):
        raise ValueError("a causal LM architecture")
    for key in ("chunk_size_feed_forward", "pruned_heads", "quantization_config"):
        if config.get(key):
            raise ValueError(f"{key} is set")
    attention = config.get("attn_implementation", config.get("_attn_implementation"))
    if attention not in (None, "sdpa"):
        raise ValueError(f"attention implementation {attention!r}")
    bert = kind == "bert"
    activation = config.get("hidden_act" if bert else "activation", "gelu")
    if activation != "gelu":
        raise ValueError(f"activation {activation!r} (only exact 'gelu')")
    if bert and config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {config['position_embedding_type']!r}")
    if not bert and config.get("sinusoidal_pos_embds"):
        raise ValueError("sinusoidal position embeddings")
    if bert:
        names = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
    else:
        names = ("dim", "n_heads", "n_layers", "hidden_dim")
    defaults = (768, 12, 12 if bert else 6, 3072)
    hidden, heads, layers, ffn = (
        int(config.get(n, d)) for n, d in zip(names, defaults, strict=True)
    )
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
    return MlmShape(
        kind=kind,
        vocab=int(config.get("vocab_size", 30522)),
        hidden=hidden,
        heads=heads,
        layers=layers,
        ffn=ffn,
        positions=int(config.get("max_position_embeddings", 512)),
        eps=float(config.get("layer_norm_eps", 1e-12)) if bert else 1e-12,
        tied=bool(config.get("tie_word_embeddings", True)),
    )


def _layout(shape: MlmShape) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Our name of every tensor -> (its checkpoint key, its shape); -1: any size."""
    H, V, I = shape.hidden, shape.vocab, shape.ffn  # noqa: E741
    out: dict[str, tuple[str, tuple[int, ...]]] = {}

    def linear(name: str, key: str, rows: int, cols: int) -> None:
        out[name + ".weight"] = (key + ".weight", (rows, cols))
        out[name + ".bias"] = (key + ".bias", (rows,))

    def norm(name: str, key: str) -> None:
        out[name + ".weight"] = (key + ".weight", (H,))
        out[name + ".bias"] = (key + ".bias", (H,))

    if shape.kind == "bert":
        emb, layer, parts = "bert.embeddings.", "bert.encoder.layer.", _BERT_LAYER
        head = "cls.predictions."
        out["type"] = (emb + "token_type_embeddings.weight", (-1, H))
        linear("transform", head + "transform.dense", H, H)
        norm("head_norm", head + "transform.LayerNorm")
        # tied (the default), the decoder's bias is ``cls.predictions.bias``; untied, its own
        out["dec.bias"] = (head + ("bias" if shape.tied else "decoder.bias"), (V,))
        decoder = head + "decoder.weight"
    else:
        emb, layer = "distilbert.embeddings.", "distilbert.transformer.layer."
        parts = _DISTILBERT_LAYER
        linear("transform", "vocab_transform", H, H)
        norm("head_norm", "vocab_layer_norm")
        out["dec.bias"] = ("vocab_projector.bias", (V,))
        decoder = "vocab_projector.weight"
    out["word"] = (emb + "word_embeddings.weight", (V, H))
    out["pos"] = (emb + "position_embeddings.weight", (shape.positions, H))
    norm("emb_norm", emb + "LayerNorm")
    if not shape.tied:
        out["dec.weight"] = (decoder, (V, H))
    for i in range(shape.layers):
        at = f"{layer}{i}."
        for name in ("q", "k", "v", "o"):
            linear(f"{i}.{name}", at + parts[name], H, H)
        linear(f"{i}.ff1", at + parts["ff1"], I, H)
        linear(f"{i}.ff2", at + parts["ff2"], H, I)
        norm(f"{i}.norm1", at + parts["norm1"])
        norm(f"{i}.norm2", at + parts["norm2"])
    return out


def _pick(stored: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """``stored[key]``, under its legacy name too (``LayerNorm.gamma``/``beta``, which
    transformers renames); ValueError when absent or stored under both names."""
    legacy = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"
    )
    found = [stored[k] for k in dict.fromkeys((key, legacy)) if k in stored]
    if len(found) != 1:
        raise ValueError(f"{key}: {'missing' if not found else 'stored twice'}")
    return found[0]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


def load_weights(directory: Path, shape: MlmShape) -> dict[str, torch.Tensor]:
    """Every tensor of the MLM by our names, as stored (ValueError for a layout we do not read)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / "model.safetensors"
    if not path.is_file():
        raise ValueError("no model.safetensors (sharded and .bin checkpoints need transformers)")
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read {path.name}: {exc}") from None
    weights: dict[str, torch.Tensor] = {}
    for name, (key, want) in _layout(shape).items():
        tensor = _pick(stored, key)
        have = tuple(tensor.shape)
        if len(want) != len(have) or any(w not in (-1, h) for w, h in zip(want, have, strict=True)):
            raise ValueError(f"{key}: shape {have}, expected {want}")
        weights[name] = tensor
    if shape.tied:  # transformers ties these; other values in the tied copies: unclear, refuse
        copies = {"vocab_projector.weight": weights["word"]}
        if shape.kind == "bert":
            copies = {"cls.predictions.decoder.weight": weights["word"]}
            copies["cls.predictions.decoder.bias"] = weights["dec.bias"]
        for key, source in copies.items():
            if key in stored and not _same(stored[key], source):
                raise ValueError(f"{key} differs from the tensor it is tied to")
    return weights


@dataclass
class MlmOutput:
    """What callers read from a forward pass (as from transformers' ``MaskedLMOutput``)."""

    logits: torch.Tensor


class PlainMlm(torch.nn.Module):
    """A BERT/DistilBERT masked LM for inference (see the module docstring).

    Weights are plain tensors where :func:`load_mlm` put them (``.to()`` moves only the decoder).
    """

    def __init__(self, shape: MlmShape, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.shape = shape
        self.head_dim = shape.hidden // shape.heads
        self.scaling = self.head_dim**-0.5  # as transformers computes it
        decoder = torch.nn.Linear(shape.hidden, shape.vocab, device="meta")  # no random init
        tied = weights.get("dec.weight", weights["word"])  # one tensor when tied
        decoder.weight = torch.nn.Parameter(tied, requires_grad=False)
        decoder.bias = torch.nn.Parameter(weights["dec.bias"], requires_grad=False)
        self.decoder = decoder
        self.w = {k: v for k, v in weights.items() if not k.startswith("dec.")}

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.decoder

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        w = self.w
        return F.layer_norm(
            x, (self.shape.hidden,), w[name + ".weight"], w[name + ".bias"], self.shape.eps
        )

    def _attention(self, x: torch.Tensor, i: int, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length = x.shape[:2]
        split = (batch, length, -1, self.head_dim)
        q = self._linear(x, f"{i}.q").view(split).transpose(1, 2)
        k = self._linear(x, f"{i}.k").view(split).transpose(1, 2)
        v = self._linear(x, f"{i}.v").view(split).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=0.0, scale=self.scaling, is_causal=False
        )
        out = out.reshape(batch, -1, length, self.head_dim).transpose(1, 2).contiguous()
        return out.reshape(batch, length, -1).contiguous()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> MlmOutput:
        w = self.w
        batch, length = input_ids.shape
        x = F.embedding(input_ids, w["word"])
        if "type" in w:  # BERT: token type 0 everywhere
            x = x + F.embedding(torch.zeros_like(input_ids), w["type"])
        x = self._norm(x + w["pos"][:length].unsqueeze(0), "emb_norm")
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keep = attention_mask.bool()[:, None, None, :]
            mask = keep.expand(batch, 1, length, length).contiguous()
        for i in range(self.shape.layers):
            x = self._norm(self._linear(self._attention(x, i, mask), f"{i}.o") + x, f"{i}.norm1")
            ffn = self._linear(F.gelu(self._linear(x, f"{i}.ff1")), f"{i}.ff2")
            x = self._norm(ffn + x, f"{i}.norm2")
        x = self._norm(F.gelu(self._linear(x, "transform")), "head_norm")
        return MlmOutput(self.decoder(x))


def load_mlm(
    directory: Path, config: dict[str, Any], device: torch.device, dtype: torch.dtype
) -> PlainMlm:
    """The MLM in ``directory`` on ``device`` in ``dtype`` (ValueError: use transformers)."""
    shape = mlm_shape(config)
    weights = load_weights(directory, shape)
    moved = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
    return PlainMlm(shape, moved).eval()
