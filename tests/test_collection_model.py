"""A live collection against a plain model: random upserts, deletes, filters, flushes, merges and
reopens, checked after every step against a dict of vectors scored by brute force."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from collection_oracle import brute_force, oracle_matches
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lsr.collection.collection import Collection
from lsr.collection.snapshot import WriteBuffer
from lsr.vocab import Vocabulary

N_TERMS = 12
IDS = [f"doc{i:02d}" for i in range(16)] + ["é", "z", "Z", "a b"]
VOCAB = Vocabulary([f"t{i}" for i in range(N_TERMS)], frozen=True)
SCHEMA = {"n": "number", "k": "keyword", "f": "bool"}

weights = st.integers(1, 8).map(lambda w: w / 4)  # exact in float16 and in float32 sums
vectors = st.dictionaries(st.sampled_from([f"t{i}" for i in range(N_TERMS)]), weights, max_size=5)
metadata = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(0, 5),
        "k": st.sampled_from(["a", "b", "c"]),
        "f": st.booleans(),
    },
)


def leaf_filters() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda v: {"k": v}, st.sampled_from(["a", "b", "x"])),
        st.builds(lambda vs: {"k": {"in": vs}}, st.lists(st.sampled_from("abc"), min_size=1)),
        st.builds(lambda v: {"n": {"gte": v}}, st.integers(0, 5)),
        st.builds(
            lambda lo, hi: {"n": {"gt": lo, "lte": hi}}, st.integers(0, 3), st.integers(2, 5)
        ),
        st.builds(lambda v: {"f": v}, st.booleans()),
        st.builds(lambda v: {"n": {"exists": v}}, st.booleans()),
        st.builds(lambda v: {"k": {"ne": v}}, st.sampled_from("ab")),
    )


filters = st.recursive(
    leaf_filters(),
    lambda inner: st.one_of(
        st.builds(lambda fs: {"and": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda fs: {"or": fs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda f: {"not": f}, inner),
    ),
    max_leaves=4,
)


class CollectionMachine(RuleBasedStateMachine):
    flush_docs = 4  # small: many flushes, segments and merges

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="lsr-model-"))
        self.path = self.root / "c"
        self.collection = Collection.create(
            self.path,
            vocab=VOCAB,
            flush_docs=self.flush_docs,
            merge_factor=2,
            schema=SCHEMA,
            block_size=2,
        )
        self.model: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}

    def teardown(self) -> None:
        self.collection.close()
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(
        docs=st.lists(
            st.tuples(st.sampled_from(IDS), vectors, metadata),
            min_size=1,
            max_size=5,
            unique_by=lambda d: d[0],
        )
    )
    def upsert(self, docs: list[tuple[str, dict[str, float], dict[str, Any]]]) -> None:
        result = self.collection.upsert(
            [d[0] for d in docs], vectors=[d[1] for d in docs], metadata=[d[2] for d in docs]
        )
        assert result.count == len(docs)
        for doc_id, vector, meta in docs:
            self.model[doc_id] = (vector, meta)

    @rule(ids=st.lists(st.sampled_from(IDS), max_size=4))
    def delete(self, ids: list[str]) -> None:
        existed = len({i for i in ids if i in self.model})
        assert self.collection.delete(ids).count == existed
        for doc_id in ids:
            self.model.pop(doc_id, None)

    @rule(flt=filters)
    def delete_by_filter(self, flt: dict[str, Any]) -> None:
        doomed = [i for i, (_, meta) in self.model.items() if oracle_matches(flt, meta)]
        assert self.collection.delete_by_filter(flt).count == len(doomed)
        for doc_id in doomed:
            del self.model[doc_id]

    @rule()
    def flush(self) -> None:
        self.collection.flush()

    @rule(everything=st.booleans())
    def merge(self, everything: bool) -> None:
        self.collection.merge(everything=everything)

    @rule()
    def reopen(self) -> None:
        self.collection.close()
        self.collection = Collection.open(self.path)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def stored_payload(self, data: st.DataObject) -> None:
        doc_id = data.draw(st.sampled_from(sorted(self.model)))
        stored = self.collection.get([doc_id]).get(doc_id)
        meta = self.model[doc_id][1]
        assert (stored[1] if stored else None) == (meta or None)

    @rule(data=st.data())
    def stored_vectors(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(IDS), max_size=4))
        got = self.collection.vectors(ids)
        assert sorted(got) == sorted({i for i in ids if i in self.model})
        for doc_id, vec in got.items():
            expected = {t: w for t, w in self.model[doc_id][0].items() if w}
            pairs = zip(vec.terms, vec.weights, strict=True)
            stored = {VOCAB.tokens[t]: float(w) for t, w in pairs}
            assert stored == expected
            assert list(vec.terms) == sorted(vec.terms)

    @invariant()
    def no_files_left_behind(self) -> None:
        """Segments and tombstone files on disk are exactly those the state names (a merge
        deletes its sources right away, not at the next open)."""
        named = {v.segment.name for v in self.collection.snapshot().segments}
        folder = self.path / "segments"
        on_disk = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        assert on_disk == named
        tombs = self.path / "tombstones"
        for entry in tombs.iterdir() if tombs.is_dir() else ():
            assert entry.name.split(".")[0] in named, entry.name

    @invariant()
    def live_count(self) -> None:
        assert len(self.collection) == len(self.model)
        assert sorted(self.collection.snapshot().matching_ids(None)) == sorted(self.model)

    @rule(query=vectors, k=st.sampled_from([1, 3, 40]), flt=st.none() | filters)
    def search_equals_brute_force(
        self, query: dict[str, float], k: int, flt: dict[str, Any] | None
    ) -> None:
        expected = brute_force(self.model, query, k, flt)
        for plan in ("auto", "taat", "forward", "blockmax"):
            hits = self.collection.search(query, k, filter=flt, plan=plan)
            assert [(h.doc_id, h.score) for h in hits] == expected, plan
        if flt is not None:
            matching = sum(oracle_matches(flt, meta) for _, meta in self.model.values())
            assert self.collection.count(flt) == matching


class BigBufferMachine(CollectionMachine):
    """Nothing flushes by itself: the write buffer's base + delta views carry the state, and
    bases of a few documents already get postings (scored term-at-a-time)."""

    flush_docs = 10**6

    def __init__(self) -> None:
        self.saved = WriteBuffer.POSTINGS_FROM
        WriteBuffer.POSTINGS_FROM = 3
        super().__init__()

    def teardown(self) -> None:
        WriteBuffer.POSTINGS_FROM = self.saved
        super().teardown()


SETTINGS = settings(
    max_examples=int(os.environ.get("LSR_MODEL_EXAMPLES", "40")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CollectionMachine.TestCase.settings = SETTINGS
BigBufferMachine.TestCase.settings = settings(SETTINGS, stateful_step_count=60)
TestCollectionModel = CollectionMachine.TestCase
TestCollectionBigBuffer = BigBufferMachine.TestCase


def test_scores_are_the_same_in_every_part(tmp_path: Path) -> None:
    """A document scores the same bits in the buffer, in a segment and after a merge."""
    rng = np.random.default_rng(7)
    vocab = Vocabulary([f"t{i}" for i in range(300)], frozen=True)
    with Collection.create(tmp_path / "c", vocab=vocab, quantization="float32") as c:
        vecs = [
            {f"t{t}": float(rng.random()) for t in rng.choice(300, 40, replace=False)}
            for _ in range(30)
        ]
        query = {f"t{t}": float(rng.random()) for t in rng.choice(300, 60, replace=False)}
        c.upsert([f"d{i}" for i in range(30)], vectors=vecs)
        in_buffer = c.search(query, 30)
        c.flush()
        segment = [c.search(query, 30, plan=p) for p in ("taat", "forward", "blockmax")]
        c.upsert(["x"], vectors=[{"t0": 1.0}])
        c.flush()
        c.merge(everything=True)
        merged = [h for h in c.search(query, 31) if h.doc_id != "x"]
    assert in_buffer == segment[0] == segment[1] == segment[2] == merged


@pytest.mark.parametrize("postings_from", [10**6, 16])
def test_write_search_interleaved_through_base_and_delta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postings_from: int
) -> None:
    """Hundreds of single writes in the buffer, each followed by a search: the view is a base
    table plus a delta (replaced and deleted base rows masked), rebuilt now and then."""
    monkeypatch.setattr(WriteBuffer, "POSTINGS_FROM", postings_from)
    rng = np.random.default_rng(11)
    model: dict[str, dict[str, float]] = {}
    with Collection.create(tmp_path / "c", vocab=VOCAB, flush_docs=10**6) as c:
        for step in range(400):
            doc_id = f"d{int(rng.integers(60))}"
            if rng.random() < 0.2:
                c.delete([doc_id])
                model.pop(doc_id, None)
            else:
                terms = rng.choice(N_TERMS, 3, replace=False)
                vector = {f"t{t}": float(rng.integers(1, 8)) / 4 for t in terms}
                c.upsert([doc_id], vectors=[vector], metadata=[{"n": step % 3}])
                model[doc_id] = vector
            query = {f"t{int(rng.integers(N_TERMS))}": 1.0, "t0": 0.5}
            scored = sorted(
                (-sum(w * v.get(t, 0.0) for t, w in query.items()), i) for i, v in model.items()
            )
            want = [(i, -s) for s, i in scored if s < 0][:7]
            assert [(h.doc_id, h.score) for h in c.search(query, 7)] == want
            assert len(c.snapshot().buffer_parts()) in (1, 2)
        assert len(c) == len(model)


def test_blockmax_below_one_returns_exact_scores_and_refuses_bad_knobs(tmp_path: Path) -> None:
    """plan="blockmax" with heap_factor < 1 over segments, deletes and a filter: every hit
    returned carries its exact score and passes the filter; misuse is a clear InputError."""
    from lsr.errors import InputError
    from lsr.index.sparse_index import approximate_heap_factor

    rng = np.random.default_rng(5)
    vocab = Vocabulary([f"t{i}" for i in range(200)], frozen=True)
    with Collection.create(
        tmp_path / "c", vocab=vocab, quantization="float32", schema={"n": "number"}
    ) as c:
        for part in range(3):  # three segments of 400 documents with topical structure
            ids = [f"d{part}-{i}" for i in range(400)]
            vecs = []
            for _ in range(400):
                topic = rng.integers(0, 10) * 20
                terms = topic + rng.choice(20, 6, replace=False)
                vecs.append({f"t{t}": float(rng.random()) + 0.01 for t in terms})
            c.upsert(ids, vectors=vecs, metadata=[{"n": i % 3} for i in range(400)])
            c.flush()
        c.delete([f"d1-{i}" for i in range(0, 400, 7)])
        exact_recall = []
        for _ in range(20):
            topic = rng.integers(0, 10) * 20
            query = {f"t{t}": float(rng.random()) + 0.1 for t in topic + rng.choice(20, 4)}
            flt = {"n": {"lte": 1}}
            exact = c.search(query, 10, filter=flt, plan="taat")
            assert c.search(query, 10, filter=flt, plan="blockmax") == exact
            approx = c.search(query, 10, filter=flt, plan="blockmax", heap_factor=0.5)
            every = {h.doc_id: h.score for h in c.search(query, 1200, filter=flt)}
            assert all(every[h.doc_id] == h.score for h in approx)  # exact scores, filter kept
            exact_recall.append(len({h.doc_id for h in approx} & {h.doc_id for h in exact}) / 10)
        assert 0.8 <= np.mean(exact_recall) < 1.0  # measured 0.995: approximate, and close
        # plan="approximate": blockmax at the measured default for the query's length
        for n_terms in (4, 8, 14):
            query = {f"t{t}": float(rng.random()) + 0.1 for t in rng.choice(200, n_terms)}
            factor = approximate_heap_factor(len(query))
            want = c.search(query, 10, filter=flt, plan="blockmax", heap_factor=factor)
            assert c.search(query, 10, filter=flt, plan="approximate") == want
        with pytest.raises(InputError, match="heap_factor applies only"):
            c.search(query, 10, plan="approximate", heap_factor=0.9)
        with pytest.raises(InputError, match="heap_factor applies only"):
            c.search(query, 10, heap_factor=0.9)
        with pytest.raises(InputError, match="heap_factor must lie"):
            c.search(query, 10, plan="blockmax", heap_factor=1.5)
        with pytest.raises(InputError, match="plan must be one of"):
            c.search(query, 10, plan="wand")
