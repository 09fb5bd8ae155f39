"""Service settings: ``LSR_`` environment variables (or a ``.env`` file), validated at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What ``lsr serve`` reads: ``LSR_DATA_DIR=/data LSR_API_KEY=... lsr serve``."""

    model_config = SettingsConfigDict(env_prefix="LSR_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="where collections live (one directory each)")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0: any free port)")
    api_key: SecretStr | None = Field(
        None, description="key for writes and collection management (header X-API-Key)"
    )
    read_requires_key: bool = Field(False, description="require the key for searches and reads")
    cors_origins: list[str] = Field(default_factory=list, description="allowed origins (off: [])")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="largest request body")
    max_limit: int = Field(1000, ge=1, description="largest limit (hits per page)")
    max_offset: int = Field(10_000, ge=0, description="largest offset")
    max_batch: int = Field(1000, ge=1, description="most documents or queries per request")
    max_text_chars: int = Field(100_000, ge=1, description="longest text")
    max_query_terms: int = Field(1024, ge=1, description="most terms in a sparse query")
    background_merge: bool = Field(True, description="merge segments in a background thread")
    workers: int = Field(
        1, ge=1, le=64, description="worker processes; each owns the collections whose lock "
        "it took and follows the others, forwarding their writes to the owner",
    )  # fmt: skip
    threads: int = Field(
        0, ge=0, le=1024, description="request threads (0: 4 per CPU); encoders and kernels use "
        "one core per request, so this bounds the cores a burst can ask for",
    )  # fmt: skip
    query_batching: bool = Field(True, description="micro-batch siamese query encoding")
    query_batch_size: int = Field(32, ge=1, le=1024, description="most texts per encode batch")
    query_batch_inflight: int = Field(
        0, ge=0, le=64, description="encode batches at once (0: one per CPU)"
    )
    query_batch_ms: float = Field(
        0.0, ge=0, le=100, description="wait this long for more texts before encoding (0: none)"
    )
