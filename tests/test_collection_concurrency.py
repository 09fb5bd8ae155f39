"""A live collection under concurrent writers, searchers, flushes and merges, checked against a
model: every acknowledged write has a distinct log sequence number (1..N, no gaps), every search
equals the brute-force top-k of the model at some sequence number between the snapshot seq read
just before it and the one read just after it, a writer reads its own writes, concurrent writers
share fsyncs (group commit), and the state after close + reopen is the model's final state.

Weights and query weights lie on a 1/4 grid, so float scores are exact and results compare with
``==``. Pass/fail does not depend on the interleaving: any valid serialisation passes."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from collection_oracle import brute_force, oracle_matches

from lsr.collection.collection import Collection, Match
from lsr.collection.merge_policy import pick_merge
from lsr.vocab import Vocabulary

N_WRITERS = 3
N_SEARCHERS = 3
OPS_PER_WRITER = 60
N_PRIVATE = 3  # private ids (each with its own term) per writer, for read-your-writes
SHARED_TERMS = [f"t{i}" for i in range(20)]
PRIVATE_TERMS = [[f"u{w}_{j}" for j in range(N_PRIVATE)] for w in range(8)]
VOCAB = Vocabulary(SHARED_TERMS + [t for ts in PRIVATE_TERMS for t in ts], frozen=True)
SCHEMA = {"n": "number", "k": "keyword"}
POOL = [f"d{i:02d}" for i in range(24)]  # shared ids: writers collide and replace each other
SEARCH_FILTERS: list[dict[str, Any]] = [
    {"k": "a"},
    {"k": {"in": ["b", "c"]}},
    {"n": {"gte": 3}},
    {"n": {"gt": 1, "lte": 4}},
    {"not": {"k": "a"}},
    {"or": [{"k": "b"}, {"n": {"lt": 2}}]},
    {"n": {"exists": False}},
    {"k": {"ne": "c"}},
]
# delete_by_filter only with filters that need a field: private documents have no metadata, so
# only their own writer ever changes them and read-your-writes can be checked exactly
DELETE_FILTERS: list[dict[str, Any]] = [
    {"k": "a"},
    {"n": {"gte": 4}},
    {"and": [{"k": "b"}, {"n": {"lt": 2}}]},
    {"k": {"in": ["c"]}},
]
MIN_SEARCHES = 20  # per searcher, even if the writers finish first
JOIN_TIMEOUT = 300.0  # only so that a deadlock fails the test instead of hanging it

Vector = dict[str, float]
Meta = dict[str, Any] | None
State = dict[str, tuple[Vector, Meta]]


def grid_weight(rng: random.Random) -> float:
    return rng.randint(1, 8) / 4  # exact in float16 and in float32 sums


def random_vector(rng: random.Random, terms: list[str], most: int) -> Vector:
    return {t: grid_weight(rng) for t in rng.sample(terms, rng.randint(1, most))}


def random_meta(rng: random.Random) -> Meta:
    meta: dict[str, Any] = {}
    if rng.random() < 0.8:
        meta["n"] = rng.randint(0, 5)
    if rng.random() < 0.8:
        meta["k"] = rng.choice("abc")
    return meta


class Recorder:
    """What the threads saw; appended from many threads (list.append is atomic)."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, str, Any, int]] = []  # (seq, kind, data, count)
        self.searches: list[tuple[int, int, Vector, int, Any, list[tuple[str, float]]]] = []
        self.payloads: list[tuple[int, str, Meta]] = []  # (s0, id, stored metadata)
        self.counts: list[tuple[int, int, Any, int]] = []
        self.errors: list[BaseException] = []

    def search(
        self,
        c: Collection,
        query: Vector,
        k: int,
        flt: Any = None,
        *,
        plan: str = "auto",
        with_payload: bool = False,
    ) -> tuple[int, list[tuple[str, float]]]:
        s0 = c.snapshot().seq
        hits = c.search(query, k, filter=flt, plan=plan, with_payload=with_payload)
        s1 = c.snapshot().seq
        pairs = [(h.id, h.score) if isinstance(h, Match) else (h.doc_id, h.score) for h in hits]
        self.searches.append((s0, s1, query, k, flt, pairs))
        if with_payload:
            self.payloads.extend((s0, h.id, h.metadata) for h in hits)
        return s0, pairs

    def count(self, c: Collection, flt: Any) -> None:
        s0 = c.snapshot().seq
        n = c.count(flt) if flt is not None else len(c)
        s1 = c.snapshot().seq
        self.counts.append((s0, s1, flt, n))


