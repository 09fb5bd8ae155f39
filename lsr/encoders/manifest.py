"""What an index records about the encoder that built it (``manifest["encoder"]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsr.encoders.base import Encoder, SideEncoder
from lsr.encoders.idf_side import IdfQueryEncoder
from lsr.io import sha256_file_cached

MANIFEST_FORMAT = "lsr.encoder/1"


def model_files(directory: Path) -> dict[str, dict[str, Any]]:
    names = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix == ".safetensors")
    names += [directory / n for n in ("config.json", "tokenizer.json") if (directory / n).is_file()]
    return {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file_cached(p)} for p in names}


def _side_info(side: SideEncoder) -> dict[str, Any]:
    return {
        "family": side.config.family,
        "encoder": type(side).__name__,
        "random_head": getattr(side, "random_head", None),
    }


def encoder_manifest(encoder: Encoder) -> dict[str, Any]:
    """A JSON-able description of ``encoder`` for an index manifest.

    Shape::

        {"format": "lsr.encoder/1",
         "config": EncoderConfig dump (model = the resolved local directory or hub id),
         "model": {"source": what the caller named, "format": "transformers" |
                   "sentence-transformers", "local": absolute directory or None (hub id),
                   "hub_id": id or None, "files": {name: {"bytes", "sha256"}} (safetensors,
                   config.json, tokenizer.json of a local model; {} for a hub id),
                   "sentence_transformers": {"root", "modules"} or None},
         "vocab": {"size", "sha256"},
         "sides": {"query": {"family", "encoder", "random_head"}, "document": {...}},
         "idf": {"sha256", "nonzero", "n_docs", "source"} or None (siamese),
         "files": {"tokenizer": "tokenizer.json", "idf": "idf.json"} or None (siamese):
                  what the index directory must hold for load_query_encoder}
    """
    config = encoder.config
    origin = encoder.origin
    local = origin.get("local")
    if local is None and Path(config.model).is_dir():
        local = str(Path(config.model).resolve())
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "config": config.model_dump(mode="json"),
        "model": {
            "source": origin.get("source", config.model),
            "format": origin.get("format", "transformers"),
            "local": local,
            "hub_id": None if local is not None else config.model,
            "files": model_files(Path(local)) if local is not None else {},
            "sentence_transformers": (
                {"root": origin["st_root"], "modules": origin["st_modules"]}
                if origin.get("st_root")
                else None
            ),
        },
        "vocab": {"size": len(encoder.vocab), "sha256": encoder.vocab.sha256},
        "sides": {"query": _side_info(encoder.query), "document": _side_info(encoder.document)},
        "idf": None,
        "files": None,
    }
    if isinstance(encoder.query, IdfQueryEncoder):
        table = encoder.query.idf
        manifest["idf"] = {
            "sha256": table.sha256,
            "nonzero": int((table.weights != 0).sum()),
            "n_docs": table.n_docs,
            "source": table.source,
        }
        manifest["files"] = {"tokenizer": "tokenizer.json", "idf": "idf.json"}
    return manifest
