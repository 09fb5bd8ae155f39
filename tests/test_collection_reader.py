"""CollectionReader against its writer: after random writes, flushes and merges, a refreshed
reader answers every read (searches with filters, all plans and modes, payloads, counts, get,
vectors, info) exactly as the writer does, in the same process and from another process; it
never changes a file of the collection; a torn log tail waits until it is complete; segments a
merge deleted keep serving the reader until it refreshes.

Run as a script (``python test_collection_reader.py --writer PATH SEED``) it is the writer
process of the cross-process test: one line on stdin per command, one JSON line back.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from lsr.collection import records
from lsr.collection.collection import Collection
from lsr.collection.reader import CollectionReader
from lsr.collection.records import Upsert
from lsr.collection.scoring import PLANS
from lsr.collection.wal import encode_record, log_name
from lsr.errors import IndexFormatError, InputError
from lsr.retrieval import FusionConfig
from lsr.vocab import Vocabulary

N_TERMS = 8
TERMS = [f"t{i}" for i in range(N_TERMS)]
VOCAB = Vocabulary(TERMS, frozen=True)
IDS = [f"d{i:02d}" for i in range(18)] + ["é", "a b"]
SCHEMA = {"n": "number", "tag": "keyword", "x": "bool"}
QUERIES = [{"t0": 1.0}, {"t1": 0.5, "t3": 2.0, "t5": 1.0}, {t: 1.0 for t in TERMS}]
DENSE_QUERIES = [[1.0, 0.0], [0.25, -1.0], [-0.5, 0.5]]
FILTERS = [
    None,
    {"n": {"gte": 2}},
    {"tag": "a"},
    {"not": {"tag": "b"}},
    {"or": [{"n": 0}, {"x": True}]},
]
OPTIONS = {"flush_docs": 4, "merge_factor": 2, "block_size": 2, "dense_dim": 2}


def create(path: Path, **options: Any) -> Collection:
    return Collection.create(path, vocab=VOCAB, schema=SCHEMA, **(OPTIONS | options))


def random_op(rng: random.Random) -> dict[str, Any]:
    """One write, flush or merge; weights on a 1/4 grid."""
    r = rng.random()
    if r < 0.5:
        ids = rng.sample(IDS, rng.randint(1, 4))
        docs = []
        for doc_id in ids:
            meta: dict[str, Any] = {}
            if rng.random() < 0.8:
                meta["n"] = rng.randint(0, 3)
            if rng.random() < 0.5:
                meta["tag"] = rng.choice("ab")
            if rng.random() < 0.3:
                meta["x"] = rng.random() < 0.5
            docs.append(
                {
                    "id": doc_id,
                    "vector": {
                        t: rng.randint(1, 8) / 4 for t in rng.sample(TERMS, rng.randint(1, 3))
                    },
                    "dense": [rng.randint(-4, 4) / 4 for _ in range(2)],
                    "text": None if rng.random() < 0.2 else f"text of {doc_id} #{rng.random()}",
                    "meta": meta,
                }
            )
        return {"op": "upsert", "docs": docs}
    if r < 0.64:
        return {"op": "delete", "ids": rng.sample(IDS, rng.randint(1, 3))}
    if r < 0.72:
        return {"op": "delete_by_filter", "filter": rng.choice(FILTERS[1:])}
    if r < 0.88:
        return {"op": "flush"}
    return {"op": "merge", "everything": rng.random() < 0.3}


def random_upsert(rng: random.Random) -> dict[str, Any]:
    while (op := random_op(rng))["op"] != "upsert":
        pass
    return op


def apply_op(c: Collection, op: dict[str, Any]) -> None:
    kind = op["op"]
    if kind == "upsert":
        docs = op["docs"]
        c.upsert(
            [d["id"] for d in docs],
            vectors=[d["vector"] for d in docs],
            dense=[d["dense"] for d in docs],
            texts=[d["text"] for d in docs],
            metadata=[d["meta"] for d in docs],
        )
    elif kind == "delete":
        c.delete(op["ids"])
    elif kind == "delete_by_filter":
        c.delete_by_filter(op["filter"])
    elif kind == "flush":
        c.flush()
    else:
        c.merge(everything=op["everything"])


def observe(c: Collection, *, payload: bool = True) -> dict[str, Any]:
    """Everything a reader can be asked, as JSON-shaped data (floats survive JSON exactly)."""
    out: dict[str, Any] = {"len": len(c)}
    info = c.info()
    for key in ("path", "log_bytes", "store_bytes"):
        info.pop(key)
    out["info"] = info
    for qi, query in enumerate(QUERIES):
        dense = DENSE_QUERIES[qi]
        for fi, flt in enumerate(FILTERS):
            for plan in PLANS:
                out[f"sparse|{qi}|{fi}|{plan}"] = c.search(query, 3, filter=flt, plan=plan)
            out[f"all|{qi}|{fi}"] = c.search(query, 100, filter=flt)
            if c.config.dense_dim is None:
                continue
            out[f"dense|{qi}|{fi}"] = c.search(None, 4, filter=flt, mode="dense", dense=dense)
            out[f"hybrid|{qi}|{fi}"] = c.search(
                query, 4, filter=flt, mode="hybrid", dense=dense, fusion=FusionConfig(depth=6)
            )
        if payload:
            out[f"payload|{qi}"] = [
                [m.id, m.score, m.text, m.metadata] for m in c.search(query, 100, with_payload=True)
            ]
    for fi, flt in enumerate(FILTERS):
        out[f"count|{fi}"] = c.count(flt)
    if payload:
        out["get"] = c.get(IDS)
    out["vectors"] = {
        i: [v.terms.tolist(), v.weights.tolist(), None if v.dense is None else v.dense.tolist()]
        for i, v in c.vectors(IDS).items()
    }
    return json.loads(json.dumps(out, sort_keys=True))


def listing(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and directory under ``root``."""
    out: dict[str, tuple[int, int] | None] = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = None if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