def run_threads(
    targets: list[Callable[[], None]], rec: Recorder, names: list[str] | None = None
) -> list[threading.Thread]:
    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                rec.errors.append(exc)

        return run

    threads = [
        threading.Thread(target=guarded(fn), daemon=True, name=None if names is None else names[i])
        for i, fn in enumerate(targets)
    ]
    for t in threads:
        t.start()
    return threads


def join_all(threads: list[threading.Thread], rec: Recorder) -> None:
    for t in threads:
        t.join(JOIN_TIMEOUT)
        assert not t.is_alive(), "a thread is stuck (deadlock?)"
    if rec.errors:
        raise rec.errors[0]


def writer(c: Collection, w: int, rec: Recorder) -> Callable[[], None]:
    rng = random.Random(1000 + w)
    private_ids = [f"p{w}_{j}" for j in range(N_PRIVATE)]
    private_live: dict[str, float] = {}  # private id -> weight of its private term

    def check_after_write(seq: int) -> None:
        """Read-your-writes for any write: the next search sees a state at or after it."""
        query = random_vector(rng, SHARED_TERMS, 3)
        s0, _ = rec.search(c, query, rng.choice([3, 10]), rng.choice([None, *SEARCH_FILTERS]))
        assert s0 >= seq

    def run() -> None:
        for _ in range(OPS_PER_WRITER):
            roll = rng.random()
            if roll < 0.45:
                ids = rng.sample(POOL, rng.randint(1, 3))
                docs = [(i, random_vector(rng, SHARED_TERMS, 4), random_meta(rng)) for i in ids]
                result = c.upsert(ids, vectors=[d[1] for d in docs], metadata=[d[2] for d in docs])
                rec.writes.append((result.seq, "upsert", docs, result.count))
            elif roll < 0.65:
                ids = rng.sample(POOL, rng.randint(1, 3))
                result = c.delete(ids)
                rec.writes.append((result.seq, "delete", ids, result.count))
            elif roll < 0.72:
                flt = rng.choice(DELETE_FILTERS)
                result = c.delete_by_filter(flt)
                rec.writes.append((result.seq, "filter", flt, result.count))
            elif roll < 0.75:
                c.flush()
                continue
            else:  # a private document: exact read-your-writes
                j = rng.randrange(N_PRIVATE)
                doc_id, term = private_ids[j], PRIVATE_TERMS[w][j]
                if doc_id in private_live:
                    result = c.delete([doc_id])
                    rec.writes.append((result.seq, "delete", [doc_id], result.count))
                    assert result.count == 1
                    del private_live[doc_id]
                    expected = []
                else:
                    weight = grid_weight(rng)
                    vector = {term: weight, **random_vector(rng, SHARED_TERMS, 2)}
                    result = c.upsert([doc_id], vectors=[vector])
                    docs = [(doc_id, vector, None)]
                    rec.writes.append((result.seq, "upsert", docs, result.count))
                    private_live[doc_id] = weight
                    expected = [(doc_id, weight * 1.0)]
                s0, hits = rec.search(c, {term: 1.0}, 5, plan=rng.choice(["taat", "forward"]))
                assert s0 >= result.seq
                assert hits == expected, (doc_id, result.seq, hits)
                continue
            if rng.random() < 0.3:
                check_after_write(result.seq)

    return run


def searcher(c: Collection, s: int, rec: Recorder, done: threading.Event) -> Callable[[], None]:
    rng = random.Random(2000 + s)
    all_terms = SHARED_TERMS + [t for ts in PRIVATE_TERMS[:N_WRITERS] for t in ts]

    def run() -> None:
        n = 0
        while n < MIN_SEARCHES or not done.is_set():
            n += 1
            if rng.random() < 0.1:
                rec.count(c, rng.choice([None, *SEARCH_FILTERS]))
                continue
            query = random_vector(rng, SHARED_TERMS if rng.random() < 0.8 else all_terms, 3)
            rec.search(
                c,
                query,
                rng.choice([1, 3, 10, 50]),
                rng.choice([None, None, None, *SEARCH_FILTERS]),
                plan=rng.choice(["auto", "auto", "taat", "forward"]),
                with_payload=rng.random() < 0.1,
            )

    return run


