"""On-disk layout of a sparse index: a directory of ``.npy`` arrays described by ``manifest.json``.

Writes are atomic: an index is assembled in a hidden sibling directory, every file is fsynced, and
the directory is moved into place with one rename (an atomic exchange when replacing an index).
A reader checks the format version, array sizes and (by default) SHA-256 checksums before use.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import IndexFormatError, InputError
from lsr.io import fsync_path, sha256_file

FORMAT_NAME = "lsr-sparse-index"
FORMAT_VERSION = 3
# Version 1 stored each entry's posting start (uint32 ``entry_post_rel``), version 2 its count
# (uint8 ``entry_count``); both stored each entry's block (uint16 / int32 ``entry_block``),
# version 3 its gap from the term's previous entry in one byte (``entry_gap``, far gaps apart).
# Older indexes still open: counts and gaps are derived in memory. Version 4 is version 3 plus
# block rows (four arrays, ``num_block_rows``); an index without them is still written as 3.
ROWS_FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
MANIFEST = "manifest.json"
_STAGING_MARK = ".lsr-staging-"


def save_array(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as ``name.npy`` (little-endian, C order) and return its manifest entry."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    path = directory / f"{name}.npy"
    np.save(path, array, allow_pickle=False)
    return {"file": path.name, "dtype": array.dtype.str, "shape": list(array.shape)}


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON without its own ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def previous_path(target: Path) -> Path:
    """Where a replaced index waits while the new one is renamed in (non-Linux fallback)."""
    return target.parent / f".{target.name}.lsr-previous"


def recover_previous(target: Path) -> str | None:
    """Writers only: put back an index that a crash left parked beside its path, or delete a
    parked one that was already replaced. Returns what was done (None: nothing)."""
    old = previous_path(target)
    if not (old.is_dir() and (old / MANIFEST).exists()):
        return None
    if not target.exists():
        os.rename(old, target)
        return f"restored {target} from {old.name} (a replace was interrupted)"
    shutil.rmtree(old, ignore_errors=True)  # the crash came after the new index was in place
    return f"removed {old.name}, the replaced index a finished publish left behind"


def remove_stale_staging(target: Path) -> list[str]:
    """Delete staging directories left by builds that were killed (their process is gone)."""
    parent = target.parent
    if not parent.exists():
        return []
    prefix = f".{target.name}{_STAGING_MARK}"
    removed = []
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        alive = False
        if pid_text.isdigit():
            try:
                os.kill(int(pid_text), 0)
                alive = int(pid_text) != os.getpid()
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(f"removed {entry.name}, the staging directory of a killed build")
    return removed


def repair(target: str | Path) -> list[str]:
    """What `lsr index repair` does: :func:`recover_previous` and :func:`remove_stale_staging`.

    Readers never do this (they may run on a read-only copy); writers do it before a build.
    Returns one line per action taken.
    """
    target = Path(target).absolute()
    actions = [a for a in [recover_previous(target)] if a]
    return actions + remove_stale_staging(target)


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse to build over something that is not ours to replace."""
    if not target.exists():
        return
    if not overwrite:
        raise InputError("already exists (pass overwrite=True / --overwrite to replace it)", target)
    if not target.is_dir() or not (target / MANIFEST).exists():
        raise InputError("exists and is not an lsr index; refusing to replace it", target)