def drop_merged_away(root: Path) -> None:
    """Delete the segment directories the manifest no longer names, as a writer does after a
    merge (the current writer leaves them to its next open)."""
    names = {e["name"] for e in json.loads((root / "manifest.json").read_text())["segments"]}
    for entry in (root / "segments").iterdir():
        if entry.name not in names:
            shutil.rmtree(entry)


# -- same process ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reader_follows_writer(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    writer = create(tmp_path / "c")
    reader = CollectionReader.open(tmp_path / "c")
    try:
        assert observe(reader) == observe(writer)
        for step in range(70):
            apply_op(writer, random_op(rng))
            if rng.random() < 0.35:  # several writes, flushes and merges between refreshes
                assert reader.refresh() == writer.info()["applied_seq"]
                assert observe(reader) == observe(writer), step
            if step % 25 == 24:  # a reader opened from scratch at this point agrees too
                with CollectionReader.open(tmp_path / "c", verify=True) as fresh:
                    assert observe(fresh) == observe(writer)
        reader.refresh()
        assert observe(reader) == observe(writer)
        assert reader.refresh() == reader.info()["applied_seq"]  # nothing new: same seq
    finally:
        reader.close()
        writer.close()


def test_reader_changes_no_file(tmp_path: Path) -> None:
    rng = random.Random(7)
    writer = create(tmp_path / "c")
    for _ in range(30):
        apply_op(writer, random_op(rng))
    writer.flush()
    writer.upsert(["new"], vectors=[{"t0": 1.0}], dense=[[1, 0]], texts=["in the log only"])

    def session() -> None:
        with CollectionReader.open(tmp_path / "c", verify=True) as reader:
            reader.refresh()
            observe(reader)
            reader.refresh()

    before = listing(tmp_path / "c")
    assert any(name.startswith("wal/") for name in before)
    session()  # the writer is open and idle
    assert listing(tmp_path / "c") == before
    expected = observe(writer)
    writer.close()
    before = listing(tmp_path / "c")
    assert "docs.sqlite-wal" not in before  # the store is read without SQLite's shared files
    session()
    with CollectionReader.open(tmp_path / "c") as reader:  # no writer at all
        assert observe(reader) == expected
    assert listing(tmp_path / "c") == before


