"""The writer process of tests/test_collection_crash.py, and the plain model it is checked against.

Run as a script (``python _crash_writer.py PATH SEED MAX_OPS``) it opens the collection at PATH,
prints ``STATE <json>`` (what it recovered) and ``READY``, then performs a seeded random sequence
of writes, printing ``BEGIN <json op>`` before each and ``ACK <json op+count>`` after it returns.
The parent kills it (SIGKILL, through ``LSR_FAILPOINTS`` or a timer) and replays the ACK lines
on a plain dict to know what the reopened collection must hold.

``python _crash_writer.py --serve`` is a fork server: it pays for importing lsr (numba, scipy:
over a second) once and forks one writer per request, so that dozens of kills stay cheap.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

from collection_oracle import oracle_matches

N_TERMS = 8
TERMS = [f"t{i}" for i in range(N_TERMS)]
IDS = [f"d{i:02d}" for i in range(14)] + ["é", "a b"]
SCHEMA = {"n": "number", "tag": "keyword"}  # "x" (bool) is inferred at its first write

# the model: {id: [vector {term: weight}, metadata or None]} (JSON-shaped, compared with ==)
Model = dict[str, list[Any]]


def random_op(rng: random.Random) -> dict[str, Any]:
    """One write, flush or merge; vectors are on a 1/4 grid so every score is exact."""
    r = rng.random()
    if r < 0.5:
        ids = rng.sample(IDS, rng.randint(1, 4))
        vectors = [
            {t: rng.randint(1, 8) / 4 for t in rng.sample(TERMS, rng.randint(1, 3))} for _ in ids
        ]
        metadata = []
        for _ in ids:
            meta: dict[str, Any] = {}
            if rng.random() < 0.8:
                meta["n"] = rng.randint(0, 3)
            if rng.random() < 0.5:
                meta["tag"] = rng.choice("ab")
            if rng.random() < 0.2:
                meta["x"] = rng.random() < 0.5
            metadata.append(meta)
        return {"op": "upsert", "ids": ids, "vectors": vectors, "metadata": metadata}
    if r < 0.64:
        return {"op": "delete", "ids": rng.sample(IDS, rng.randint(1, 3))}
    if r < 0.72:
        flt = rng.choice(
            [{"n": rng.randint(0, 3)}, {"n": {"gte": rng.randint(2, 3)}}, {"tag": rng.choice("ab")}]
        )
        return {"op": "delete_by_filter", "filter": flt}
    if r < 0.86:
        return {"op": "flush"}
    return {"op": "merge", "everything": rng.random() < 0.3}


def apply_op(collection: Any, op: dict[str, Any]) -> int | None:
    """Perform ``op`` on a collection; the write's count (None for flush and merge)."""
    kind = op["op"]
    if kind == "upsert":
        return collection.upsert(op["ids"], vectors=op["vectors"], metadata=op["metadata"]).count
    if kind == "delete":
        return collection.delete(op["ids"]).count
    if kind == "delete_by_filter":
        return collection.delete_by_filter(op["filter"]).count
    if kind == "flush":
        collection.flush()
    else:
        collection.merge(everything=op["everything"])
    return None


def apply_model(model: Model, op: dict[str, Any]) -> int | None:
    """Apply ``op`` to the plain model in place; the count the collection must report."""
    kind = op["op"]
    if kind == "upsert":
        for doc_id, vector, meta in zip(op["ids"], op["vectors"], op["metadata"], strict=True):
            model[doc_id] = [dict(vector), dict(meta) or None]
        return len(op["ids"])
    if kind == "delete":
        ids = list(dict.fromkeys(op["ids"]))
        return sum(model.pop(doc_id, None) is not None for doc_id in ids)
    if kind == "delete_by_filter":
        doomed = [
            doc_id for doc_id, (_, meta) in model.items() if oracle_matches(op["filter"], meta)
        ]
        for doc_id in doomed:
            del model[doc_id]
        return len(doomed)
    return None


