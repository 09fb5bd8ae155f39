"""``lsr serve``: the HTTP service (``service.app``) under uvicorn, settings from ``LSR_`` env."""

from __future__ import annotations

import os
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
    workers: Annotated[
        int | None, typer.Option(min=1, help="worker processes (LSR_WORKERS, default 1)")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="serve the sharded collections on Ray Serve: 'local' starts a local "
            "cluster, else the address of a running one (e.g. auto, ray://host:10001)"
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option(min=1, help="--ray: reader replicas per shard group")
    ] = 2,
    groups: Annotated[
        int | None,
        typer.Option(min=1, help="--ray: shard groups per collection (default: one per shard)"),
    ] = None,
) -> None:
    """Serve the collections in the data directory over HTTP (OpenAPI at /docs)."""
    require("the HTTP service", "fastapi", "uvicorn", "pydantic_settings", "prometheus_client")
    from service.settings import ServiceSettings

    given = {"data_dir": data_dir, "host": host, "port": port, "workers": workers}
    settings = ServiceSettings(**{k: v for k, v in given.items() if v})
    if ray is not None:
        require("serving on Ray", "ray")
        from service.ray_serve import run_on_ray

        run_on_ray(settings, address=ray, replicas=replicas, groups=groups, log=log)
        return
    import uvicorn

    from service.app import create_app

    log(
        f"lsr serve: {settings.data_dir} on http://{settings.host}:{settings.port}"
        f" ({settings.workers} worker{'s' if settings.workers > 1 else ''})"
    )
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
        return
    # each worker process builds its app from the environment: hand the settings on there
    os.environ.update(
        {f"LSR_{k.upper()}": str(v) for k, v in given.items() if v and k != "workers"}
    )
    uvicorn.run(
        "service.app:create_app", factory=True, workers=settings.workers,
        host=settings.host, port=settings.port, log_level="info",
    )  # fmt: skip