def test_torn_tail_waits_until_complete(tmp_path: Path) -> None:
    writer = create(tmp_path / "c", dense_dim=None)
    writer.upsert(["a", "b"], vectors=[{"t0": 1.0}, {"t1": 1.0}], texts=["A", "B"])
    writer.flush()
    writer.upsert(["c"], vectors=[{"t0": 0.5}], metadata=[{"n": 1}])
    writer.close()
    reader = CollectionReader.open(tmp_path / "c")
    seq = reader.refresh()
    wal = tmp_path / "c" / "wal"
    last = wal / sorted(os.listdir(wal))[-1]
    new = Upsert(
        ["new"],
        np.array([0, 1], dtype=np.int64),
        np.array([2], dtype=np.int32),
        reader.codec.encode(np.array([1.5])),
        None,
        [{"n": 3}],
        ["fresh text"],
    )
    frame = encode_record(seq + 1, records.encode(new))
    for piece in (frame[:10], frame[10:-3]):  # a torn header, then a torn payload
        with open(last, "ab") as f:
            f.write(piece)
        assert reader.refresh() == seq
        assert reader.get(["new"]) == {}
        assert reader.count() == 3
    with open(last, "ab") as f:
        f.write(frame[-3:])
    assert reader.refresh() == seq + 1
    assert reader.get(["new"]) == {"new": ("fresh text", {"n": 3})}
    assert reader.search({"t2": 1.0}, 5) == [("new", 1.5)]
    # half of another record, then a writer opens: it truncates the tail and writes a new file
    with open(last, "ab") as f:
        f.write(encode_record(seq + 2, records.encode(new))[:20])
    assert reader.refresh() == seq + 1
    with pytest.warns(RuntimeWarning, match="torn write"):
        writer = Collection.open(tmp_path / "c")
    try:
        writer.upsert(["d"], vectors=[{"t3": 2.0}], texts=["D"])
        assert (wal / log_name(seq + 2)).is_file()
        assert reader.refresh() == seq + 2
        assert observe(reader) == observe(writer)
        assert reader.get(["d", "new"]) == {"d": ("D", None), "new": ("fresh text", {"n": 3})}
    finally:
        writer.close()
        reader.close()


def test_segments_deleted_under_the_reader(tmp_path: Path) -> None:
    writer = create(tmp_path / "c")
    rng = random.Random(11)
    while len(writer.info()["segments"]) < 3:
        apply_op(writer, random_op(rng))
    reader = CollectionReader.open(tmp_path / "c")
    try:
        old = {s["name"] for s in reader.info()["segments"]}
        seen = observe(reader, payload=False)
        assert seen == observe(writer, payload=False)
        for _ in range(6):
            apply_op(writer, random_upsert(rng))
        writer.delete(IDS[:3])
        writer.flush()
        writer.merge(everything=True)
        writer.close()  # its next open deletes what the merge left (see drop_merged_away)
        writer = Collection.open(tmp_path / "c")
        assert not any((tmp_path / "c" / "segments" / name).exists() for name in old)
        assert observe(reader, payload=False) == seen  # still the maps of the deleted files
        reader.refresh()
        assert reader.info()["generation"] == writer.info()["generation"]
        assert observe(reader) == observe(writer)
    finally:
        reader.close()
        writer.close()


def test_refresh_retries_when_files_vanish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lsr.collection import reader as reader_module

    writer = create(tmp_path / "c")
    writer.upsert(["a", "b"], vectors=[{"t0": 1.0}, {"t1": 1.0}], dense=[[0, 1], [1, 0]])
    reader = CollectionReader.open(tmp_path / "c")
    writer.flush()  # the reader's next refresh opens this new segment ...
    opened = reader_module.Segment.open
    vanished: list[str] = []

    def open_after_a_merge(path: Path, name: str, *args: Any, **kwargs: Any) -> Any:
        if not vanished:  # ... just after a merge deleted it
            writer.upsert(["c"], vectors=[{"t2": 1.0}], dense=[[1, 1]])
            writer.flush()
            writer.merge(everything=True)
            drop_merged_away(tmp_path / "c")
            vanished.append(name)
            assert not path.exists()
        return opened(path, name, *args, **kwargs)

    monkeypatch.setattr(reader_module, "Segment", SimpleNamespace(open=open_after_a_merge))
    try:
        reader.refresh()
        assert vanished
        assert observe(reader) == observe(writer)

        def gone(directory: Path, pos: Any) -> Any:
            raise FileNotFoundError(directory / "gone.log")

        monkeypatch.setattr(reader_module, "_read_log", gone)
        before = observe(reader)
        writer.upsert(["d"], vectors=[{"t3": 1.0}], dense=[[0, 0]])
        writer.flush()
        with pytest.raises(IndexFormatError, match="kept disappearing"):
            reader.refresh()
        assert observe(reader) == before  # the previous state is intact
        monkeypatch.undo()
        reader.refresh()
        assert observe(reader) == observe(writer)
    finally:
        reader.close()
        writer.close()


