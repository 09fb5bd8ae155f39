"""Vocabulary: the token strings that name the columns of every sparse vector."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from lsr.errors import InputError


class Vocabulary:
    """An ordered list of unique tokens; a token's position is its term id.

    A vocabulary may be *frozen* (taken from a tokenizer: a token outside it is an error) or
    *growable* (built from a corpus as tokens are seen).
    """

    def __init__(self, tokens: Iterable[str] = (), *, frozen: bool = False, source: str = "corpus"):
        self._tokens: list[str] = []
        self._ids: dict[str, int] = {}
        for token in tokens:
            if token in self._ids:
                raise InputError(f"duplicate token {token!r} in vocabulary ({source})")
            self._ids[token] = len(self._tokens)
            self._tokens.append(token)
        self.frozen = frozen
        self.source = source
        self._sha256: tuple[int, str] | None = None

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Vocabulary) or len(self) != len(other):
            return False
        if self.frozen and other.frozen:  # both immutable: compare cached identities
            return self.sha256 == other.sha256
        return self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self.sha256)

    @property
    def tokens(self) -> Sequence[str]:
        return self._tokens

    def get(self, token: str) -> int | None:
        """The term id of ``token``, or None when it is unknown."""
        return self._ids.get(token)

    def id_of(self, token: str) -> int:
        """The term id of ``token``: a growable vocabulary adds it, a frozen one returns -1."""
        tid = self._ids.get(token)
        if tid is None:
            if self.frozen:
                return -1
            tid = len(self._tokens)
            self._ids[token] = tid
            self._tokens.append(token)
        return tid

    @property
    def sha256(self) -> str:
        """Identity of the vocabulary: a hash of its tokens in order (cached once frozen)."""
        cached = self._sha256
        if cached is not None and cached[0] == len(self._tokens):
            return cached[1]
        digest = hashlib.sha256()
        for token in self._tokens:
            digest.update(token.encode("utf-8"))
            digest.update(b"\n")
        value = digest.hexdigest()
        if self.frozen:
            self._sha256 = (len(self._tokens), value)
        return value

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._tokens, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Load from a tokenizer directory, tokenizer.json, vocab.txt or a JSON list of tokens."""
        path = Path(path)
        if not path.exists():
            raise InputError("vocabulary not found", path)
        if path.is_dir():
            for name in ("tokenizer.json", "vocab.txt", "vocab.json"):
                if (path / name).exists():
                    return cls.load(path / name)
            raise InputError("no tokenizer.json, vocab.txt or vocab.json in this directory", path)
        source = str(path)
        if path.suffix == ".txt":
            lines = path.read_text(encoding="utf-8").split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            return cls(lines, frozen=True, source=source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON: {exc}", path) from exc
        if isinstance(data, list) and all(isinstance(t, str) for t in data):
            return cls(data, frozen=True, source=source)
        model_vocab = data.get("model", {}).get("vocab") if isinstance(data, dict) else None
        if isinstance(model_vocab, dict):  # Hugging Face tokenizers (WordPiece / BPE): token -> id
            ordered = sorted(model_vocab.items(), key=lambda item: item[1])
            if [i for _, i in ordered] != list(range(len(ordered))):
                raise InputError("tokenizer vocabulary ids are not contiguous from 0", path)
            return cls([t for t, _ in ordered], frozen=True, source=source)
        if isinstance(model_vocab, list):  # Unigram tokenizers: [[token, score], ...]
            return cls([entry[0] for entry in model_vocab], frozen=True, source=source)
        raise InputError(
            "unrecognised vocabulary file (expected a tokenizer.json, vocab.txt or JSON list)", path
        )
