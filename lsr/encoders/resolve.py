"""Where a model comes from: a local directory or a hub id, a plain checkpoint or a
sentence-transformers directory, and the final :class:`EncoderConfig` it implies."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.encoders.st_layout import SentenceTransformersLayout, read_sentence_transformers
from lsr.encoders.tokenizer import tokenizer_file
from lsr.errors import InputError

_HUB_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")


def looks_like_hub_id(name: str) -> bool:
    """``name`` or ``owner/name`` as the hub spells repo ids (checked before anything loads)."""
    parts = name.split("/")
    return len(parts) <= 2 and all(_HUB_PART.fullmatch(part) for part in parts)


def _hub_snapshot_with_modules(repo_id: str) -> Path | None:
    """The local snapshot of a hub repo with ``modules.json``; None for a plain checkpoint."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    cached = try_to_load_from_cache(repo_id, "modules.json")
    if isinstance(cached, str):
        return Path(cached).parent
    if cached is not None or os.environ.get("HF_HUB_OFFLINE"):
        return None  # known absent, or offline: a plain checkpoint as far as we can tell
    try:
        hf_hub_download(repo_id, "modules.json")
    except LocalEntryNotFoundError:
        return None  # unreachable: transformers will report the real problem
    except EntryNotFoundError:
        return None
    except Exception as exc:
        raise InputError(f"cannot look up {repo_id!r} on the Hugging Face hub: {exc}") from None
    return Path(snapshot_download(repo_id))


def resolve_source(model: str) -> tuple[Path | None, bool]:
    """(local directory or None for a hub id, whether it is a SparseEncoder directory)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError("a model must be a directory (or a hub id), not a file", path)
        if (path / "modules.json").is_file():
            return path, True
        if not (path / "config.json").is_file():
            raise InputError("not a model directory: no config.json or modules.json", path)
        return path, False
    if not looks_like_hub_id(model):
        raise InputError("model directory not found", path)
    snapshot = _hub_snapshot_with_modules(model)
    return snapshot, snapshot is not None


def _side(base: SideConfig | dict[str, Any], update: Any) -> SideConfig:
    """``update`` (a SideConfig replaces, a dict updates) applied to ``base``."""
    base_fields = base.model_dump() if isinstance(base, SideConfig) else dict(base)
    if isinstance(update, SideConfig):
        return update
    if isinstance(update, Mapping):
        return SideConfig.model_validate({**base_fields, **update})
    raise InputError(f"a side config must be a SideConfig or a dict, got {update!r}")


@dataclass
class ResolvedConfig:
    """The final configuration and where it came from (see :func:`resolve_config`)."""

    config: EncoderConfig
    source: str  # what the caller named
    layout: SentenceTransformersLayout | None
    local: Path | None  # local directory of config.model (None: a hub id)


def resolve_config(config: EncoderConfig | str | Path, **overrides: Any) -> ResolvedConfig:
    """The final :class:`EncoderConfig`: a SparseEncoder directory's settings under the caller's.

    Fields the caller set (explicitly in ``config``, or as ``overrides``) win over what a
    SparseEncoder directory says; a side given as a dict updates the directory's side field by
    field, a SideConfig replaces it.
    """
    if isinstance(config, str | Path):
        config = EncoderConfig(model=str(config))
    if not isinstance(config, EncoderConfig):
        raise TypeError(f"expected an EncoderConfig or a model path, got {type(config).__name__}")
    unknown = sorted(set(overrides) - set(EncoderConfig.model_fields))
    if unknown:
        raise InputError(f"unknown encoder settings: {', '.join(unknown)}")
    explicit = {name: getattr(config, name) for name in config.model_fields_set}
    explicit.update(overrides)
    source = str(explicit.get("model", config.model))
    local, is_st = resolve_source(source)
    if not is_st:
        data = config.model_dump()
        for name, value in overrides.items():
            data[name] = _side(data[name], value) if name in ("query", "document") else value
        if local is not None:  # a local model is recorded where it is, whatever the cwd was
            data["model"] = str(local.resolve())
        final = EncoderConfig.model_validate(data)
        return ResolvedConfig(final, source, None, local)

    assert local is not None
    layout = read_sentence_transformers(local)
    data: dict[str, Any] = {
        "model": str(layout.model_dir.resolve()),
        "query_mode": layout.query_mode,
        "query": SideConfig.model_validate(layout.query),
        "document": SideConfig.model_validate(layout.document),
        "idf": str(layout.idf) if layout.idf is not None else None,
    }
    if layout.echo is not None:
        data["echo"] = layout.echo
    for name, value in explicit.items():
        if name == "model":
            continue
        data[name] = _side(data[name], value) if name in ("query", "document") else value
    for name in EncoderConfig.model_fields:
        data.setdefault(name, getattr(config, name))
    if data["query_mode"] == "siamese" and layout.query_mode == "inference-free":
        raise InputError("this SparseEncoder has no query model: it is inference-free", local)
    final = EncoderConfig.model_validate(data)
    return ResolvedConfig(final, source, layout, layout.model_dir)


def model_tokenizer(model: str) -> Path:
    """``tokenizer.json`` of a model: a local directory, a SparseEncoder directory or a hub id."""
    local, is_st = resolve_source(model)
    if is_st and local is not None:
        local = read_sentence_transformers(local).model_dir
    if local is not None:
        return tokenizer_file(local)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, "tokenizer.json"))
    except Exception as exc:
        raise InputError(f"no tokenizer.json for {model!r}: {exc}") from None
