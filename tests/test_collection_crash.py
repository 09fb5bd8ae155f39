"""Crash safety of a live collection: a writer subprocess (tests/_crash_writer.py) is killed with
SIGKILL inside a log append, during a flush, during a merge, between writing a manifest and
renaming it, while committing to the store, at random moments and while recovering.

After each kill the collection is reopened and must hold exactly the acknowledged writes, plus the
write in flight either wholly or not at all (never part of it); it must answer searches exactly,
leave nothing behind, take more writes and survive another reopen. A torn log tail is truncated
with a warning; a damaged segment, tombstone file, manifest or log record is an IndexFormatError.
"""

from __future__ import annotations

import copy
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from collection_oracle import brute_force, oracle_matches

from lsr.collection.collection import Collection
from lsr.errors import IndexFormatError
from lsr.vocab import Vocabulary
from tests._crash_writer import (
    IDS,
    SCHEMA,
    TERMS,
    Model,
    apply_model,
    apply_op,
    random_op,
    read_state,
)

WRITER = Path(__file__).with_name("_crash_writer.py")
FAILPOINTS = [
    "wal.torn_append",
    "flush.segment_written",
    "tombstones.written",
    "manifest.before_rename",
    "manifest.after_rename",
    "merge.segment_written",
    "store.before_commit",
]
WRITES = ("upsert", "delete", "delete_by_filter")
MAX_OPS = 80  # enough for every point to be passed 3 times with every seed used here
KILLED = -signal.SIGKILL


def new_collection(tmp_path: Path) -> Path:
    path = tmp_path / "c"
    vocab = Vocabulary(TERMS, frozen=True)
    Collection.create(
        path, vocab=vocab, flush_docs=5, merge_factor=2, block_size=2, schema=SCHEMA
    ).close()
    return path