def replay_model(rec: Recorder) -> list[State]:
    """The model's state after each seq (index 0: empty), from the acknowledged writes in seq
    order; checks every seq 1..N appears exactly once and every write's count."""
    writes = sorted(rec.writes, key=lambda w: w[0])
    seqs = [w[0] for w in writes]
    assert seqs == list(range(1, len(writes) + 1)), "log sequence numbers are not 1..N, unique"
    state: State = {}
    states = [{}]
    for seq, kind, data, count in writes:
        if kind == "upsert":
            for doc_id, vector, meta in data:
                state[doc_id] = (vector, meta)
            assert count == len(data), seq
        elif kind == "delete":
            existed = [i for i in data if i in state]
            assert count == len(existed), (seq, data)
            for doc_id in existed:
                del state[doc_id]
        else:  # delete by filter: every document matching it just before its seq
            doomed = [i for i, (_, meta) in state.items() if oracle_matches(data, meta)]
            assert count == len(doomed), (seq, data, count, doomed)
            for doc_id in doomed:
                del state[doc_id]
        states.append(dict(state))
    return states


def check_searches(rec: Recorder, states: list[State]) -> None:
    for s0, s1, query, k, flt, hits in rec.searches:
        assert 0 <= s0 <= s1 < len(states)
        valid = any(brute_force(states[s], query, k, flt) == hits for s in range(s0, s1 + 1))
        assert valid, (
            f"search {query} k={k} filter={flt} between seq {s0} and {s1} returned {hits}; "
            f"the model at {s0} says {brute_force(states[s0], query, k, flt)}"
        )
    for s0, s1, flt, n in rec.counts:
        expected = {
            sum(1 for _, m in states[s].values() if flt is None or oracle_matches(flt, m))
            for s in range(s0, s1 + 1)
        }
        assert n in expected, (flt, s0, s1, n, expected)
    for s0, doc_id, meta in rec.payloads:
        # payloads come from the document store after the snapshot: a version of the id that is
        # current at some seq >= s0 (or nothing: deleted since)
        versions = {None} | {repr(st[doc_id][1] or None) for st in states[s0:] if doc_id in st}
        assert meta is None or repr(meta) in versions, (doc_id, meta, versions)


def check_state(c: Collection, state: State) -> None:
    """The collection equals ``state``: ids, scores for every term and filters, payloads."""
    assert sorted(c.snapshot().matching_ids(None)) == sorted(state)
    assert len(c) == len(state)
    for term in VOCAB.tokens:
        for flt in [None, *SEARCH_FILTERS[:3]]:
            hits = [(h.doc_id, h.score) for h in c.search({term: 1.0}, 100, filter=flt)]
            assert hits == brute_force(state, {term: 1.0}, 100, flt), (term, flt)
    query = {t: 0.5 for t in SHARED_TERMS}
    for plan in ("taat", "forward"):
        hits = [(h.doc_id, h.score) for h in c.search(query, 100, plan=plan)]
        assert hits == brute_force(state, query, 100, None), plan
    stored = c.get(sorted(state))
    for doc_id, (_, meta) in state.items():
        assert (stored[doc_id][1] if doc_id in stored else None) == (meta or None), doc_id


def merges_settled(c: Collection) -> bool:
    snap = c.snapshot()
    segments = [v.segment for v in snap.segments]
    return not pick_merge(segments, {v.segment.name: v.n_live for v in snap.segments}, c.config)


@pytest.mark.parametrize("merging", ["background", "merge-thread"])
def test_writers_and_searchers_agree_with_a_serial_history(tmp_path: Path, merging: str) -> None:
    path = tmp_path / "c"
    Collection.create(
        path, vocab=VOCAB, flush_docs=8, merge_factor=2, block_size=2, schema=SCHEMA
    ).close()
    c = Collection.open(path, background_merge=merging == "background")
    rec = Recorder()
    done = threading.Event()
    merges = [0]

    def merger() -> None:  # a dedicated thread that merges (and now and then compacts)
        rounds = 0
        while not done.is_set():
            merges[0] += c.merge()
            rounds += 1
            if rounds % 25 == 0:
                c.compact()
            time.sleep(0.002)  # pacing only; nothing depends on it

    try:
        writers = run_threads([writer(c, w, rec) for w in range(N_WRITERS)], rec)
        others = [searcher(c, s, rec, done) for s in range(N_SEARCHERS)]
        if merging == "merge-thread":
            others.append(merger)
        background = run_threads(others, rec)
        try:
            join_all(writers, rec)
        finally:
            done.set()
            join_all(background, rec)

        states = replay_model(rec)
        final = states[-1]
        assert c.snapshot().seq == len(states) - 1
        check_searches(rec, states)
        assert len(rec.searches) + len(rec.counts) >= N_SEARCHERS * MIN_SEARCHES
        if merging == "background":  # the merge thread catches up with the policy
            for _ in range(int(JOIN_TIMEOUT / 0.01)):
                if merges_settled(c):
                    break
                time.sleep(0.01)
            assert merges_settled(c)
        assert not c.recovery_notes, c.recovery_notes  # e.g. "background merge failed: ..."
        check_state(c, final)
    finally:
        c.close()
    with Collection.open(path) as reopened:
        assert reopened.snapshot().seq == len(states) - 1
        check_state(reopened, final)
        reopened.compact()
        check_state(reopened, final)


