"""``family="mlm"``: SPLADE over a (masked or causal) LM's vocabulary logits.

``mlm``: ``pool_t log1p(relu(logits[t]))`` over the vocabulary, max or sum over positions, with
the special-token *columns* zeroed. The reference vectors of splade-tiny (``special_tokens:
"zeroed"``) keep the [CLS]/[SEP] *positions* in the pooling: excluding them moves weights by up
to 0.2, keeping them matches to the 4 decimals stored; the zeroed columns are never positive for
that model. So windows pool every real position, special ones included, and the columns of the
tokenizer's special tokens are removed from the output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from lsr.encoders.backbone import Backbone
from lsr.encoders.config import SideConfig
from lsr.encoders.device import cpu_has_native_bf16
from lsr.encoders.projection import pool_reference, pool_screened, pool_tiled
from lsr.encoders.transformer_side import TransformerSide
from lsr.encoders.windows import Windows
from lsr.errors import InputError

logger = logging.getLogger(__name__)

Projection = Literal["auto", "screened", "tiled", "reference"]


class SpladeSide(TransformerSide):
    """``family="mlm"``: SPLADE over the LM's vocabulary logits (see module docstring).

    ``projection``: ``screened`` (CPU float32 with native bf16: bf16 bound, exact float32
    recompute of candidate terms), ``tiled`` (exact, vocabulary blocks; GPU), ``reference``
    (full logits, the plain computation), ``auto`` (screened where it applies, else tiled).
    Every path but ``reference`` needs ``LMHeadSplit.check`` to pass at load (it falls back).
    """

    def __init__(
        self,
        backbone: Backbone,
        config: SideConfig,
        *,
        echo: bool = False,
        projection: Projection = "auto",
    ) -> None:
        if not backbone.is_lm:
            raise InputError(f"{backbone.name!r}: family 'mlm' needs a model with an LM head")
        self.pool_specials = not echo
        super().__init__(backbone, config, echo=echo)
        self.projection = self._choose(projection)

    def _choose(self, projection: Projection) -> str:
        if projection == "reference":
            return projection
        backbone = self.backbone
        try:
            head = backbone.head()
            probe = torch.tensor([backbone.prefix + [backbone.pad_id] * 3 + backbone.suffix])
            probe = probe.to(backbone.device)
            error = head.check(input_ids=probe, attention_mask=torch.ones_like(probe))
        except (TypeError, RuntimeError) as exc:
            logger.warning(
                "%s: cannot split the LM head (%s); using full logits", backbone.name, exc
            )
            return "reference"
        if not error <= 1e-3:
            logger.warning(
                "%s: the LM head does more than one linear projection (|diff| %.3g); "
                "using full logits",
                backbone.name,
                error,
            )
            return "reference"
        native_bf16 = backbone.device.type == "cpu" and cpu_has_native_bf16()
        if projection == "auto":
            cpu_fp32 = backbone.device.type == "cpu" and backbone.dtype == torch.float32
            return "screened" if cpu_fp32 and native_bf16 else "tiled"
        return projection

    def _score(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, attention, pool = self._tensors(windows, members)
        inputs = {"input_ids": ids, "attention_mask": attention, **self.backbone.forward_kwargs()}
        n_cols = len(self.vocab)
        pooling = self.config.pooling
        if self.projection == "reference":
            logits = self.backbone.model(**inputs).logits[..., :n_cols]
            return _dense_triplets(pool_reference(logits, pool, pooling))
        head = self.backbone.head()
        hidden = head.hidden(**inputs)
        weight, bias = head.weight[:n_cols], head.bias[:n_cols]
        if self.projection == "tiled":
            return _dense_triplets(pool_tiled(hidden, pool, weight, bias, pooling))
        w_bf16, norms = head.screen_weights()
        keep = torch.from_numpy(self.keep_cols).to(hidden.device)
        r, c, v = pool_screened(
            hidden.float(), pool, weight.float(), bias.float(), w_bf16[:n_cols], norms[:n_cols],
            pooling, keep,
        )  # fmt: skip
        return r.cpu().numpy(), c.cpu().numpy(), v.cpu().numpy()


def _dense_triplets(dense: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = torch.nonzero(dense > 0, as_tuple=True)
    return rows.cpu().numpy(), cols.cpu().numpy(), dense[rows, cols].float().cpu().numpy()
