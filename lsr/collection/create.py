"""Creating a collection directory: settings, vocabulary, encoder record and the first manifest.

The directory is assembled beside its final path and renamed into place, so a collection either
exists completely or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lsr.collection.config import CollectionConfig
from lsr.collection.manifest import write_manifest
from lsr.collection.schema import Schema
from lsr.errors import InputError
from lsr.io import fsync_path, rename_into_place
from lsr.vocab import Vocabulary

COLLECTION_FILE = "collection.json"


def create_collection(
    path: str | Path,
    *,
    vocab: Vocabulary | None = None,
    model: str | None = None,
    query_mode: str = "siamese",
    idf: str | Path | None = None,
    dense_model: str | None = None,
    config: CollectionConfig | None = None,
    schema: Mapping[str, str] | None = None,
    **options: Any,
) -> Path:
    """Write an empty collection at ``path`` (see :meth:`Collection.create`)."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise InputError("already exists and is not empty", path)
    if (vocab is None) == (model is None):
        raise InputError("give exactly one of vocab= (vectors) or model= (texts)")
    try:
        config = config or CollectionConfig(**options)
    except ValueError as exc:
        raise InputError(str(exc).splitlines()[-1] if "\n" in str(exc) else str(exc)) from None
    declared = Schema.declare(schema or {})
    info: dict[str, Any] = {"config": config.model_dump(mode="json"), "encoder": None}
    staging = path.with_name(f".{path.name}.creating-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if model is not None:
            from lsr.encoders import encoder_manifest, load_encoder

            overrides: dict[str, Any] = {"query_mode": query_mode}
            if idf is not None:
                overrides["idf"] = str(idf)
            encoder = load_encoder(model, **overrides)
            vocab = encoder.vocab
            info["encoder"] = encoder_manifest(encoder)
            if encoder.config.inference_free:
                encoder.query.save(staging)  # tokenizer.json + idf.json, fixed from now on
        if dense_model is not None:
            from lsr.encoders.dense_encoder import DenseEncoder

            dense = DenseEncoder(dense_model)
            info["dense"] = dense.identity()
            if config.dense_dim is None:
                config = config.model_copy(update={"dense_dim": dense.dim})
                info["config"] = config.model_dump(mode="json")
            elif config.dense_dim != dense.dim:
                raise InputError(f"dense_dim {config.dense_dim} but {dense_model} has {dense.dim}")
        assert vocab is not None
        vocab.save(staging / "vocab.json")
        info["vocab"] = {"size": len(vocab), "sha256": vocab.sha256, "source": vocab.source}
        info["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (staging / COLLECTION_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
        write_manifest(
            staging,
            {
                "generation": 0,
                "flushed_seq": 0,
                "segments": [],
                "schema": declared.to_json(),
                "next_segment": 1,
            },
        )
        for entry in staging.iterdir():
            fsync_path(entry)
        rename_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
