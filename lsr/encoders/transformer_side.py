"""The common part of every model-backed side: tokenize, cut into windows, batch, pool.

Every side tokenizes without truncation and cuts each text into *windows* (passes): the text's
tokens between the tokenizer's own special tokens, at most ``max_length`` tokens per pass.
``stride=None`` keeps the first window and counts the text in ``stats.truncated``; otherwise
consecutive windows overlap by ``stride`` tokens, at most ``max_chunks`` of them (a text cut
there is counted too), and the window vectors are pooled per ``chunk_pooling`` (max, or mean
counting absent terms as 0). Windows are batched longest first with dynamic padding and the
vectors are returned in input order.

Subclasses score one batch of windows (:meth:`TransformerSide._score`): SPLADE
(:mod:`lsr.encoders.splade_side`), uniCOIL-style (:mod:`lsr.encoders.mlp_side`) and binary
(:mod:`lsr.encoders.binary_side`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lsr.encoders.backbone import Backbone
from lsr.encoders.base import SideEncoder
from lsr.encoders.config import SideConfig
from lsr.encoders.windows import Windows, pool_windows, reduce_coo, window_spans
from lsr.errors import InputError


class TransformerSide(SideEncoder):
    """Tokenize, cut into windows, batch by length, pool windows into texts (subclasses score)."""

    pool_specials = False  # pool special-token positions (mlm without echo: the reference does)

    def __init__(self, backbone: Backbone, config: SideConfig, *, echo: bool = False) -> None:
        super().__init__(backbone.vocab, config)
        self.backbone = backbone
        self.echo = echo
        room = config.max_length - backbone.n_special
        self.width = room // 2 if echo else room
        if self.width < 1:
            raise InputError(
                f"max_length {config.max_length} leaves no room for text next to "
                f"{backbone.n_special} special tokens"
                + (" (echo doubles the text)" if echo else "")
            )
        if config.stride is not None and config.stride >= self.width:
            raise InputError(
                f"stride {config.stride} must be smaller than the {self.width} text tokens "
                "of a window"
            )
        limit = backbone.max_positions
        if backbone.model is not None and limit is not None and config.max_length > limit:
            raise InputError(
                f"max_length {config.max_length} exceeds the model's {limit} positions"
            )
        n_cols = len(self.vocab)
        keep = np.ones(n_cols, dtype=bool)
        keep[backbone.special_ids] = False
        self.keep_cols = keep

    # windows -------------------------------------------------------------------------------
    def windows(self, texts: Sequence[str]) -> Windows:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        tok = self.backbone.tokenizer
        encoded = tok(
            list(texts),
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        prefix, suffix = self.backbone.prefix, self.backbone.suffix
        out = Windows()
        cfg = self.config
        for i, tokens in enumerate(encoded):
            spans, lost = window_spans(len(tokens), self.width, cfg.stride, cfg.max_chunks)
            self.stats.truncated += int(lost)
            for start, stop in spans:
                part = list(tokens[start:stop])
                n = len(part)
                if self.echo:
                    ids = prefix + part + part + suffix
                    lo, hi = len(prefix) + n, len(prefix) + 2 * n
                elif self.pool_specials:
                    ids = prefix + part + suffix
                    lo, hi = 0, len(ids)
                else:
                    ids = prefix + part + suffix
                    lo, hi = len(prefix), len(prefix) + n
                out.text.append(i)
                out.ids.append(ids)
                out.lo.append(lo)
                out.hi.append(hi)
        self.stats.chunks += len(out)
        self.stats.tokens += sum(len(ids) for ids in out.ids)
        return out

    def _tensors(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask and pooled-position mask, right-padded to the longest."""
        length = max(len(windows.ids[m]) for m in members)
        ids = torch.full((len(members), length), self.backbone.pad_id, dtype=torch.long)
        attention = torch.zeros((len(members), length), dtype=torch.long)
        pool = torch.zeros((len(members), length), dtype=torch.bool)
        for row, m in enumerate(members):
            seq = windows.ids[m]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
            pool[row, windows.lo[m] : windows.hi[m]] = True
        dev = self.backbone.device
        return ids.to(dev), attention.to(dev), pool.to(dev)

    # encoding ------------------------------------------------------------------------------
    def _score(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row in ``members``, term id, weight) of each window's vector, pooled over positions."""
        raise NotImplementedError

    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        windows = self.windows(texts)
        order = sorted(range(len(windows)), key=lambda w: -len(windows.ids[w]))
        rows, cols, vals = [], [], []
        bar = tqdm(total=len(windows), unit="pass", disable=not progress, leave=False)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                members = order[start : start + batch_size]
                r, c, v = self._score(windows, members)
                rows.append(np.asarray(members, dtype=np.int64)[r])
                cols.append(c)
                vals.append(v)
                bar.update(len(members))
        bar.close()
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        col = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
        val = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
        keep = (val > 0) & (col < len(self.vocab))
        keep[keep] &= self.keep_cols[col[keep]]
        per_window = reduce_coo(row[keep], col[keep], val[keep], (len(windows), len(self.vocab)))
        return pool_windows(per_window, np.asarray(windows.text), len(texts), self.config)
