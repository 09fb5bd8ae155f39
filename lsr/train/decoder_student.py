"""Decoder-only SPLADE students (a causal LM's ``lm_head`` logits, ``log1p(relu(.))``, max over the
pooled positions) with echo embeddings, and LoRA (``student.lora``) through peft.

Echo (lsr's :mod:`lsr.encoders.backbone`): a window is ``prefix + x + x + suffix`` and only the
second copy is pooled, so every pooled token has attended to the whole text. The pooling is the
chunked head of :mod:`lsr.train.splade_head` over the decoder's last hidden states and the
``lm_head`` weight (no [batch, length, vocabulary] tensor); a head that is not one Linear falls
back to full logits.

LoRA: :func:`apply_lora` wraps the backbone with ``peft.get_peft_model``, which freezes every base
weight (``lm_head`` included); only the adapters train. Saving merges a copy of the adapters into
the weights (``merge_and_unload``), so the saved checkpoint is a plain causal LM that lsr (and
transformers) load without peft. Resuming a LoRA run from a trainer checkpoint is not supported
(checkpoints hold merged weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsr.train.splade_head import splade_max_pool
from lsr.train.students import StudentModule

__all__ = ["CausalSpladeStudent", "apply_lora", "trainable_names"]


class CausalSpladeStudent(StudentModule):
    """A causal LM as a SPLADE encoder (echo on by default; without echo every position,
    special ones included, is pooled, as lsr's mlm side does)."""

    pool_specials = True

    @classmethod
    def from_pretrained(cls, path: str | Path, **settings: Any) -> CausalSpladeStudent:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path))
        settings.setdefault("echo", True)
        return cls(model, tokenizer, **settings)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        lm = self.inner_model()
        head = lm.get_output_embeddings()
        pool = features["pool_mask"]
        if isinstance(head, nn.Linear):
            hidden = lm.base_model(**self.model_kwargs(features)).last_hidden_state
            weight = head.weight[: self.n_cols]
            bias = head.bias[: self.n_cols] if head.bias is not None else None
            pooled = splade_max_pool(hidden, weight, bias, pool)
        else:  # full logits: [B, L, V]
            logits = lm(**self.model_kwargs(features)).logits[..., : self.n_cols].float()
            logits = logits.masked_fill(~pool.unsqueeze(-1), float("-inf"))
            pooled = torch.log1p(torch.relu(logits.max(dim=1).values))
        features["sentence_embedding"] = pooled * self.keep_cols
        return features


def apply_lora(module: StudentModule, lora: Any) -> None:
    """Wrap ``module.model`` with LoRA adapters (``lora``: a :class:`LoraSettings`); every base
    weight is frozen. Other parameters of ``module`` (an mlp head) stay trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules else None,
        bias="none",
    )
    module.model = get_peft_model(module.model, config)


def trainable_names(module: nn.Module) -> list[str]:
    """Names of the parameters that require gradients."""
    return [n for n, p in module.named_parameters() if p.requires_grad]
