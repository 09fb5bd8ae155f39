"""``mlp``: one weight per input token, ``relu(Linear(hidden, 1)(h_t))`` (ReLU as in uniCOIL: a 0
drops the token, softplus would keep every token), a term's weight is the max (or sum) over its
positions; special-token positions are not scored. The head loads from ``lsr_mlp_head.safetensors``
(tensors ``weight`` [1, hidden] and ``bias`` [1]) in the model directory; without it a seeded
random head is created, a warning is logged and ``side.random_head`` is True.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lsr.encoders.backbone import Backbone, find_model_file
from lsr.encoders.config import SideConfig
from lsr.encoders.transformer_side import TransformerSide
from lsr.encoders.windows import Windows, reduce_coo
from lsr.errors import InputError

logger = logging.getLogger(__name__)

MLP_HEAD_FILE = "lsr_mlp_head.safetensors"


class MlpSide(TransformerSide):
    """``family="mlp"``: ``relu(Linear(hidden, 1)(h_t))`` per input token, no expansion."""

    def __init__(self, backbone: Backbone, config: SideConfig, *, echo: bool = False) -> None:
        if backbone.model is None:
            raise InputError(f"{backbone.name!r}: family 'mlp' needs a model")
        super().__init__(backbone, config, echo=echo)
        hidden = int(backbone.base().config.hidden_size)
        self.head = torch.nn.Linear(hidden, 1)
        self.head_path = find_model_file(backbone.name, MLP_HEAD_FILE)
        self.random_head = self.head_path is None
        if self.head_path is not None:
            from safetensors.torch import load_file

            try:
                state = load_file(self.head_path)
                self.head.load_state_dict({k: state[k] for k in ("weight", "bias")})
            except (OSError, KeyError, RuntimeError, ValueError) as exc:
                raise InputError(f"bad MLP head: {exc}", self.head_path) from None
        else:
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                self.head.weight.normal_(0.0, 0.02, generator=generator)
                self.head.bias.zero_()
            logger.warning(
                "%s: no %s; the mlp head is RANDOMLY INITIALISED (train it before use)",
                backbone.name,
                MLP_HEAD_FILE,
            )
        self.stats.extra["random_head"] = self.random_head
        self.head.to(device=backbone.device, dtype=backbone.dtype).eval()

    def save_head(self, directory: str | Path) -> Path:
        """Write the head where ``MlpSide`` looks for it: ``directory/lsr_mlp_head.safetensors``."""
        from safetensors.torch import save_file

        path = Path(directory) / MLP_HEAD_FILE
        state = {
            k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()
        }
        save_file(state, str(path), metadata={"activation": "relu"})
        return path

    def token_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [...] float32 weights."""
        return torch.relu(self.head(hidden)).squeeze(-1).float()

    def _score(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, attention, pool = self._tensors(windows, members)
        base = self.backbone.base()
        hidden = base(
            input_ids=ids, attention_mask=attention, **self.backbone.forward_kwargs()
        ).last_hidden_state
        weights = self.token_weights(hidden[pool]).cpu().numpy()
        rows = torch.nonzero(pool, as_tuple=True)[0].cpu().numpy()
        terms = ids[pool].cpu().numpy()
        ok = terms < len(self.vocab)
        shape = (len(members), len(self.vocab))
        coo = reduce_coo(rows[ok], terms[ok], weights[ok], shape, self.config.pooling).tocoo()
        return coo.row, coo.col, coo.data
