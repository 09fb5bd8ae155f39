"""The model-backed sides of an encoder, built over one shared backbone.

``load_transformer_sides(config)`` returns ``(query_side, document_side)``; the query side is None
for inference-free encoders (the IDF side is built elsewhere). Both sides share one backbone.
A SPLADE query side alone (a search process) is loaded without transformers where that gives the
same vectors (:func:`~lsr.encoders.backbone.load_lean_backbone`).
"""

from __future__ import annotations

from lsr.encoders.backbone import load_backbone, load_lean_backbone
from lsr.encoders.base import SideEncoder
from lsr.encoders.binary_side import BinarySide
from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.encoders.mlp_side import MlpSide
from lsr.encoders.splade_side import Projection, SpladeSide
from lsr.errors import InputError


def load_transformer_sides(
    config: EncoderConfig, *, projection: Projection = "auto", document: bool = True
) -> tuple[SideEncoder | None, SideEncoder | None]:
    """(query side, document side) for ``config``; the query side is None for inference-free
    encoders, the document side None when ``document`` is False (a search process needs only
    the query side). One backbone is loaded and shared by both sides. ``projection`` picks
    SPLADE's vocabulary projection (SpladeSide)."""
    doc_cfg = config.document
    if doc_cfg.family == "idf":
        raise InputError("the document side cannot be 'idf' (idf is a query-side lookup)")
    want_query = not config.inference_free
    if not (want_query or document):
        raise InputError("an inference-free encoder has no model-backed query side")
    families = ({doc_cfg.family} if document else set()) | (
        {config.query.family} if want_query else set()
    )
    need = "lm" if "mlm" in families else "base" if "mlp" in families else None
    backbone = None
    if families == {"mlm"} and not document and not config.echo:  # a search process
        backbone = load_lean_backbone(config.model, device=config.device, dtype=config.dtype)
    if backbone is None:
        backbone = load_backbone(config.model, device=config.device, dtype=config.dtype, need=need)
    echo = bool(config.echo) if config.echo is not None else backbone.causal

    def make(side: SideConfig) -> SideEncoder:
        if side.family == "mlm":
            return SpladeSide(backbone, side, echo=echo, projection=projection)
        if side.family == "mlp":
            return MlpSide(backbone, side, echo=echo)
        return BinarySide(backbone, side)

    doc_side = make(doc_cfg) if document else None
    query = make(config.query) if want_query else None
    if isinstance(query, MlpSide) and isinstance(doc_side, MlpSide):
        query.head = doc_side.head  # siamese: one head too
        query.random_head, query.head_path = doc_side.random_head, doc_side.head_path
    return query, doc_side
