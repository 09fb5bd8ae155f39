"""schemathesis against the service's own OpenAPI document, on a real uvicorn holding seeded
data: every operation, every check (no server errors, responses match their schemas, documented
status codes, ...), seeded and bounded so the run is the same each time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

from tests.test_service import KEY, Server, _create

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261201
EXAMPLES = 25


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    try:
        _create(server)  # 40 documents with vectors, dense rows and metadata
        st = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
        run = subprocess.run(
            [
                st, "--config-file", str(CONFIG), "run", f"{server.base}/openapi.json",
                "--checks", "all", "--workers", "1", "--seed", str(SEED),
                "--max-examples", str(EXAMPLES), "--header", f"X-API-Key: {KEY}",
                "--request-timeout", "60", "--no-color",
            ],
            capture_output=True, text=True, timeout=1200,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )  # fmt: skip
        report = run.stdout[-6000:] + run.stderr[-2000:]
        assert run.returncode == 0, report
        assert "No issues found" in run.stdout or " passed" in run.stdout, report
    finally:
        server.stop()