def read_state(collection: Any) -> Model:
    """Everything the collection answers, as a model: live ids, each document's vector (one
    single-term search per term gives every weight exactly) and its stored metadata. Ids that a
    search or the store returns but that are not live show up too (and fail the comparison)."""
    live = collection.snapshot().matching_ids(None)
    vectors: dict[str, dict[str, float]] = {doc_id: {} for doc_id in live}
    for term in TERMS:
        for hit in collection.search({term: 1.0}, 100):
            vectors.setdefault(hit.doc_id, {})[term] = hit.score
    stored = collection.get(sorted(set(IDS) | set(vectors)))
    state: Model = {}
    for doc_id in sorted(set(vectors) | set(stored)):
        meta = stored[doc_id][1] if doc_id in stored else None
        state[doc_id] = [vectors.get(doc_id, {}), meta or None]
    if len(live) != len(set(live)):
        state["<duplicate live ids>"] = [sorted(live), None]
    return state


def _emit(tag: str, body: Any = None) -> None:
    line = tag if body is None else f"{tag} {json.dumps(body, sort_keys=True)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    """``PATH SEED MAX_OPS [trace]``; trace: each ACK also says how many documents were buffered
    before the op and how often each failpoint had been passed before and after it
    (LSR_FAILPOINTS must arm them all, with a count too high to be reached)."""
    from lsr.collection import failpoints
    from lsr.collection.collection import Collection

    path, seed, max_ops = argv[1], int(argv[2]), int(argv[3])
    trace = argv[4:] == ["trace"]
    armed = dict(failpoints._ARMED)
    rng = random.Random(seed)
    collection = Collection.open(path)
    _emit("STATE", read_state(collection))
    _emit("READY")
    for _ in range(max_ops):
        op = random_op(rng)
        _emit("BEGIN", op)
        if trace:
            buffered = collection.info()["buffered_docs"]
            before = {name: armed[name] - left for name, left in failpoints._ARMED.items()}
        count = apply_op(collection, op)
        ack = dict(op, count=count)
        if trace:
            after = {name: armed[name] - left for name, left in failpoints._ARMED.items()}
            ack["trace"] = {"buffered": buffered, "before": before, "after": after}
        _emit("ACK", ack)
    collection.close()
    _emit("DONE")


def serve() -> None:
    """Fork server. Each stdin line ``{"argv": [PATH, SEED, ...], "failpoints": str | None,
    "out": file, "err": file}`` forks a writer (``LSR_FAILPOINTS`` set and the failpoints module
    re-read, stdout and stderr to the files) and answers ``{"pid": n}``, then ``{"exit": code}``
    (negative: killed by that signal) once it has died. The dead writer is left a zombie, so its
    pid stays ours to kill, until the line ``{"reap": pid}``."""
    import importlib
    import shutil
    import tempfile
    import threading
    import traceback

    import tqdm

    from lsr.collection import failpoints
    from lsr.collection.collection import Collection
    from lsr.vocab import Vocabulary

    tqdm.tqdm.monitor_interval = 0  # no tqdm monitor thread in the process that forks
    # load every numba kernel once (cached code still costs a second to load in each process)
    scratch = tempfile.mkdtemp(prefix="lsr-crash-warmup-")
    try:
        vocab = Vocabulary(TERMS, frozen=True)
        with Collection.create(
            os.path.join(scratch, "c"), vocab=vocab, flush_docs=5, merge_factor=2, block_size=2
        ) as collection:
            rng = random.Random(0)
            for _ in range(40):
                apply_op(collection, random_op(rng))
            collection.flush()
            collection.merge(everything=True)
            read_state(collection)
            for plan in ("auto", "taat", "forward"):
                collection.search({"t0": 1.0, "t1": 0.5}, 3, filter={"n": {"gte": 1}}, plan=plan)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def answer(body: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(body) + "\n")
        sys.stdout.flush()

    assert threading.active_count() == 1, threading.enumerate()  # fork a single thread
    for line in sys.stdin:
        request = json.loads(line)
        if "reap" in request:
            os.waitpid(request["reap"], 0)
            continue
        pid = os.fork()
        if pid == 0:  # the writer
            code = 1
            try:
                os.environ.pop("LSR_FAILPOINTS", None)
                if request["failpoints"]:
                    os.environ["LSR_FAILPOINTS"] = request["failpoints"]
                importlib.reload(failpoints)  # arms the points from the environment
                for fd, name in ((1, "out"), (2, "err")):
                    target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(target, fd)
                    os.close(target)
                main(["writer", *request["argv"]])
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        answer({"pid": pid})
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        killed = info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
        answer({"exit": -info.si_status if killed else info.si_status})


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(sys.argv)
