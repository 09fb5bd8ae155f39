"""uniCOIL-style students (``student.family: mlp``): ``relu(Linear(hidden, 1)(h_t))`` per input
token, max-pooled per token id into the vocabulary (no expansion), over a fine-tuned backbone.

The same computation as lsr's ``mlp`` family (:class:`lsr.encoders.mlp_side.MlpSide`): special
positions are not pooled, special columns are zeroed, and the head is saved where ``MlpSide``
loads it from, ``lsr_mlp_head.safetensors`` (``weight`` [1, hidden], ``bias`` [1]) next to the
backbone's checkpoint (see :mod:`lsr.train.students` for the layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsr.train.students import StudentModule, scatter_max

__all__ = ["MLP_HEAD_FILE", "MlpStudent"]

MLP_HEAD_FILE = "lsr_mlp_head.safetensors"  # what lsr.encoders.mlp_side reads


class MlpStudent(StudentModule):
    """Backbone (``AutoModel``: hidden states) + ``Linear(hidden, 1)`` + ReLU, max per term."""

    def __init__(self, model: Any, tokenizer: Any, head: nn.Linear | None = None, **kw: Any):
        super().__init__(model, tokenizer, **kw)
        hidden = int(self.base_config().hidden_size)
        if head is None:
            head = nn.Linear(hidden, 1)
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():  # lsr's MlpSide initialises a missing head the same way
                head.weight.normal_(0.0, 0.02, generator=generator)
                head.bias.zero_()
        self.head = head

    @classmethod
    def from_pretrained(cls, path: str | Path, **settings: Any) -> MlpStudent:
        """The backbone of any checkpoint (an MLM's encoder, a causal LM's decoder) and the head
        in ``lsr_mlp_head.safetensors`` when the directory has one (else a fresh head)."""
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModel.from_pretrained(str(path))
        head = None
        file = Path(path) / MLP_HEAD_FILE
        if file.is_file():
            from safetensors.torch import load_file

            state = load_file(str(file))
            head = nn.Linear(state["weight"].shape[1], 1)
            head.load_state_dict({k: state[k] for k in ("weight", "bias")})
        return cls(model, tokenizer, head, **settings)

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        hidden = self.inner_model()(**self.model_kwargs(features)).last_hidden_state
        weights = torch.relu(self.head(hidden)).squeeze(-1).float()
        pooled = scatter_max(weights, features["input_ids"], features["pool_mask"], self.n_cols)
        features["sentence_embedding"] = pooled * self.keep_cols
        return features

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any):
        from safetensors.torch import save_file

        super().save(output_path, safe_serialization=safe_serialization)
        state = {
            k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()
        }
        save_file(state, str(Path(output_path) / MLP_HEAD_FILE), metadata={"activation": "relu"})
