"""Text encoders: texts in, SparseBatch out (see :mod:`lsr.encoders.base`).

Exports are lazy: ``import lsr.encoders`` imports neither torch nor transformers, and the
inference-free query path (:class:`IdfQueryEncoder`) never does.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EncoderConfig": "lsr.encoders.config",
    "SideConfig": "lsr.encoders.config",
    "SideEncoder": "lsr.encoders.base",
    "Encoder": "lsr.encoders.base",
    "IdfTable": "lsr.encoders.idf_table",
    "IdfQueryEncoder": "lsr.encoders.idf_side",
    "DenseEncoder": "lsr.encoders.dense_encoder",
    "load_encoder": "lsr.encoders.loading",
    "load_query_encoder": "lsr.encoders.loading",
    "compute_idf": "lsr.encoders.loading",
    "encoder_manifest": "lsr.encoders.manifest",
}

__all__ = [
    "DenseEncoder",
    "Encoder",
    "EncoderConfig",
    "IdfQueryEncoder",
    "IdfTable",
    "SideConfig",
    "SideEncoder",
    "compute_idf",
    "encoder_manifest",
    "load_encoder",
    "load_query_encoder",
]

if TYPE_CHECKING:
    from lsr.encoders.base import Encoder, SideEncoder
    from lsr.encoders.config import EncoderConfig, SideConfig
    from lsr.encoders.dense_encoder import DenseEncoder
    from lsr.encoders.idf_side import IdfQueryEncoder
    from lsr.encoders.idf_table import IdfTable
    from lsr.encoders.loading import compute_idf, load_encoder, load_query_encoder
    from lsr.encoders.manifest import encoder_manifest


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsr.encoders' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
