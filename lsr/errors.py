"""Exceptions for bad input or damaged files; the CLI and service turn them into messages."""

from __future__ import annotations


class LsrError(Exception):
    """Base class: every error a user can cause and fix."""


class InputError(LsrError):
    """Malformed or unusable input, optionally located at a file and line."""

    def __init__(self, message: str, path: object = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class UnknownTermError(InputError):
    """A query or document term that is not in the index's vocabulary."""


class IndexFormatError(LsrError):
    """An index directory that is missing, truncated, corrupted or of another format version."""


class MissingExtraError(LsrError, ImportError):
    """A feature needs an optional dependency group (``pip install 'lsr[extra]'``)."""


class ShardUnavailableError(Exception):
    """No replica of a shard answered after retries (HTTP 503): not the user's input."""
