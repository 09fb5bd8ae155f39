"""Inference-free queries: a query is the set of its tokenizer ids, each weighted by an IDF table.

No model runs (or is imported) at query time: this module uses the ``tokenizers`` library only,
never torch or transformers, so a search process that loads an :class:`IdfQueryEncoder` from an
index directory (``tokenizer.json`` + ``idf.json``) stays small and starts fast.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numba import njit
from tokenizers import Tokenizer

from lsr.encoders.base import SideEncoder
from lsr.encoders.config import SideConfig
from lsr.encoders.idf_table import IdfTable
from lsr.encoders.tokenizer import (
    CHUNK,
    TokenizerLike,
    load_tokenizer,
    set_truncation,
    special_token_ids,
    token_sets,
    tokenizer_file,
    tokenizer_vocabulary,
)
from lsr.errors import InputError
from lsr.sparse import TermWeights
from lsr.vocab import Vocabulary


class IdfQueryEncoder(SideEncoder):
    """Inference-free query side: ``vector[t] = idf[t]`` for each distinct token of the query.

    The query is tokenised as the model would see it (special tokens added, ``max_length``
    tokens including them; longer queries are truncated and counted in ``stats.truncated``),
    special tokens are dropped, and each remaining distinct id weighs its IDF (presence, not
    count). With ``config.stride`` set, long queries are not truncated at ``max_length`` but
    covered by up to ``max_chunks`` overlapping windows; since presence pooled by max over
    windows is presence over the covered text, that is what is computed.
    """

    def __init__(
        self,
        tokenizer: TokenizerLike,
        idf: IdfTable,
        config: SideConfig | None = None,
        *,
        tokenizer_source: str | Path | None = None,
    ) -> None:
        config = SideConfig(family="idf", max_length=64) if config is None else config
        if config.family != "idf":
            config = config.model_copy(update={"family": "idf"})
        if config.stride is not None and config.chunk_pooling != "max":
            raise InputError("an IDF query side pools chunks by max (presence) only")
        self.tokenizer = load_tokenizer(tokenizer)
        if tokenizer_source is None and not isinstance(tokenizer, Tokenizer):
            tokenizer_source = tokenizer_file(tokenizer)
        self.tokenizer_source = None if tokenizer_source is None else Path(tokenizer_source)
        vocab = tokenizer_vocabulary(
            self.tokenizer_source if self.tokenizer_source is not None else self.tokenizer
        )
        if idf.vocab != vocab:
            raise InputError("the IDF table's vocabulary is not the tokenizer's vocabulary")
        super().__init__(vocab, config)
        self.idf = idf
        self._special = special_token_ids(self.tokenizer)
        # ids a query vector never holds: special tokens (added, or typed in as "[SEP]") and
        # added tokens beyond the vocabulary; one lookup instead of masks and np.isin
        n_ids = max(self.tokenizer.get_vocab_size(with_added_tokens=True), len(self.vocab))
        self._dropped = np.zeros(n_ids, dtype=bool)
        self._dropped[len(self.vocab) :] = True
        self._dropped[self._special] = True
        self._n_special = (
            self.tokenizer.post_processor.num_special_tokens_to_add(False)
            if (self.tokenizer.post_processor is not None)
            else 0
        )
        if config.max_length <= self._n_special:
            raise InputError(
                f"max_length {config.max_length} leaves no room next to "
                f"{self._n_special} special tokens"
            )
        set_truncation(self.tokenizer, self._covered_length())

    @classmethod
    def from_files(
        cls,
        tokenizer_json: str | Path,
        idf_json: str | Path,
        config: SideConfig | None = None,
        *,
        unknown: str = "error",
    ) -> IdfQueryEncoder:
        """Build from ``tokenizer.json`` and ``idf.json`` (e.g. those stored in an index)."""
        path = tokenizer_file(tokenizer_json)
        vocab = Vocabulary.load(path)
        table = IdfTable.load(idf_json, vocab, unknown=unknown)
        return cls(path, table, config, tokenizer_source=path)

    def _covered_length(self) -> int | None:
        """Tokens (special included) a query keeps: max_length, or all windows' span."""
        cfg = self.config
        if cfg.stride is None:
            return cfg.max_length
        if cfg.max_chunks is None:
            return None
        window = cfg.max_length - self._n_special
        step = max(window - cfg.stride, 1)
        return window + (cfg.max_chunks - 1) * step + self._n_special

    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        size = len(self.vocab)
        mats = []
        for start in range(0, len(texts), CHUNK):
            chunk = list(texts[start : start + CHUNK])
            rows, cols, tokens, truncated = token_sets(self.tokenizer, chunk, self._special, size)
            data = self.idf.weights[cols]
            mats.append(
                sp.csr_matrix((data, (rows, cols)), shape=(len(chunk), size), dtype=np.float32)
            )
            self.stats.tokens += tokens
            self.stats.chunks += len(chunk)
            self.stats.truncated += truncated
        return mats[0] if len(mats) == 1 else sp.vstack(mats, format="csr")

    def encode_one(self, text: str) -> TermWeights:
        """One query's vector without scipy or batch machinery: the inference-free fast path
        (the same vector as ``encode([text]).row(0)``)."""
        if not isinstance(text, str):
            raise InputError(f"a query is a string, got {type(text).__name__}")
        started = time.perf_counter()
        (encoding,) = self.tokenizer.encode_batch_fast([text], add_special_tokens=True)
        ids = np.array(encoding.ids, dtype=np.int64)
        cfg = self.config
        terms, weights = _query_vector(
            ids, self._dropped, self.idf.weights, np.float32(cfg.min_weight), cfg.top_k or 0
        )
        stats = self.stats
        stats.texts += 1
        stats.chunks += 1
        stats.tokens += ids.size
        stats.truncated += int(bool(encoding.overflowing))
        stats.seconds += time.perf_counter() - started
        return TermWeights(terms, weights)

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` (a byte copy of the source when known) and ``idf.json``."""
        directory = Path(directory)
        target = directory / "tokenizer.json"
        if self.tokenizer_source is not None and self.tokenizer_source.is_file():
            target.write_bytes(self.tokenizer_source.read_bytes())
        else:
            self.tokenizer.save(str(target))
        self.idf.save(directory / "idf.json")


@njit(cache=True, nogil=True)
def _query_vector(ids, dropped, idf, min_weight, top_k):
    """Distinct kept ids (ascending) and their IDF weights, with the side's output pruning
    (:func:`~lsr.encoders.base.prune_terms`' rule) in one compiled pass: a few microseconds."""
    ordered = np.sort(ids)
    terms = np.empty(ordered.size, np.int64)
    weights = np.empty(ordered.size, np.float32)
    m = 0
    for i in range(ordered.size):
        t = ordered[i]
        if (i > 0 and t == ordered[i - 1]) or dropped[t]:
            continue
        if idf[t] > min_weight and idf[t] > 0:
            terms[m] = t
            weights[m] = idf[t]
            m += 1
    terms, weights = terms[:m], weights[:m]
    if 0 < top_k < m:  # the heaviest, ties to the lower id, back in id order
        keep = np.sort(np.argsort(-weights, kind="mergesort")[:top_k])
        terms, weights = terms[keep], weights[keep]
    return terms, weights
