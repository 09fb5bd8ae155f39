"""An index is a directory that can be searched from anywhere and moved: the manifest records
where the siamese query model is (absolute), a moved or missing model is named clearly, and
``--model`` points at a copy of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SPLADE_TINY

QUERY = "vitamin D deficiency and cancer risk"


def _lsr(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lsr.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _hits(done: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    assert done.returncode == 0, done.stderr
    return [(line.split()[2], line.split()[1]) for line in done.stdout.strip().splitlines()]


@pytest.fixture(scope="module")
def built(beir_slice: Path, tmp_path_factory) -> dict[str, Path]:
    """A siamese index built with ``--model`` relative to the build's working directory."""
    root = tmp_path_factory.mktemp("movable")
    model = root / "models" / "splade"
    shutil.copytree(SPLADE_TINY, model)
    work = root / "work"
    work.mkdir()
    done = _lsr(
        work, "index", "build", "--corpus", str(beir_slice), "--model", "../models/splade",
        "-o", "idx", "--doc-max-length", "64", "--query-max-length", "32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {"root": root, "model": model, "index": work / "idx"}


def test_manifest_records_the_model_where_it_is(built):
    manifest = json.loads((built["index"] / "manifest.json").read_text())
    assert manifest["encoder"]["config"]["model"] == str(built["model"].resolve())
    assert manifest["encoder"]["model"]["source"] == "../models/splade"


def test_search_from_another_directory(built, tmp_path):
    """The relative --model of the build must not matter to a search run elsewhere."""
    here = _hits(_lsr(built["index"].parent, "search", "idx", QUERY, "-k", "3"))
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    assert _hits(_lsr(elsewhere, "search", str(built["index"]), QUERY, "-k", "3")) == here


def test_moved_index_and_moved_model(built, tmp_path):
    expected = _hits(_lsr(tmp_path, "search", str(built["index"]), QUERY, "-k", "3"))
    moved = tmp_path / "copy-of-index"
    shutil.copytree(built["index"], moved)
    assert _hits(_lsr(tmp_path, "search", str(moved), QUERY, "-k", "3")) == expected

    new_home = tmp_path / "model-moved-here"
    built["model"].rename(new_home)
    try:
        gone = _lsr(tmp_path, "search", str(moved), QUERY, "-k", "3")
        assert gone.returncode == 2 and "Traceback" not in gone.stderr
        message = gone.stderr.strip().splitlines()[-1]
        assert str(built["model"].resolve()) in message and "--model" in message
        again = _lsr(tmp_path, "search", str(moved), QUERY, "-k", "3", "--model", str(new_home))
        assert _hits(again) == expected
    finally:
        new_home.rename(built["model"])


def test_model_option_refuses_another_model(built, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(built["model"], other)
    config = json.loads((other / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6  # another model: same vocabulary, other numbers
    (other / "config.json").write_text(json.dumps(config))
    done = _lsr(tmp_path, "search", str(built["index"]), QUERY, "--model", str(other))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "config.json" in done.stderr and "not the model this index was built with" in done.stderr


def test_a_hub_id_stays_a_hub_id():
    from lsr.encoders.config import EncoderConfig
    from lsr.encoders.resolve import resolve_config

    resolved = resolve_config(EncoderConfig(model="naver/splade-v3"))  # offline: no look-up
    assert resolved.config.model == "naver/splade-v3" and resolved.local is None


def test_cli_reports_start_up_apart_from_the_query(built, tmp_path):
    """The printed latency is the query's; loading the model and the kernels is shown apart."""
    done = _lsr(tmp_path, "search", str(built["index"]), QUERY, "-k", "3")
    assert done.returncode == 0, done.stderr
    summary = done.stderr.strip().splitlines()[-1]
    query_part, startup_part = summary.split("; start-up ")
    assert "(encode " in query_part and ", search " in query_part
    assert "query encoder" in startup_part and "kernels" in startup_part and "open" in startup_part
