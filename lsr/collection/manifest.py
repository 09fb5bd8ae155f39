"""The generation manifest: which segments and tombstones make up a collection, swapped atomically.

``manifest.json`` names the segments in order, each segment's tombstone file (packed bits of
deleted positions, checksummed) and ``flushed_seq``: every log record up to it is in the segments
and tombstones, later ones are replayed from the log at open. A new generation is written to a
temporary file, fsynced and renamed over the old one; files it no longer names are removed after.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from lsr.collection.failpoints import crash_point
from lsr.errors import IndexFormatError
from lsr.index.format import manifest_digest
from lsr.io import atomic_write, fsync_path, sha256_file

FORMAT = "lsr-collection"
VERSION = 1
MANIFEST = "manifest.json"
SEGMENTS = "segments"
TOMBSTONES = "tombstones"


def write_manifest(directory: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Publish ``body`` as the current generation (atomic, durable)."""
    body = dict(body, format=FORMAT, format_version=VERSION)
    body["manifest_sha256"] = manifest_digest(body)
    text = json.dumps(body, indent=1, sort_keys=True)
    tmp = directory / f".{MANIFEST}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(text, encoding="utf-8")
        fsync_path(tmp)
        crash_point("manifest.before_rename")
        os.replace(tmp, directory / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(directory)
    crash_point("manifest.after_rename")
    return body


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{directory}: not an lsr collection (no {MANIFEST})")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: manifest is corrupted ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not an lsr collection manifest")
    if body.get("manifest_sha256") != manifest_digest(body):
        raise IndexFormatError(f"{path}: manifest checksum mismatch (modified or corrupted)")
    if body.get("format_version") != VERSION:
        raise IndexFormatError(f"{path}: collection format {body.get('format_version')} unknown")
    return body


def write_tombstones(directory: Path, name: str, live: np.ndarray) -> dict[str, Any]:
    """Save the deleted positions of segment ``name`` (``live == 0``) and describe the file."""
    folder = directory / TOMBSTONES
    folder.mkdir(exist_ok=True)
    bits = np.packbits(live == 0)
    stem = f"{name}.{uuid.uuid4().hex[:12]}.npy"
    path = folder / stem

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, bits, allow_pickle=False)

    atomic_write(path, save)
    return {"file": f"{TOMBSTONES}/{stem}", "sha256": sha256_file(path)}


def read_tombstones(directory: Path, entry: dict[str, Any], n_docs: int) -> np.ndarray:
    """The live mask (uint8) a tombstone entry describes, checked against its checksum."""
    path = directory / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise IndexFormatError(f"{path}: tombstones missing or corrupted (checksum mismatch)")
    bits = np.load(path, allow_pickle=False)
    deleted = np.unpackbits(bits, count=n_docs).astype(bool)
    return (~deleted).view(np.uint8)
