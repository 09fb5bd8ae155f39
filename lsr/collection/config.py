"""CollectionConfig: what a collection fixes at creation (weight coding, buffer, merges)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lsr.index.quantization import Codec


class CollectionConfig(BaseModel):
    """Settings recorded in ``collection.json``; every segment of the collection shares them."""

    model_config = ConfigDict(extra="forbid")

    quantization: Literal["float16", "float32", "uint8"] = Field(
        "float16",
        description="how weights are stored, fixed for the collection so scores compare exactly "
        "across segments (uint8 needs max_weight; larger weights are refused)",
    )
    max_weight: float | None = Field(None, gt=0, description="uint8 only: the weight of code 255")
    block_size: int = Field(128, ge=1, le=256, description="documents per doc-id block")
    flush_docs: int = Field(
        4096, ge=1, description="the write buffer becomes a segment at this many documents"
    )
    merge_factor: int = Field(
        8, ge=2, description="a merge joins this many segments of one size tier"
    )
    dense_dim: int | None = Field(None, ge=1, description="dense vector size (None: sparse only)")

    @model_validator(mode="after")
    def _uint8_needs_a_range(self) -> CollectionConfig:
        if self.quantization == "uint8" and self.max_weight is None:
            raise ValueError("quantization 'uint8' needs max_weight (the weight of code 255)")
        return self

    @property
    def codec(self) -> Codec:
        if self.quantization == "uint8":
            assert self.max_weight is not None
            return Codec("uint8", self.max_weight / 255.0)
        return Codec(self.quantization)