@contextlib.contextmanager
def staged_directory(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``target``; on success publish it atomically as ``target``.

    The caller writes every file, then :func:`finalize_manifest` writes the manifest. If the
    body raises (or the process dies) ``target`` is untouched and the staging directory is removed
    (now, or by the next build).
    """
    target = Path(target).absolute()
    recover_previous(target)
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f".{target.name}{_STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if not (staging / MANIFEST).exists():
            raise RuntimeError("staged index has no manifest; call finalize_manifest first")
        for entry in staging.iterdir():
            fsync_path(entry)
        fsync_path(staging)
        check_target(target, overwrite)
        if target.exists():
            if _renameat2_exchange(staging, target):
                shutil.rmtree(staging, ignore_errors=True)  # staging now holds the old index
            else:  # two renames: a crash between them leaves the old index beside, never half
                old = previous_path(target)
                os.rename(target, old)
                os.rename(staging, target)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
        fsync_path(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def finalize_manifest(
    directory: Path,
    manifest: dict[str, Any],
    *,
    format_name: str = FORMAT_NAME,
    format_version: int = FORMAT_VERSION,
) -> dict[str, Any]:
    """Checksum every array and extra file named in ``manifest`` and write ``manifest.json``.

    ``format_name`` / ``format_version`` label the directory (default: the sparse index).
    """
    manifest = dict(manifest, format=format_name, format_version=format_version)
    for entry in manifest.get("arrays", {}).values():
        path = directory / entry["file"]
        entry["bytes"] = path.stat().st_size
        entry["sha256"] = sha256_file(path)
    for entry in manifest.get("files", {}).values():
        path = directory / entry["file"]
        entry["bytes"] = path.stat().st_size
        entry["sha256"] = sha256_file(path)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(
    directory: str | Path,
    *,
    format_name: str = FORMAT_NAME,
    format_version: int | tuple[int, ...] = READABLE_VERSIONS,
) -> dict[str, Any]:
    """Read and check ``manifest.json``: its format name, its own checksum and its version
    (``format_version``: the one, or the ones, this reader takes)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.exists():
        parked = previous_path(directory.absolute())
        if (parked / MANIFEST).exists():
            raise IndexFormatError(
                f"{directory}: no such index directory, but an interrupted replace left it at "
                f"{parked}: run `lsr index repair {directory}`"
            )
        raise IndexFormatError(f"{directory}: no such index directory")
    if not path.exists():
        raise IndexFormatError(f"{directory}: not an lsr index (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: manifest is corrupted ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        kind = "lsr sparse index" if format_name == FORMAT_NAME else format_name
        raise IndexFormatError(f"{path}: not an {kind} manifest")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise IndexFormatError(
            f"{path}: manifest checksum mismatch (the file was modified or corrupted)"
        )
    readable = (format_version,) if isinstance(format_version, int) else format_version
    if manifest.get("format_version") not in readable:
        versions = " or ".join(map(str, readable))
        raise IndexFormatError(
            f"{path}: format version {manifest.get('format_version')} is not supported "
            f"(this lsr reads version {versions}); rebuild the index"
        )
    return manifest


def verify_files(directory: Path, manifest: dict[str, Any], *, checksums: bool = True) -> None:
    """Raise IndexFormatError unless every file has its recorded size (and checksum)."""
    entries = list(manifest.get("arrays", {}).values()) + list(manifest.get("files", {}).values())
    for entry in entries:
        path = directory / entry["file"]
        if not path.exists():
            raise IndexFormatError(f"{path}: missing from the index")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise IndexFormatError(
                f"{path}: {size} bytes, manifest says {entry['bytes']} (truncated?)"
            )
        if checksums and sha256_file(path) != entry["sha256"]:
            raise IndexFormatError(f"{path}: checksum mismatch (corrupted)")


def open_arrays(
    directory: str | Path,
    *,
    verify: bool = True,
    format_name: str = FORMAT_NAME,
    format_version: int | tuple[int, ...] = READABLE_VERSIONS,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read the manifest, check the files and memory-map every array read-only."""
    directory = Path(directory)
    manifest = read_manifest(directory, format_name=format_name, format_version=format_version)
    verify_files(directory, manifest, checksums=verify)
    arrays: dict[str, np.ndarray] = {}
    for name, entry in manifest.get("arrays", {}).items():
        path = directory / entry["file"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError:  # empty arrays cannot be memory-mapped
            array = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise IndexFormatError(f"{path}: unreadable array ({exc})") from None
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise IndexFormatError(f"{path}: dtype/shape differ from the manifest")
        arrays[name] = np.asarray(array)
    return manifest, arrays