# -- the writer process ----------------------------------------------------------------------------
def _env(failpoint: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LSR_FAILPOINTS"}
    env["HF_HUB_OFFLINE"] = "1"
    if failpoint is not None:
        env["LSR_FAILPOINTS"] = failpoint
    return env


class ForkServer:
    """``_crash_writer.py --serve``: forks writers that have lsr imported already."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=_env(None),
        )

    def send(self, body: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(body) + "\n").encode())

    def has_answer(self, timeout: float = 0.0) -> bool:
        return bool(select.select([self.proc.stdout], [], [], timeout)[0])

    def answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        if not self.has_answer(timeout):
            raise TimeoutError("the fork server did not answer")
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    forks = ForkServer()
    yield forks
    forks.close()


@dataclass
class Run:
    lines: list[str]  # complete lines only (a line cut by the kill is dropped)
    returncode: int
    stderr: str


def _wait_ready(out: Path, ended: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ended():
        if out.is_file() and b"\nREADY\n" in out.read_bytes():
            return
        time.sleep(0.002)


def run_writer(
    server: ForkServer | None,
    path: Path,
    seed: int,
    *,
    failpoint: str | None = None,
    kill_after: float | None = None,
    max_ops: int = MAX_OPS,
    trace: bool = False,
) -> Run:
    """Run the writer on ``path`` (forked by ``server``, or a fresh interpreter for None); it dies
    at ``failpoint`` ("name:n", through LSR_FAILPOINTS) or is killed by this process
    ``kill_after`` seconds after it reported READY (opened and recovered)."""
    out, err = path.parent / f"writer-{seed}.out", path.parent / f"writer-{seed}.err"
    argv = [str(path), str(seed), str(max_ops), *(["trace"] if trace else [])]
    if server is None:
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), *argv],
                stdout=stdout,
                stderr=stderr,
                env=_env(failpoint),
            )
        try:
            if kill_after is not None:
                _wait_ready(out, lambda: proc.poll() is not None)
                time.sleep(kill_after)
                proc.kill()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                code = proc.wait()
    else:
        server.send({"argv": argv, "failpoints": failpoint, "out": str(out), "err": str(err)})
        pid = server.answer(timeout=60)["pid"]
        code = None
        try:  # until reaped, pid is the writer's (alive or a zombie): safe to kill
            if kill_after is not None:
                _wait_ready(out, server.has_answer)
                time.sleep(kill_after)
                os.kill(pid, signal.SIGKILL)
            if not server.has_answer(timeout=120):
                os.kill(pid, signal.SIGKILL)
            code = server.answer(timeout=60)["exit"]
        finally:
            if code is None:  # something went wrong here: stop the writer, keep the protocol
                os.kill(pid, signal.SIGKILL)
                server.answer(timeout=60)
            server.send({"reap": pid})
    text = out.read_bytes().decode("utf-8")
    lines = text.split("\n")[:-1]  # the last piece is empty or cut short by the kill
    return Run(lines, code, err.read_text(encoding="utf-8", errors="replace"))


def _dedupe(models: list[Model]) -> list[Model]:
    seen: dict[str, Model] = {}
    for m in models:
        seen.setdefault(json.dumps(m, sort_keys=True), m)
    return list(seen.values())


def replay(candidates: list[Model], run: Run) -> tuple[list[Model], dict[str, Any] | None]:
    """What the collection may hold after ``run``, from the states it may have held before.

    Returns the states with every acknowledged op applied (and nothing else) and the op in
    flight when the writer died (None if none); the in-flight op may be applied on top of them.
    The writer's STATE line pins down which earlier state it recovered, and each ACK's count
    must match a state it could have been applied to.
    """
    inflight = None
    for line in run.lines:
        tag, _, body = line.partition(" ")
        if tag == "STATE":
            state = json.loads(body)
            assert state in candidates, (
                f"the writer recovered a state that is none of the possible ones\n"
                f"recovered: {state}\npossible: {candidates}"
            )
            candidates = [state]
        elif tag == "BEGIN":
            assert inflight is None, line
            inflight = json.loads(body)
        elif tag == "ACK":
            op = json.loads(body)
            count = op.pop("count")
            op.pop("trace", None)
            assert op == inflight, line
            after = []
            for model in candidates:
                model = copy.deepcopy(model)
                if apply_model(model, op) == count:
                    after.append(model)
            assert after, f"{line}: count {count} matches none of the possible states"
            candidates, inflight = _dedupe(after), None
    return candidates, inflight


def with_op(candidates: list[Model], op: dict[str, Any] | None) -> list[Model]:
    """``candidates`` and ``candidates`` with ``op`` wholly applied."""
    if op is None:
        return candidates
    applied = []
    for model in candidates:
        model = copy.deepcopy(model)
        apply_model(model, op)
        applied.append(model)
    return _dedupe(candidates + applied)


# -- checks on a reopened collection ---------------------------------------------------------------
def check_searches(collection: Collection, model: Model, rng: random.Random) -> None:
    """Random multi-term searches (with filters, every plan) equal brute force over ``model``."""
    for _ in range(4):
        query = {t: rng.randint(1, 8) / 4 for t in rng.sample(TERMS, rng.randint(2, 4))}
        k = rng.choice([2, 5, 50])
        flt = rng.choice([None, {"n": {"gte": 2}}, {"tag": "a"}, {"n": 1}])
        expected = brute_force(model, query, k, flt)
        for plan in ("auto", "taat", "forward", "blockmax"):
            hits = collection.search(query, k, filter=flt, plan=plan)
            assert [(h.doc_id, h.score) for h in hits] == expected, (query, flt, plan)
        if flt is not None:
            assert collection.count(flt) == sum(oracle_matches(flt, m) for _, m in model.values())


def check_no_leftovers(path: Path) -> None:
    """No staging directory, temporary file or unreferenced segment / tombstone file."""
    for entry in path.rglob("*"):
        name = entry.name
        assert ".lsr-staging-" not in name and ".tmp-" not in name, entry
        assert not name.endswith(".lsr-previous"), entry
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    segments = {e["name"] for e in manifest["segments"]}
    tombstones = {e["tombstones"]["file"] for e in manifest["segments"] if e.get("tombstones")}
    if (path / "segments").is_dir():
        assert {p.name for p in (path / "segments").iterdir()} == segments
    if (path / "tombstones").is_dir():
        assert {f"tombstones/{p.name}" for p in (path / "tombstones").iterdir()} == tombstones


def open_and_check(
    path: Path, candidates: list[Model], rng: random.Random
) -> tuple[Collection, Model, list[str]]:
    """Reopen after a kill: the state must be one of ``candidates``, searches exact, nothing
    left behind. Returns the open collection, its state and the recovery notes (warned too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collection = Collection.open(path)
    try:
        warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert warned == collection.recovery_notes
        state = read_state(collection)
        assert state in candidates, (
            f"reopened state is none of the possible ones (acknowledged writes, plus or minus "
            f"the one in flight)\nstate:    {state}\npossible: {candidates}"
        )
        assert len(collection) == len(state)
        check_searches(collection, state, rng)
        check_no_leftovers(path)
    except BaseException:
        collection.close()
        raise
    return collection, state, list(collection.recovery_notes)


def keep_working(collection: Collection, path: Path, model: Model, rng: random.Random) -> None:
    """The recovered collection takes more writes, flushes, merges and reopens intact."""
    model = copy.deepcopy(model)
    try:
        for _ in range(8):
            op = random_op(rng)
            expected = apply_model(model, op)
            assert apply_op(collection, op) == expected, op
        collection.flush()
        collection.merge(everything=True)
        assert read_state(collection) == model
    finally:
        collection.close()
    with Collection.open(path) as again:
        assert again.recovery_notes == []
        assert read_state(again) == model
        check_searches(again, model, rng)
        check_no_leftovers(path)


# -- kills at named points -------------------------------------------------------------------------
def check_kill_at(path: Path, run: Run, point: str, seed: int) -> dict[str, Any] | None:
    """The writer died at ``point``: reopen and check, then keep working. Returns the op in
    flight."""
    assert run.returncode == KILLED, f"the writer was not killed at {point}\n{run.stderr}"
    acked, inflight = replay([{}], run)
    rng = random.Random(seed)
    collection, state, notes = open_and_check(path, with_op(acked, inflight), rng)
    try:
        if point == "wal.torn_append":
            # half a record reached the log: detected by its CRC, truncated with a warning,
            # and the write it carried is gone
            assert inflight is not None and inflight["op"] in WRITES, inflight
            assert state in acked, "the torn write was (partly) applied"
            assert len(notes) == 1 and "torn write" in notes[0] and "truncated" in notes[0], notes
        else:
            assert notes == []
    except BaseException:
        collection.close()
        raise
    keep_working(collection, path, state, rng)
    return inflight


@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("point", FAILPOINTS)
def test_killed_at_a_failpoint(server: ForkServer, tmp_path: Path, point: str, nth: int) -> None:
    """Killed the 1st, 2nd, 3rd time the writer passes each point."""
    path = new_collection(tmp_path)
    seed = zlib.crc32(f"{point}:{nth}".encode())
    run = run_writer(server, path, seed, failpoint=f"{point}:{nth}")
    inflight = check_kill_at(path, run, point, seed)
    if point == "store.before_commit" and nth == 1:
        assert inflight is None  # died applying the (empty) log at open


TRACE_SEED = 11
TRACE_OPS = 100
CONTEXTS = {  # the op the writer is performing when it dies ("upsert": a flush it triggered)
    "wal.torn_append": ["upsert", "delete", "delete_by_filter"],
    "flush.segment_written": ["upsert", "flush"],
    "tombstones.written": ["upsert", "flush", "merge", "merge_all"],
    "manifest.before_rename": ["upsert", "flush", "merge", "merge_all"],
    "manifest.after_rename": ["upsert", "flush", "merge", "merge_all"],
    "merge.segment_written": ["merge", "merge_all"],
    "store.before_commit": ["delete", "delete_by_filter"],
}


def _context(op: dict[str, Any]) -> str:
    if op["op"] == "merge":
        return "merge_all" if op["everything"] else "merge"
    return str(op["op"])


@pytest.fixture(scope="module")
def passes(server: ForkServer, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One uninterrupted writer run (TRACE_SEED) that counts every failpoint pass per op."""
    path = new_collection(tmp_path_factory.mktemp("trace"))
    arm = ",".join(f"{point}:{10**9}" for point in FAILPOINTS)
    run = run_writer(server, path, TRACE_SEED, failpoint=arm, max_ops=TRACE_OPS, trace=True)
    assert run.returncode == 0 and run.lines[-1] == "DONE", run.stderr
    return [json.loads(line[4:]) for line in run.lines if line.startswith("ACK ")]


@pytest.mark.parametrize(
    ("point", "context"), [(p, c) for p, contexts in CONTEXTS.items() for c in contexts]
)
def test_killed_at_a_failpoint_inside(
    server: ForkServer, passes: list[dict[str, Any]], tmp_path: Path, point: str, context: str
) -> None:
    """Killed the first time the writer passes ``point`` inside a ``context`` op (a merge with
    documents in the write buffer, for merges): the same seeded run, up to that pass."""
    for ack in passes:
        trace = ack["trace"]
        if _context(ack) != context or trace["after"][point] == trace["before"][point]:
            continue
        if context.startswith("merge") and not trace["buffered"]:
            continue
        nth = trace["before"][point] + 1
        break
    else:
        pytest.fail(f"TRACE_SEED never passes {point} in {context}: choose another")
    path = new_collection(tmp_path)
    run = run_writer(server, path, TRACE_SEED, failpoint=f"{point}:{nth}")
    inflight = check_kill_at(path, run, point, TRACE_SEED)
    assert inflight is not None and _context(inflight) == context, inflight


# -- kills at random moments, several in a row on one directory ------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_killed_at_random_moments(server: ForkServer, tmp_path: Path, seed: int) -> None:
    """Each writer recovers what the previous one left and is killed again: after a random delay,
    or (odd seeds, second writer) while it replays the log at open."""
    path = new_collection(tmp_path)
    rng = random.Random(seed)
    rounds: list[str | None] = [None, "store.before_commit:1", None] if seed % 2 else [None, None]
    candidates: list[Model] = [{}]
    for i, failpoint in enumerate(rounds):
        run = run_writer(
            server,
            path,
            seed * 100 + i,
            failpoint=failpoint,
            kill_after=None if failpoint else rng.uniform(0.0, 1.0),
            max_ops=10_000,
        )
        assert run.returncode == KILLED, run.stderr
        if failpoint:
            assert not any(line.startswith("STATE") for line in run.lines)
        acked, inflight = replay(candidates, run)
        candidates = with_op(acked, inflight)
    collection, state, notes = open_and_check(path, candidates, rng)
    assert all("torn write" in note and "truncated" in note for note in notes), notes
    keep_working(collection, path, state, rng)


def test_killed_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """The same without the fork server: a new interpreter arms LSR_FAILPOINTS at import."""
    path = new_collection(tmp_path)
    run = run_writer(None, path, 7, failpoint="merge.segment_written:2")
    inflight = check_kill_at(path, run, "merge.segment_written", 7)
    assert inflight is not None and inflight["op"] == "merge", inflight


# -- damage ----------------------------------------------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _one(doc_id: str) -> dict[str, Any]:
    return {"ids": [doc_id], "vectors": [{"t0": 2.0}], "metadata": [{"n": 1, "tag": "b"}]}


def test_damage_is_detected(tmp_path: Path) -> None:
    """A flipped byte in a segment array, a tombstone file, the manifest or a log record in the
    middle of the log fails the open with an IndexFormatError that says where."""
    path = new_collection(tmp_path)
    rng = random.Random(5)
    model: Model = {}
    with Collection.open(path) as c:
        for i in range(4):
            ids = IDS[4 * i : 4 * i + 4]
            op = {
                "op": "upsert",
                "ids": ids,
                "vectors": [{t: rng.randint(1, 8) / 4 for t in rng.sample(TERMS, 3)} for _ in ids],
                "metadata": [{"n": rng.randint(0, 3)} for _ in ids],
            }
            apply_model(model, op)
            apply_op(c, op)
        c.flush()
        for op in ({"op": "delete", "ids": IDS[1:3]}, {"op": "flush"}):
            apply_model(model, op)
            apply_op(c, op)
        for op in ({"op": "delete", "ids": IDS[5:6]}, {"op": "upsert", **_one(IDS[0])}):
            apply_model(model, op)  # in the log only, not flushed
            apply_op(c, op)
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    damaged = [e for e in manifest["segments"] if e.get("tombstones")]
    assert damaged, manifest  # the deletes were flushed as a tombstone file
    name = damaged[0]["name"]

    array = path / "segments" / name / "post_codes.npy"
    assert array.is_file()
    _flip(array, array.stat().st_size - 1)
    with pytest.raises(IndexFormatError, match=rf"segment {name} is damaged.*post_codes"):
        Collection.open(path)
    _flip(array, array.stat().st_size - 1)

    tombstones = path / damaged[0]["tombstones"]["file"]
    _flip(tombstones, tombstones.stat().st_size - 1)
    with pytest.raises(IndexFormatError, match=rf"tombstones/{name}\..*corrupted"):
        Collection.open(path)
    _flip(tombstones, tombstones.stat().st_size - 1)

    manifest_file = path / "manifest.json"
    text = manifest_file.read_text(encoding="utf-8")
    manifest_file.write_text(text.replace('"live_docs": ', '"live_docs": 1', 1), encoding="utf-8")
    with pytest.raises(IndexFormatError, match="manifest checksum mismatch"):
        Collection.open(path)
    manifest_file.write_bytes(b'{"format": "lsr-coll')
    with pytest.raises(IndexFormatError, match="manifest is corrupted"):
        Collection.open(path)
    manifest_file.write_text(text, encoding="utf-8")

    logs = sorted((path / "wal").glob("*.log"))
    assert logs and logs[-1].stat().st_size > 0
    _flip(logs[-1], 20)  # inside the first of the two unflushed records
    with pytest.raises(IndexFormatError, match="corrupt write-ahead log record at byte offset 0"):
        Collection.open(path)
    _flip(logs[-1], 20)

    with Collection.open(path) as c:  # every repair undone: the collection is whole again
        assert c.recovery_notes == []
        assert read_state(c) == model
        check_searches(c, model, rng)


def test_leftovers_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    """What a writer killed mid-write leaves (a segment still in staging, a segment or tombstone
    file no manifest names, temporary files) is removed at open; what the manifest names stays."""
    path = new_collection(tmp_path)
    model: Model = {}
    with Collection.open(path) as c:
        for op in (
            {"op": "upsert", **_one(IDS[0])},
            {"op": "flush"},
            {"op": "upsert", **_one(IDS[1])},
            {"op": "flush"},
            {"op": "delete", "ids": IDS[:1]},
            {"op": "flush"},
            {"op": "upsert", **_one(IDS[2])},  # in the log only
        ):
            apply_model(model, op)
            apply_op(c, op)

    def listing() -> list[Path]:  # (the log and the store's files come and go)
        return sorted(
            p.relative_to(path)
            for p in path.rglob("*")
            if "wal" not in p.parts and not p.name.startswith("docs.sqlite")
        )

    kept = listing()
    leftovers = [
        path / "segments" / ".seg-000009.lsr-staging-123-0a1b2c3d" / "post_codes.npy",
        path / "segments" / "seg-000009" / "manifest.json",
        path / "segments" / "seg-000001.lsr-previous" / "manifest.json",
        path / "tombstones" / "seg-000001.0123456789ab.npy",
        path / "tombstones" / ".seg-000001.0123456789ab.tmp-123-0a1b2c3d.npy",
        path / ".manifest.json.tmp-123-0a1b2c3d",
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"partial")
    with Collection.open(path) as c:
        assert c.recovery_notes == []
        assert read_state(c) == model
    check_no_leftovers(path)
    assert listing() == kept
