"""File helpers every layer uses: atomic writes, fsync, checksums, JSON and JSONL(.gz) reading."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from lsr.errors import InputError

READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)  # gzip truncation, bad bytes


def fsync_path(path: Path) -> None:
    """Flush a file or directory to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_into_place(staging: Path, path: Path) -> None:
    """Publish a fully written directory: ``staging`` becomes ``path`` (absent or an empty
    directory) in one rename, made durable in the parent."""
    if path.exists():
        path.rmdir()
    os.rename(staging, path)
    fsync_path(path.parent)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write one file atomically: ``write`` fills a hidden temporary sibling (same suffix, so
    writers that pick a format by name still do), which is fsynced and then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _sha256_memo(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def sha256_file_cached(path: str | Path) -> str:
    """:func:`sha256_file`, memoised on path, size and modification time (model weights)."""
    st = Path(path).stat()
    return _sha256_memo(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def read_json(path: Path) -> Any:
    """A JSON file's content; an InputError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read JSON: {exc}", path) from None


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file's content, ``{}`` when there is no such file (optional config files);
    an InputError naming the file when it cannot be read or holds something else."""
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path)
    return data


def open_text(path: str | Path, mode: str = "rt") -> IO[str]:
    """Open a text file, transparently gzip when the name ends in ``.gz``."""
    path = Path(path)
    if "r" in mode and not path.exists():
        raise InputError("file not found", path)
    if "r" in mode and path.is_dir():
        raise InputError("is a directory, expected a file", path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode.replace("t", "") or "rb"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def iter_json_objects(
    path: str | Path, *, what: str = "a JSON object"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL(.gz) file; errors name the file
    and line (``what`` says what a line should be)."""
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"malformed JSON ({exc.msg})", path, lineno) from None
                if not isinstance(record, dict):
                    raise InputError(f"expected {what}", path, lineno)
                yield lineno, record
    except READ_ERRORS as exc:
        raise InputError(f"cannot read: {exc}", path) from None


def iter_rows(path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) for each non-blank line of a text(.gz) file
    (qrels, TREC runs); read errors name the file."""
    try:
        with open_text(path) as handle:
            for lineno, line in enumerate(handle, start=1):
                parts = line.split()
                if parts:
                    yield lineno, parts
    except READ_ERRORS as exc:
        raise InputError(f"cannot read: {exc}", path) from None


def first_json_object(path: str | Path) -> dict[str, Any] | None:
    """The first non-blank line of a JSONL(.gz) file as an object; None when there is none or
    it is not a JSON object (the full reader then reports it with its line number)."""
    try:
        with open_text(path) as handle:
            for line in handle:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        return None
                    return record if isinstance(record, dict) else None
    except READ_ERRORS as exc:
        raise InputError(f"cannot read: {exc}", path) from None
    return None
