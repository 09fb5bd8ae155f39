"""Text encoders: texts in, SparseBatch out (see :mod:`lsr.encoders.base`).

Exports are lazy: ``import lsr.encoders`` imports neither torch nor transformers, and the
inference-free query path (:class:`IdfQueryEncoder`) never does.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "EncoderConfig": "lsr.encoders.base",
    "SideConfig": "lsr.encoders.base",
    "SideEncoder": "lsr.encoders.base",
    "Encoder": "lsr.encoders.base",
    "IdfTable": "lsr.encoders.idf",
    "IdfQueryEncoder": "lsr.encoders.idf",
    "load_encoder": "lsr.encoders.loading",
    "load_query_encoder": "lsr.encoders.loading",
    "encoder_manifest": "lsr.encoders.loading",
    "compute_idf": "lsr.encoders.loading",
}

__all__ = [
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
    from lsr.encoders.base import Encoder, EncoderConfig, SideConfig, SideEncoder
    from lsr.encoders.idf import IdfQueryEncoder, IdfTable
    from lsr.encoders.loading import (
        compute_idf,
        encoder_manifest,
        load_encoder,
        load_query_encoder,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsr.encoders' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
