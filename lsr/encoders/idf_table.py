"""IDF tables: one weight per vocabulary token, computed from a corpus or read from a file.

Conventions (checked against ``../shared/data/vectors/scifact-splade-tiny/queries-idf.jsonl.gz``,
all 1,109 SciFact queries match to its 4 printed decimals):

* **Tokenisation** is the model's: the tokenizer's post-processor adds its special tokens
  (``[CLS] … [SEP]`` for BERT) and ``max_length`` counts them, exactly as the document side sees
  its input. A 64-token query side keeps 62 word pieces.
* **Special tokens are zeroed**: they never appear in a query vector and have weight 0 in a
  computed table.
* **Presence, not count**: a query's weight for a token is ``idf[token]`` once, however often the
  token occurs (what sentence-transformers' ``SparseStaticEmbedding`` does: it scatters presence).
* **df** counts the documents whose tokenised, truncated input (``max_length`` tokens, special
  tokens included in the count: the first ``max_length - 2`` word pieces for BERT) holds the token.

``idf.json`` is the format of OpenSearch's inference-free models and of
``SparseStaticEmbedding.from_json``: one JSON object ``{token: weight}``. A token absent from the
file weighs 0 (as in sentence-transformers, which starts from zeros), so :meth:`IdfTable.save`
writes every token with a non-zero weight (unseen tokens included: their IDF is that of df = 0).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lsr.encoders.tokenizer import (
    CHUNK,
    TokenizerLike,
    chunks,
    load_tokenizer,
    set_truncation,
    special_token_ids,
    token_sets,
    tokenizer_vocabulary,
)
from lsr.errors import InputError
from lsr.vocab import Vocabulary


def bm25_idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """BM25-style IDF, ``ln((N - df + 0.5) / (df + 0.5) + 1)``, as float32 (computed in float64)."""
    df = np.asarray(df, dtype=np.float64)
    return np.log((n_docs - df + 0.5) / (df + 0.5) + 1.0).astype(np.float32)


class IdfTable:
    """One float32 weight per vocabulary token (``weights[term_id]``).

    ``df`` and ``n_docs`` are kept when the table was computed from a corpus (None when loaded).
    """

    def __init__(
        self,
        vocab: Vocabulary,
        weights: np.ndarray,
        *,
        df: np.ndarray | None = None,
        n_docs: int | None = None,
        source: str | None = None,
        dropped_unknown: int = 0,
    ) -> None:
        weights = np.ascontiguousarray(weights, dtype=np.float32)
        if weights.shape != (len(vocab),):
            raise InputError(f"{weights.shape[0]} IDF weights for a vocabulary of {len(vocab)}")
        if not np.all(np.isfinite(weights)) or (weights.size and weights.min() < 0):
            raise InputError("IDF weights must be finite and >= 0", source)
        self.vocab = vocab
        self.weights = weights
        self.df = df
        self.n_docs = n_docs
        self.source = source
        self.dropped_unknown = dropped_unknown

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        docs = f", n_docs={self.n_docs}" if self.n_docs is not None else ""
        nonzero = int(np.count_nonzero(self.weights))
        return f"IdfTable({len(self.vocab)} tokens, {nonzero} non-zero{docs})"

    def __getitem__(self, token: str) -> float:
        tid = self.vocab.get(token)
        return 0.0 if tid is None else float(self.weights[tid])

    def to_dict(self) -> dict[str, float]:
        """``{token: weight}`` for every non-zero weight, in term-id order."""
        tokens = self.vocab.tokens
        nz = np.flatnonzero(self.weights)
        return {tokens[i]: float(self.weights[i]) for i in nz}

    @property
    def sha256(self) -> str:
        """Identity of the weights (float32 bytes) over the vocabulary's identity."""
        import hashlib

        digest = hashlib.sha256(self.vocab.sha256.encode())
        digest.update(self.weights.astype("<f4").tobytes())
        return digest.hexdigest()

    # -- computing -------------------------------------------------------------------------
    @classmethod
    def compute(
        cls,
        texts: Iterable[str],
        tokenizer: TokenizerLike,
        vocab: Vocabulary | None = None,
        max_length: int | None = 256,
        *,
        chunk_size: int = CHUNK,
    ) -> IdfTable:
        """BM25-style IDF over a corpus: ``idf(t) = ln((N - df(t) + 0.5) / (df(t) + 0.5) + 1)``.

        ``N`` is the number of texts; ``df(t)`` the number of texts whose first ``max_length``
        tokens contain ``t``, counted the way the document encoder sees a text: with the
        tokenizer's special tokens added and included in ``max_length`` (``[CLS]`` + 254 word
        pieces + ``[SEP]`` at 256 for BERT; None: no truncation). Tokens never seen get the IDF
        of df = 0, ``ln(2N + 2)``; special tokens get 0. ``tokenizer`` is a
        ``tokenizers.Tokenizer``, a ``tokenizer.json`` or a model directory; ``vocab`` (default:
        the tokenizer's) must be the tokenizer's vocabulary. Texts stream ``chunk_size`` at a time
        through the tokenizer's parallel ``encode_batch``.
        """
        tok = load_tokenizer(tokenizer)
        own = tokenizer_vocabulary(tokenizer)
        if vocab is None:
            vocab = own
        elif vocab != own:
            raise InputError("the vocabulary given is not the tokenizer's vocabulary")
        set_truncation(tok, max_length)
        special = special_token_ids(tok)
        size = len(vocab)
        df = np.zeros(size, dtype=np.int64)
        n_docs = 0
        for chunk in chunks(texts, chunk_size):
            _, cols, _, _ = token_sets(tok, chunk, special, size)
            df += np.bincount(cols, minlength=size)
            n_docs += len(chunk)
        if n_docs == 0:
            raise InputError("cannot compute IDF from an empty corpus")
        return cls.from_df(df, n_docs, vocab, special_ids=special)

    @classmethod
    def from_df(
        cls,
        df: np.ndarray,
        n_docs: int,
        vocab: Vocabulary,
        *,
        special_ids: Sequence[int] | np.ndarray = (),
    ) -> IdfTable:
        """The table of document frequencies ``df`` (one per token) over ``n_docs`` documents."""
        df = np.asarray(df, dtype=np.int64)
        weights = bm25_idf(df, n_docs)
        special = np.asarray(special_ids, dtype=np.int64)
        weights[special[special < len(vocab)]] = 0.0
        return cls(vocab, weights, df=df, n_docs=n_docs, source="corpus")

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``idf.json``: ``{token: weight}`` for every non-zero weight, in term-id order.

        Floats are written in full (float32 → float64 → shortest repr), so loading gives back
        the identical float32 weights, here and in sentence-transformers.
        """
        Path(path).write_text(
            json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path, vocab: Vocabulary, *, unknown: str = "error") -> IdfTable:
        """Read ``idf.json`` ``{token: weight}``, or a SparseStaticEmbedding ``model.safetensors``.

        Tokens absent from an idf.json weigh 0 (as in sentence-transformers). A token that is not
        in ``vocab`` means the file belongs to another tokenizer: ``unknown="error"`` (default)
        raises an :class:`InputError` naming a few; ``"ignore"`` drops them and counts them in
        ``dropped_unknown`` (sentence-transformers would silently write their weights onto
        ``[UNK]``). Weights must be finite numbers >= 0.
        """
        if unknown not in ("error", "ignore"):
            raise ValueError("unknown must be 'error' or 'ignore'")
        path = Path(path)
        if not path.is_file():
            raise InputError("IDF file not found", path)
        if path.suffix == ".safetensors":
            return cls(vocab, _read_static_weights(path, len(vocab)), source=str(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON: {exc}", path) from None
        if not isinstance(data, dict):
            raise InputError("idf.json must be a JSON object of {token: weight}", path)
        weights = np.zeros(len(vocab), dtype=np.float32)
        missing: list[str] = []
        for token, weight in data.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise InputError(f"weight of {token!r} is not a number: {weight!r}", path)
            if not math.isfinite(weight) or weight < 0:
                raise InputError(f"weight of {token!r} must be finite and >= 0, got {weight}", path)
            tid = vocab.get(token)
            if tid is None:
                missing.append(token)
                continue
            weights[tid] = weight
        if missing and unknown == "error":
            shown = ", ".join(repr(t) for t in missing[:5])
            raise InputError(
                f"{len(missing):,} of {len(data):,} tokens are not in the tokenizer's vocabulary "
                f"({shown}{', ...' if len(missing) > 5 else ''}): an IDF table for another "
                "tokenizer? (unknown='ignore' drops them)",
                path,
            )
        return cls(vocab, weights, source=str(path), dropped_unknown=len(missing))


_SAFETENSORS_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2"}


def _read_static_weights(path: Path, size: int) -> np.ndarray:
    """The ``weight`` vector of a SparseStaticEmbedding ``model.safetensors``, without torch."""
    try:
        with open(path, "rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            if len(tensors) != 1:
                raise InputError(
                    f"expected one tensor (the static weights), found {sorted(tensors)}", path
                )
            (info,) = tensors.values()
            dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None or len(info["shape"]) != 1:
                raise InputError(
                    f"unsupported static weights {info['dtype']} {info['shape']}", path
                )
            start, stop = info["data_offsets"]
            handle.seek(8 + header_len + start)
            raw = np.frombuffer(handle.read(stop - start), dtype=dtype)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise InputError(f"cannot read safetensors: {exc}", path) from None
    if info["dtype"] == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    weights = raw.astype(np.float32)
    if weights.size != size:
        raise InputError(f"{weights.size} static weights for a vocabulary of {size}", path)
    return weights
