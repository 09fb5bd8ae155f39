"""The common part of every model-backed side: tokenize, cut into windows, batch, pool.

Every side tokenizes without truncation and cuts each text into *windows* (passes): the text's
tokens between the tokenizer's own special tokens, at most ``max_length`` tokens per pass.
``stride=None`` keeps the first window and counts the text in ``stats.truncated``; otherwise
consecutive windows overlap by ``stride`` tokens, at most ``max_chunks`` of them (a text cut
there is counted too), and the window vectors are pooled per ``chunk_pooling`` (max, or mean
counting absent terms as 0). Vectors are returned in input order.

How windows are run (``SideConfig.batching``):

``invariant`` (default)  every window is its own forward pass (batch 1, its own length, no
                         padding) with one torch intra-op thread: on
                         :class:`~lsr.encoders.device.ForwardPool` workers, in parallel, longest
                         first (``encode_one``: in the calling thread). Every shape and thread
                         count a window meets then depends on that window alone, so a text's
                         vector is the same bit for bit whatever else is encoded with it
                         (measured: batching same-length texts without padding, padding, or two
                         intra-op threads each change bits).
``padded``               windows sorted longest first, ``batch_size`` per forward pass with
                         dynamic padding, in the calling thread with torch's thread count: faster
                         on a GPU, but a vector's last bits then depend on its batch.

Subclasses score one batch of windows (:meth:`TransformerSide._score`): SPLADE
(:mod:`lsr.encoders.splade_side`), uniCOIL-style (:mod:`lsr.encoders.mlp_side`) and binary
(:mod:`lsr.encoders.binary_side`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lsr.encoders.backbone import Backbone
from lsr.encoders.base import SideEncoder, prune_rows, prune_terms
from lsr.encoders.config import SideConfig
from lsr.encoders.device import ForwardPool, forward_pool, one_intra_op_thread
from lsr.encoders.windows import Windows, pool_windows, reduce_coo, window_spans
from lsr.errors import InputError
from lsr.sparse import TermWeights

Triplets = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row, term id, weight)


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
        self.pool: ForwardPool | None = None  # None: the process's shared pool

    @property
    def invariant(self) -> bool:
        """Windows run alone on one-thread workers (``batching="invariant"``)."""
        return self.config.batching == "invariant"

    # windows -------------------------------------------------------------------------------
    def windows(self, texts: Sequence[str]) -> Windows:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        encoded = self.backbone.token_ids(list(texts))
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
    def _score(self, windows: Windows, members: Sequence[int]) -> Triplets:
        """(row in ``members``, term id, weight) of each window's vector, pooled over positions."""
        raise NotImplementedError

    def _score_alone(self, windows: Windows, window: int) -> Triplets:
        with torch.inference_mode():  # per thread: this runs on a pool worker
            return self._score(windows, [window])

    def _scored(self, windows: Windows, batch_size: int) -> Iterator[tuple[list[int], Triplets]]:
        """(windows, their triplets) per forward pass, longest windows first."""
        order = sorted(range(len(windows)), key=lambda w: -len(windows.ids[w]))
        if self.invariant and len(order) == 1:
            with one_intra_op_thread():  # one pass: here, no hand-off to a worker
                scored = self._score_alone(windows, order[0])
            yield order, scored
            return
        if self.invariant:
            pool = self.pool or forward_pool()
            scored = pool.map(partial(self._score_alone, windows), order)
            yield from zip(([w] for w in order), scored, strict=True)
            return
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                members = order[start : start + batch_size]
                yield members, self._score(windows, members)

    def _kept(self, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """Which triplets to keep: positive weights of vocabulary terms that are not special."""
        keep = (vals > 0) & (cols < len(self.vocab))
        keep[keep] &= self.keep_cols[cols[keep]]
        return keep

    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        return self._vectors(self.windows(texts), len(texts), batch_size, progress)

    def _vectors(
        self, windows: Windows, n_texts: int, batch_size: int, progress: bool
    ) -> sp.csr_matrix:
        """Text vectors (CSR, before output pruning) from their windows."""
        rows, cols, vals = [], [], []
        bar = tqdm(total=len(windows), unit="pass", disable=not progress, leave=False)
        for members, (r, c, v) in self._scored(windows, batch_size):
            rows.append(np.asarray(members, dtype=np.int64)[r])
            cols.append(c)
            vals.append(v)
            bar.update(len(members))
        bar.close()
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        col = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
        val = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
        keep = self._kept(col, val)
        per_window = reduce_coo(row[keep], col[keep], val[keep], (len(windows), len(self.vocab)))
        return pool_windows(per_window, np.asarray(windows.text), n_texts, self.config)

    def encode_one(self, text: str) -> TermWeights:
        """One text's vector, the same as ``encode([text]).row(0)``; a text that fits one window
        skips the batch machinery (scipy, pooling across windows): a single query's path."""
        if not self.invariant or self.backbone.model is None:
            return super().encode_one(text)
        started = time.perf_counter()
        windows = self.windows([text])
        cfg = self.config
        if len(windows) == 1:
            [(_, (_, col, val))] = self._scored(windows, 1)
            col, val = col.astype(np.int64), val.astype(np.float32)
            keep = self._kept(col, val)
            col, val = col[keep], val[keep]
            order = np.argsort(col, kind="stable")  # one window: each term once
            out = prune_terms(
                col[order].astype(np.int32), val[order], top_k=cfg.top_k, min_weight=cfg.min_weight
            )
        else:
            matrix = self._vectors(windows, 1, 1, False)
            row = prune_rows(matrix, top_k=cfg.top_k, min_weight=cfg.min_weight)
            out = TermWeights(row.indices, row.data)
        self.stats.texts += 1
        self.stats.seconds += time.perf_counter() - started
        return out