def test_searches_during_refreshes(tmp_path: Path) -> None:
    writer = create(tmp_path / "c")
    reader = CollectionReader.open(tmp_path / "c")
    errors: list[BaseException] = []
    done = threading.Event()

    def search_loop() -> None:
        try:
            while not done.is_set():
                for flt in FILTERS:
                    seq = reader.snapshot().seq
                    hits = reader.search(QUERIES[2], 100, filter=flt, with_payload=True)
                    count = reader.count(flt)
                    assert len({h.id for h in hits}) == len(hits)
                    if reader.snapshot().seq == seq:  # no refresh published in between
                        assert count >= len(hits)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=search_loop)
    thread.start()
    rng = random.Random(5)
    try:
        for _ in range(60):
            apply_op(writer, random_op(rng))
            reader.refresh()
        assert observe(reader) == observe(writer)
    finally:
        done.set()
        thread.join()
        reader.close()
        writer.close()
    assert not errors, errors


def test_read_only_and_closed(tmp_path: Path) -> None:
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(IndexFormatError, match="not an lsr collection"):
            CollectionReader.open(path)
    create(tmp_path / "c").close()
    reader = CollectionReader.open(tmp_path / "c")
    calls = [
        lambda: reader.upsert(["a"], vectors=[{"t0": 1.0}]),
        lambda: reader.delete(["a"]),
        lambda: reader.delete_by_filter({"n": 1}),
        reader.flush,
        reader.merge,
        reader.compact,
        lambda: CollectionReader.create(tmp_path / "d", vocab=VOCAB),
    ]
    for call in calls:
        with pytest.raises(InputError, match="read-only"):
            call()
    assert not (tmp_path / "d").exists()
    reader.close()
    reader.close()
    for call in (lambda: reader.search({"t0": 1.0}), reader.refresh, lambda: reader.get(["a"])):
        with pytest.raises(InputError, match="closed"):
            call()
    assert "closed" in repr(reader)


# -- another process ------------------------------------------------------------------------------
def test_reader_follows_a_writer_process(tmp_path: Path) -> None:
    create(tmp_path / "c").close()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--writer", str(tmp_path / "c"), "21"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def ask(command: str) -> Any:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    reader = None
    try:
        assert ask("hello") == "ready"
        with pytest.raises(InputError, match="another process"):
            Collection.open(tmp_path / "c")
        reader = CollectionReader.open(tmp_path / "c")
        rng = random.Random(4)
        for _ in range(12):
            expected = ask(f"steps {rng.randint(1, 6)}")  # the writer is idle once it answers
            reader.refresh()
            assert observe(reader) == expected
        # refreshes while the writer is busy: never an error, never a step back
        proc.stdin.write("steps 80\n")
        proc.stdin.flush()
        seqs = []
        while True:
            seqs.append(reader.refresh())
            reader.search(QUERIES[1], 5, filter=FILTERS[1], with_payload=True)
            if len(seqs) > 5 and seqs[-1] == seqs[-2] == seqs[-3]:
                break
        expected = json.loads(proc.stdout.readline())
        reader.refresh()
        assert seqs == sorted(seqs)
        assert observe(reader) == expected
    finally:
        if reader is not None:
            reader.close()
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def _writer_main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    with Collection.open(path) as writer:
        for line in sys.stdin:
            command = line.split()
            if command[0] == "steps":
                for _ in range(int(command[1])):
                    apply_op(writer, random_op(rng))
                answer: Any = observe(writer)
            else:
                answer = "ready"
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["--writer"]:
    _writer_main(sys.argv[2], int(sys.argv[3]))