def test_concurrent_writers_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: 8 threads x 20 single-document upserts. The first fsync is held until every
    thread has appended its first record, so the next fsync covers the other threads' records
    at once (without the hold the grouping would depend on timing); results stay exact."""
    n_threads, per_thread = 8, 20
    path = tmp_path / "c"
    c = Collection.create(path, vocab=VOCAB, flush_docs=1000, schema=SCHEMA)
    wal = c._wal
    real_fsync = wal._fsync_current
    held = threading.Event()
    reached: list[bool] = []

    def fsync_after_everyone_appended(fd: int, dir_dirty: bool) -> None:
        if not held.is_set():  # callers hold the log's sync lock: no race on the flag
            held.set()
            for _ in range(int(JOIN_TIMEOUT / 0.001)):
                if wal.appends >= n_threads:
                    break
                time.sleep(0.001)
            reached.append(wal.appends >= n_threads)
        real_fsync(fd, dir_dirty)

    monkeypatch.setattr(wal, "_fsync_current", fsync_after_everyone_appended)
    rec = Recorder()
    barrier = threading.Barrier(n_threads)
    model: State = {}

    def upserter(t: int) -> Callable[[], None]:
        rng = random.Random(3000 + t)

        def run() -> None:
            barrier.wait()
            for i in range(per_thread):
                doc_id = f"g{t}_{i:02d}"
                vector, meta = random_vector(rng, SHARED_TERMS, 4), random_meta(rng)
                result = c.upsert([doc_id], vectors=[vector], metadata=[meta])
                rec.writes.append((result.seq, "upsert", [(doc_id, vector, meta)], result.count))
                model[doc_id] = (vector, meta)
                assert c.snapshot().seq >= result.seq  # visible on return
                hits = c.search(dict.fromkeys(vector, 1.0), 1000)
                assert doc_id in {h.doc_id for h in hits}  # read-your-writes

        return run

    try:
        join_all(run_threads([upserter(t) for t in range(n_threads)], rec), rec)
        assert reached == [True]
        assert wal.appends == n_threads * per_thread
        # the first fsync covered at most its own thread's records; the second all the others
        assert wal.fsyncs <= wal.appends - (n_threads - 2)
        assert wal.fsyncs < wal.appends
        states = replay_model(rec)
        assert states[-1] == model
        check_state(c, model)
    finally:
        c.close()
    with Collection.open(path) as reopened:
        assert reopened.snapshot().seq == n_threads * per_thread
        check_state(reopened, model)


class _WatchedLock:
    """An RLock that tells when a thread other than ``owner`` asks for it."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.owner: int | None = None
        self.other_waits = threading.Event()

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        if self.owner is not None and threading.get_ident() != self.owner:
            self.other_waits.set()
        return self.lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_delete_by_filter_sees_a_write_another_thread_is_applying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer B's upsert is appended and taken off the pending queue, but B is still applying it
    (in the document store, before publishing) when A's delete_by_filter resolves its filter.
    The filter must be resolved on the state after B's write, which comes first in the log."""
    with Collection.create(tmp_path / "c", vocab=VOCAB, schema=SCHEMA) as c:
        watched = _WatchedLock(c._apply_lock)
        monkeypatch.setattr(c, "_apply_lock", watched)
        real_apply = c.store.apply
        b_applying = threading.Event()

        def slow_store_apply(ops: Any) -> None:
            if threading.current_thread().name == "B":
                watched.owner = threading.get_ident()
                b_applying.set()
                # hold B here until A asks for the apply lock (whenever it first does)
                assert watched.other_waits.wait(JOIN_TIMEOUT)
            real_apply(ops)

        monkeypatch.setattr(c.store, "apply", slow_store_apply)
        results: dict[str, Any] = {}
        rec = Recorder()

        def b() -> None:
            results["b"] = c.upsert(["x"], vectors=[{"t0": 1.0}], metadata=[{"k": "c"}])

        def a() -> None:
            assert b_applying.wait(JOIN_TIMEOUT)
            results["a"] = c.delete_by_filter({"k": "c"})

        threads = run_threads([a], rec)
        threads += run_threads([b], rec, names=["B"])
        join_all(threads, rec)
        assert results["b"].seq < results["a"].seq
        assert results["a"].count == 1
        assert len(c) == 0
