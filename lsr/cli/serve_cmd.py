"""``lsr serve``: the HTTP service (``service.app``) under uvicorn, settings from ``LSR_`` env."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lsr.cli.common import friendly_errors, log
from lsr.extras import require


@friendly_errors
def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="collections directory (LSR_DATA_DIR, default ./data)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="address (LSR_HOST, default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (LSR_PORT, default 8000)")] = None,
) -> None:
    """Serve the collections in the data directory over HTTP (OpenAPI at /docs)."""
    require("the HTTP service", "fastapi", "uvicorn", "pydantic_settings", "prometheus_client")
    import uvicorn

    from service.app import create_app
    from service.settings import ServiceSettings

    overrides = {k: v for k, v in {"data_dir": data_dir, "host": host, "port": port}.items() if v}
    settings = ServiceSettings(**overrides)
    log(f"lsr serve: {settings.data_dir} on http://{settings.host}:{settings.port}")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
