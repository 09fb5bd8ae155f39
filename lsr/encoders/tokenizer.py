"""Fast (``tokenizers``) tokenizers without torch or transformers: loading, vocabulary,
special tokens, the distinct token ids of texts, and whether a BERT ``tokenizer.json`` tokenizes
as transformers would (:func:`bert_special_tokens`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lsr.errors import InputError
from lsr.io import read_json_object
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


# -- BERT WordPiece as transformers builds it --------------------------------------------------
BERT_TOKENIZER_CLASSES = frozenset(
    {"BertTokenizer", "BertTokenizerFast", "DistilBertTokenizer", "DistilBertTokenizerFast"}
)
BERT_SPECIALS = {
    "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}  # fmt: skip
_ADDED_FLAGS = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")


def _token_text(value: object) -> object:
    return value.get("content") if isinstance(value, dict) else value


def bert_special_tokens(directory: Path) -> dict[str, str]:
    """The special tokens (``BERT_SPECIALS`` keys) of a BERT/DistilBERT model directory whose
    ``tokenizer.json`` tokenizes as transformers' tokenizer for it does; ValueError saying what
    could differ (InputError for a config file that is not JSON).

    transformers 5 does not load BERT's ``tokenizer.json`` as it is: ``BertTokenizer`` rebuilds
    the normalizer, pre-tokenizer and WordPiece model from ``tokenizer_config.json``
    (``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``, ``unk_token``), keeps the
    file's vocabulary and added tokens (or ``added_tokens_decoder``), takes named tokens from
    ``special_tokens_map.json``, and makes the template ``[CLS] $A [SEP]`` from ``cls_token`` and
    ``sep_token``. The file is used only when all of that matches it; anything else (remote code,
    added tokens that are not the named special tokens, extra special tokens, bos/eos, split
    special tokens, other settings) is a ValueError.
    """
    tok_json = read_json_object(directory / "tokenizer.json")
    if not tok_json:
        raise ValueError("no tokenizer.json")
    config = read_json_object(directory / "tokenizer_config.json")
    cls_name = config.get("tokenizer_class")
    if cls_name is not None and cls_name not in BERT_TOKENIZER_CLASSES:
        raise ValueError(f"tokenizer_class {cls_name!r}")
    if config.get("auto_map") or (directory / "added_tokens.json").exists():
        raise ValueError("remote tokenizer code or added_tokens.json")
    for key in ("split_special_tokens", "additional_special_tokens", "extra_special_tokens"):
        if config.get(key):
            raise ValueError(f"tokenizer_config.json sets {key}")
    named = {**BERT_SPECIALS}
    sources = [config]
    if "added_tokens_decoder" not in config:  # transformers then reads the legacy map
        sources.append(read_json_object(directory / "special_tokens_map.json"))
    for source in sources:
        for key, value in source.items():
            if not (key.endswith("_token") or key.endswith("_tokens")) or value in (None, [], {}):
                continue
            if key not in BERT_SPECIALS:
                raise ValueError(f"special token {key}={value!r}")
            text = _token_text(value)
            if not isinstance(text, str):
                raise ValueError(f"{key}={value!r}")
            named[key] = text
    lower = config.get("do_lower_case", True)
    want_normalizer = {
        "type": "BertNormalizer", "clean_text": True,
        "handle_chinese_chars": config.get("tokenize_chinese_chars", True),
        "strip_accents": config.get("strip_accents"), "lowercase": lower,
    }  # fmt: skip
    if tok_json.get("normalizer") != want_normalizer:
        raise ValueError(f"normalizer {tok_json.get('normalizer')} is not {want_normalizer}")
    if tok_json.get("pre_tokenizer") != {"type": "BertPreTokenizer"}:
        raise ValueError(f"pre_tokenizer {tok_json.get('pre_tokenizer')}")
    model = tok_json.get("model") or {}
    settings = {k: model.get(k) for k in ("type", "unk_token", "continuing_subword_prefix")}
    settings["max_input_chars_per_word"] = model.get("max_input_chars_per_word")
    want_model = {
        "type": "WordPiece", "unk_token": named["unk_token"], "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100,
    }  # fmt: skip
    if settings != want_model:
        raise ValueError(f"model {settings} is not {want_model}")
    vocab = model.get("vocab") or {}
    added = {
        int(t["id"]): {k: t.get(k) for k in _ADDED_FLAGS} for t in tok_json.get("added_tokens", [])
    }
    if "added_tokens_decoder" in config:
        decoder = {
            int(i): {k: t.get(k) for k in _ADDED_FLAGS}
            for i, t in config["added_tokens_decoder"].items()
        }
        if decoder != added:
            raise ValueError("added_tokens_decoder is not tokenizer.json's added_tokens")
    by_text = {t["content"]: i for i, t in added.items() if t["special"]}
    if {t["content"] for t in added.values()} != set(named.values()) or any(
        vocab.get(text) != by_text.get(text) for text in named.values()
    ):
        raise ValueError("the added tokens are not the named special tokens of the vocabulary")
    return named
