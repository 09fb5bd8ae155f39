"""`lsr collection ...`: the commands end to end, and their one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsr.cli import app
from lsr.collection import Collection

runner = CliRunner()


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["collection", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    (tmp_path / "vocab.json").write_text(json.dumps([f"t{i}" for i in range(8)]))
    rows = [
        {
            "id": f"d{i}",
            "text": f"document {i}",
            "vector": {f"t{i % 8}": 1.0, f"t{(i + 1) % 8}": 0.5},
            "metadata": {"year": 2000 + i % 4, "lang": "en" if i % 2 else "fr"},
        }
        for i in range(20)
    ]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "c"
    code, _, err = _run("create", path, "--vocab", tmp_path / "vocab.json", "--flush-docs", "6",
                        "--field", "year:number")  # fmt: skip
    assert code == 0, err
    code, _, err = _run("add", path, tmp_path / "docs.jsonl", "--batch-size", "4")
    assert code == 0, err
    assert "added 20 documents (0 replaced)" in err
    return path


def test_create_add_search_delete_compact(collection: Path, tmp_path: Path) -> None:
    code, out, err = _run("search", collection, "--vector", '{"t1": 1.0}', "-k", "3")
    assert code == 0, err
    assert [line.split()[-1] for line in out.splitlines()] == [
        "d1",
        "d17",
        "d9",
    ]  # ties: smaller id
    code, out, _ = _run(
        "search", collection, "--vector", '{"t1": 1.0}', "--filter", '{"lang": "fr"}', "--payload"
    )
    hits = [line.split()[2] for line in out.splitlines()]
    assert hits == ["d0", "d16", "d8"]  # t1 at weight 0.5 in the French documents
    assert '"lang": "fr"' in out and '"text": "document 0"' in out

    code, _, err = _run("delete", collection, "--filter", '{"year": {"gte": 2002}}')
    assert code == 0 and "deleted 10 documents; 10 live" in err
    code, _, err = _run("delete", collection, "d0", "nope")
    assert code == 0 and "deleted 1 documents (not found: nope); 9 live" in err
    code, out, _ = _run("get", collection, "d1")
    assert json.loads(out)["metadata"] == {"year": 2001, "lang": "en"}

    code, out, _ = _run("info", collection)
    info = json.loads(out)
    assert (info["live_docs"], info["deleted_docs"]) == (9, 9)
    code, _, err = _run("compact", collection)
    assert code == 0 and "9 deleted documents dropped" in err
    code, out, _ = _run("info", collection)
    info = json.loads(out)
    assert (info["live_docs"], info["deleted_docs"], len(info["segments"])) == (9, 0, 1)


def test_search_plan_blockmax_and_its_one_line_errors(collection: Path) -> None:
    vector = '{"t1": 1.0, "t2": 0.7, "t5": 0.2}'
    _, exact, _ = _run("search", collection, "--vector", vector, "-k", "5")
    code, out, err = _run("search", collection, "--vector", vector, "-k", "5", "--plan", "blockmax")
    assert code == 0 and out == exact, err
    code, out, err = _run(
        "search", collection, "--vector", vector, "-k", "5", "--plan", "approximate"
    )
    assert code == 0 and out == exact, err  # 3 terms: the approximate plan is exact
    for bad, word in ((["--heap-factor", "0.5"], "heap_factor"), (["--plan", "wand"], "plan")):
        code, out, err = _run("search", collection, "--vector", vector, *bad)
        assert code != 0 and word in err and len(err.strip().splitlines()) == 1, err


def test_replacing_documents_is_idempotent(collection: Path, tmp_path: Path) -> None:
    code, _, err = _run("add", collection, tmp_path / "docs.jsonl")
    assert code == 0 and "added 20 documents (20 replaced)" in err
    with Collection.open(collection) as c:
        assert len(c) == 20


def _expand(arg: str, names: dict[str, Path]) -> str:
    """``{name}`` placeholders (not JSON braces) replaced by paths."""
    for name, path in names.items():
        arg = arg.replace(f"{{{name}}}", str(path))
    return arg


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "{c}", "--vector", '{"t1": 1}', "--filter", '{"colour": "red"}'],
         "unknown field 'colour'"),
        (["search", "{c}", "--vector", '{"t1": 1}', "--filter", '{"year": "new"}'],
         "field 'year' is number"),
        (["search", "{c}", "--vector", '{"t1": 1}', "--filter", "{year"], "not valid JSON"),
        (["search", "{c}", "some text"], "no model"),
        (["get", "{c}", "d1", "missing"], "no live document with id 'missing'"),
        (["delete", "{c}"], "give document ids or --filter"),
        (["add", "{c}", "{bad}"], "bad.jsonl:2: field 'year' is number, got 'soon'"),
        (["add", "{c}", "{dup}"], "dup.jsonl:2: duplicate id 'x'"),
        (["search", "{tmp}/nowhere", "--vector", '{"t1": 1}'], "not an lsr collection"),
    ],
)  # fmt: skip
def test_clear_errors(collection: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.jsonl").write_text(
        '{"id": "ok", "vector": {"t1": 1}}\n'
        '{"id": "x", "vector": {"t1": 1}, "metadata": {"year": "soon"}}\n'
    )
    (tmp_path / "dup.jsonl").write_text('{"id": "x", "vector": {}}\n{"id": "x", "vector": {}}\n')
    names = {"c": collection, "bad": tmp_path / "bad.jsonl", "dup": tmp_path / "dup.jsonl",
             "tmp": tmp_path}  # fmt: skip
    code, _, err = _run(*[_expand(a, names) for a in args])
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    with Collection.open(collection) as c:  # nothing was written by a refused command
        assert len(c) == 20 and c.get(["ok"]) == {}


def test_a_second_writer_process_is_refused(collection: Path) -> None:
    with Collection.open(collection):
        code, _, err = _run("info", collection)
    assert code == 2 and "open in another process" in err
