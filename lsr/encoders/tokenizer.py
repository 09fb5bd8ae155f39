"""Fast (``tokenizers``) tokenizers without torch or transformers: loading, vocabulary,
special tokens, and the distinct token ids of texts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lsr.errors import InputError
from lsr.vocab import Vocabulary

TokenizerLike = Tokenizer | str | Path

CHUNK = 2048  # texts per encode_batch call: bounds the memory of the Encoding objects


def tokenizer_file(path: str | Path) -> Path:
    """``tokenizer.json`` itself, or the one inside a model directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise InputError(
            "tokenizer.json not found (inference-free queries need a fast tokenizer)", path
        )
    return path


def load_tokenizer(tokenizer: TokenizerLike) -> Tokenizer:
    """A private ``tokenizers.Tokenizer`` with padding and truncation off (callers set their own).

    A Tokenizer object is copied, so the caller's settings are left alone.
    """
    if isinstance(tokenizer, Tokenizer):
        tok = Tokenizer.from_str(tokenizer.to_str())
    else:
        path = tokenizer_file(tokenizer)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exceptions
            raise InputError(f"cannot load tokenizer: {exc}", path) from None
    tok.no_padding()
    tok.no_truncation()
    return tok


def tokenizer_vocabulary(tokenizer: TokenizerLike) -> Vocabulary:
    """The term ids of ``tokenizer``: a frozen :class:`Vocabulary`, as ``Vocabulary.load`` reads."""
    if isinstance(tokenizer, Tokenizer):
        items = sorted(tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        if [i for _, i in items] != list(range(len(items))):
            raise InputError("tokenizer vocabulary ids are not contiguous from 0")
        return Vocabulary([t for t, _ in items], frozen=True, source="tokenizer")
    return Vocabulary.load(tokenizer_file(tokenizer))


def special_token_ids(tokenizer: Tokenizer) -> np.ndarray:
    """Ids of the tokenizer's special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]... for BERT)."""
    ids = [i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special]
    return np.asarray(sorted(ids), dtype=np.int64)


def set_truncation(tokenizer: Tokenizer, max_length: int | None) -> None:
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length)


def chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(texts)
    while chunk := list(islice(it, size)):
        yield chunk


def token_sets(
    tokenizer: Tokenizer, texts: list[str], special: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Distinct non-special token ids per text: (rows, cols) sorted, total tokens, truncated texts.

    ``tokenizer`` must already carry the truncation wanted.
    """
    encodings = tokenizer.encode_batch(texts, add_special_tokens=True)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    truncated = sum(1 for e in encodings if e.overflowing)
    total = int(lengths.sum())
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=total)
    # post-processor tokens, plus special tokens typed into the text ("[SEP]" in a query)
    mask = np.fromiter(
        (m for e in encodings for m in e.special_tokens_mask), dtype=bool, count=total
    )
    keep = ~mask & (ids < vocab_size)
    if special.size:
        keep &= ~np.isin(ids, special)
    rows = np.repeat(np.arange(len(encodings), dtype=np.int64), lengths)[keep]
    keys = np.unique(rows * vocab_size + ids[keep])
    return keys // vocab_size, keys % vocab_size, total, truncated
