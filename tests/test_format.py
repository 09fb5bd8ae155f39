"""The on-disk index: round trip, integrity checks, atomic replacement, and kill-safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import REPO, brute_force_topk, random_batch

from lsr import SparseIndex
from lsr.errors import IndexFormatError, InputError
from lsr.index import kernels
from lsr.index.builder import BuildConfig
from lsr.io import sha256_file


@pytest.fixture()
def small(tmp_path):
    docs = random_batch(np.random.default_rng(7), 300, 50, density=0.2, levels=16)
    return docs, SparseIndex.build(docs, tmp_path / "idx", quantization="float32", block_size=16)


def test_build_open_round_trip(small):
    docs, built = small
    opened = SparseIndex.open(built.path)
    assert opened.num_docs == len(docs) and opened.vocab == docs.vocab
    assert [opened.doc_id(i) for i in range(len(docs))] == docs.ids
    assert opened.num_postings == docs.matrix.nnz
    m = opened.manifest
    assert m["format"] == "lsr-sparse-index" and m["format_version"] == 3
    assert m["vocab"]["sha256"] == docs.vocab.sha256
    assert m["build"]["block_size"] == 16 and m["quantization"]["dtype"] == "float32"
    assert all(isinstance(a, np.memmap) or a.base is not None for a in opened._a.values() if a.size)
    # reconstruct the document matrix from the postings: it must equal the input exactly
    a = opened._a
    np.testing.assert_array_equal(_rebuilt_matrix(a, 16, docs.matrix.shape), docs.matrix.toarray())
    np.testing.assert_array_equal(
        a["term_max"], docs.matrix.max(axis=0).toarray().ravel()
    )  # float32 codes


def _entry_blocks(a) -> np.ndarray:
    """Each entry's block, added up from the one-byte gaps and the far gaps (docs/index-format)."""
    blocks = np.zeros(len(a["entry_gap"]), dtype=np.int64)
    for t in range(len(a["term_entry_ptr"]) - 1):
        block, far = -1, int(a["term_far_ptr"][t])
        for e in range(a["term_entry_ptr"][t], a["term_entry_ptr"][t + 1]):
            gap = int(a["entry_gap"][e])
            if gap == 0:
                gap, far = int(a["far_gap"][far]), far + 1
            block += gap
            blocks[e] = block
        assert far == a["term_far_ptr"][t + 1]  # every far gap of the term was used
    return blocks


def _rebuilt_matrix(a, block_size: int, shape) -> np.ndarray:
    """The stored codes as a dense doc x term matrix, read back from the postings."""
    blocks = _entry_blocks(a)
    rebuilt = np.zeros(shape, dtype=np.float32)
    for t in range(len(a["term_entry_ptr"]) - 1):
        end = a["term_post_ptr"][t]
        for e in range(a["term_entry_ptr"][t], a["term_entry_ptr"][t + 1]):
            start, end = end, end + int(a["entry_count"][e]) + 1
            for p in range(start, end):
                doc = int(blocks[e]) * block_size + int(a["post_offsets"][p])
                rebuilt[doc, t] = a["post_codes"][p]
                assert a["post_codes"][p] <= a["entry_max"][e]
        assert end == a["term_post_ptr"][t + 1]  # the counts add up to the term's postings
    return rebuilt


def test_block_gaps_above_255_go_to_far_gaps(tmp_path):
    """One-posting blocks (block_size 1) and terms that skip hundreds of documents: far gaps,
    the first entry's far gap included, read back exactly and searched exactly."""
    rng = np.random.default_rng(5)
    docs = random_batch(rng, 900, 12, density=0.01, levels=50)
    dense = docs.matrix.toarray()
    dense[:, :2] = 0.0
    dense[[0, 300, 301, 899], 0] = [1.0, 2.0, 3.0, 4.0]  # gaps 1, 300, 1, 598
    dense[[700, 701], 1] = [5.0, 6.0]  # first gap 701
    docs = type(docs)(docs.ids, sp.csr_matrix(dense), docs.vocab)
    index = SparseIndex.build(docs, tmp_path / "i", quantization="float32", block_size=1)
    a = index._a
    assert index.manifest["num_far_gaps"] == len(a["far_gap"]) >= 3
    assert {300, 598, 701} <= set(a["far_gap"].tolist())
    np.testing.assert_array_equal(_rebuilt_matrix(a, 1, dense.shape), dense)
    blocks = kernels.blocks_from_gaps(
        a["term_entry_ptr"], a["term_far_ptr"], a["entry_gap"], a["far_gap"]
    )
    np.testing.assert_array_equal(blocks, _entry_blocks(a))
    queries = random_batch(rng, 30, 12, density=0.4)
    oracle = brute_force_topk(queries.matrix, docs.matrix, 10)
    for algorithm in ("exhaustive", "maxscore", "blockmax"):
        got = index.batch_search(queries, 10, algorithm=algorithm)
        assert [[index.doc_id(p) for p, _ in want] for want in oracle] == [
            [h.doc_id for h in hits] for hits in got
        ]


def test_gaps_that_disagree_with_the_far_gaps_are_refused_without_checksums(tmp_path):
    """A zero gap (a far gap's marker) rewritten to 1: the kernels would read the wrong far
    gaps, so the open refuses it even with verify=False."""
    from lsr.index import format as fmt

    rng = np.random.default_rng(9)
    index = SparseIndex.build(
        random_batch(rng, 600, 20, density=0.01), tmp_path / "i", block_size=1
    )
    gaps = np.array(index.array("entry_gap"))
    assert (gaps == 0).any()
    gaps[np.flatnonzero(gaps == 0)[0]] = 1
    manifest = json.loads((index.path / "manifest.json").read_text())
    manifest["arrays"]["entry_gap"] = fmt.save_array(index.path, "entry_gap", gaps)
    fmt.finalize_manifest(index.path, manifest)
    with pytest.raises(IndexFormatError, match="far gaps do not match"):
        SparseIndex.open(index.path, verify=False)


@pytest.mark.parametrize("victim", ["post_codes.npy", "entry_max.npy", "doc_ids.npy", "vocab.json"])
def test_flipped_byte_is_detected(small, victim):
    _, index = small
    path = index.path / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2 + 1] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        SparseIndex.open(index.path)


def test_truncated_file_is_detected_even_without_checksums(small):
    _, index = small
    path = index.path / "post_offsets.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match="truncated"):
        SparseIndex.open(index.path, verify=False)


def test_manifest_tampering_and_version_are_detected(small):
    _, index = small
    manifest_path = index.path / "manifest.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    manifest["num_docs"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="manifest checksum"):
        SparseIndex.open(index.path)
    manifest_path.write_text(original[: len(original) // 2])
    with pytest.raises(IndexFormatError, match="corrupted"):
        SparseIndex.open(index.path)
    (index.path / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="not an lsr index"):
        SparseIndex.open(index.path)
    with pytest.raises(IndexFormatError, match="no such index"):
        SparseIndex.open(index.path.parent / "nope")


def _as_version_2(path, finalize: bool = True):
    """Rewrite an index the way lsr wrote version 2: absolute entry blocks, no gaps."""
    from lsr.index import format as fmt

    manifest = json.loads((path / "manifest.json").read_text())
    arrays = {n: np.load(path / f"{n}.npy") for n in ("term_entry_ptr", "entry_gap", "far_gap")}
    arrays["term_far_ptr"] = np.load(path / "term_far_ptr.npy")
    blocks = _entry_blocks(arrays)
    for name in ("term_far_ptr", "entry_gap", "far_gap"):
        (path / f"{name}.npy").unlink()
        del manifest["arrays"][name]
    del manifest["num_far_gaps"]
    dtype = np.uint16 if manifest["num_blocks"] <= 1 << 16 else np.int32
    manifest["arrays"]["entry_block"] = fmt.save_array(path, "entry_block", blocks.astype(dtype))
    if finalize:
        fmt.finalize_manifest(path, manifest, format_version=2)
    return manifest, blocks


def _as_version_1(path):
    """Rewrite an index the way lsr wrote version 1: per-entry posting starts, no counts."""
    from lsr.index import format as fmt

    manifest, _ = _as_version_2(path, finalize=False)
    counts = np.load(path / "entry_count.npy").astype(np.int64) + 1
    entry_ptr = np.load(path / "term_entry_ptr.npy")
    rel = np.zeros(len(counts), dtype=np.uint32)
    for t in range(len(entry_ptr) - 1):
        a, b = entry_ptr[t], entry_ptr[t + 1]
        rel[a:b] = np.concatenate([[0], np.cumsum(counts[a:b])[:-1]]) if b > a else []
    (path / "entry_count.npy").unlink()
    del manifest["arrays"]["entry_count"]
    manifest["arrays"]["entry_post_rel"] = fmt.save_array(path, "entry_post_rel", rel)
    fmt.finalize_manifest(path, manifest, format_version=1)
    return rel


def test_version_2_indexes_still_open_and_answer_the_same(tmp_path):
    rng = np.random.default_rng(13)
    docs = random_batch(rng, 700, 40, density=0.01)
    queries = random_batch(rng, 20, 40, density=0.2)
    new = SparseIndex.build(docs, tmp_path / "v3", block_size=1)  # 700 blocks: far gaps too
    assert len(new.array("far_gap")) > 0
    old_path = tmp_path / "v2"
    shutil.copytree(new.path, old_path)
    _, blocks = _as_version_2(old_path)
    old = SparseIndex.open(old_path)
    assert old.manifest["format_version"] == 2
    for name in ("term_far_ptr", "entry_gap", "far_gap"):
        np.testing.assert_array_equal(old.array(name), new.array(name))
    for algorithm in ("exhaustive", "maxscore", "blockmax"):
        assert old.batch_search(queries, 10, algorithm=algorithm) == new.batch_search(
            queries, 10, algorithm=algorithm
        )
    # blocks that go backwards inside a term are refused, not searched
    from lsr.index import format as fmt

    manifest = json.loads((old_path / "manifest.json").read_text())
    entry_ptr = new.array("term_entry_ptr")
    t = int(np.argmax(np.diff(entry_ptr)))
    bad = blocks.copy()
    bad[entry_ptr[t] + 1] = bad[entry_ptr[t]]
    manifest["arrays"]["entry_block"] = fmt.save_array(
        old_path, "entry_block", bad.astype(np.uint16)
    )
    fmt.finalize_manifest(old_path, manifest, format_version=2)
    with pytest.raises(IndexFormatError, match="not increasing"):
        SparseIndex.open(old_path)


def test_version_1_indexes_still_open_and_answer_the_same(tmp_path):
    rng = np.random.default_rng(11)
    docs = random_batch(rng, 300, 60, density=0.1)
    queries = random_batch(rng, 20, 60, density=0.15)
    new = SparseIndex.build(docs, tmp_path / "v3", block_size=8)
    old_path = tmp_path / "v1"
    shutil.copytree(new.path, old_path)
    rel = _as_version_1(old_path)
    assert rel.max() > 8  # terms span several entries: the starts really are relative offsets
    old = SparseIndex.open(old_path)
    assert old.manifest["format_version"] == 1
    np.testing.assert_array_equal(old.array("entry_count"), new.array("entry_count"))
    for algorithm in ("exhaustive", "maxscore", "blockmax"):
        assert old.batch_search(queries, 10, algorithm=algorithm) == new.batch_search(
            queries, 10, algorithm=algorithm
        )


def test_version_1_with_starts_that_do_not_fit_is_refused(tmp_path):
    from lsr.index import format as fmt

    rng = np.random.default_rng(12)
    index = SparseIndex.build(
        random_batch(rng, 100, 30, density=0.2), tmp_path / "v1", block_size=8
    )
    rel = _as_version_1(index.path)
    manifest = json.loads((index.path / "manifest.json").read_text())
    bad = rel.copy()
    j = next(j for j in range(len(rel) - 1) if 0 < rel[j] < rel[j + 1])
    bad[j] = rel[j + 1] + 1  # a start past the next one's: a negative count
    fmt.save_array(index.path, "entry_post_rel", bad)
    fmt.finalize_manifest(index.path, manifest, format_version=1)
    with pytest.raises(IndexFormatError, match="version-1 entry"):
        SparseIndex.open(index.path)


def test_other_format_versions_are_refused(small):
    from lsr.index import format as fmt

    _, index = small
    manifest = json.loads((index.path / "manifest.json").read_text())
    manifest["format_version"] = 99
    manifest["manifest_sha256"] = fmt.manifest_digest(manifest)
    (index.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="version 99 is not supported"):
        SparseIndex.open(index.path)


def test_existing_index_is_kept_unless_overwrite(small, tmp_path):
    _, index = small
    before = index.search({"t1": 1.0, "t2": 0.5}, 5)
    other = random_batch(np.random.default_rng(8), 40, 50, density=0.2)
    with pytest.raises(InputError, match="already exists"):
        SparseIndex.build(other, index.path)
    assert SparseIndex.open(index.path).search({"t1": 1.0, "t2": 0.5}, 5) == before
    replaced = SparseIndex.build(other, index.path, overwrite=True)
    assert replaced.num_docs == 40
    assert sorted(p.name for p in index.path.parent.iterdir()) == ["idx"]  # no staging left over
    not_an_index = tmp_path / "precious"
    not_an_index.mkdir()
    (not_an_index / "data.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an lsr index"):
        SparseIndex.build(other, not_an_index, overwrite=True)
    assert (not_an_index / "data.txt").read_text() == "keep me"


def test_failed_build_leaves_nothing_behind(tmp_path):
    docs = random_batch(np.random.default_rng(1), 30, 10, density=0.3)

    def failing():
        yield docs
        raise RuntimeError("input died")

    with pytest.raises(RuntimeError):
        SparseIndex.build(failing(), tmp_path / "idx", vocab=docs.vocab)
    assert list(tmp_path.iterdir()) == []


def test_static_pruning_matches_brute_force_on_pruned_matrix(tmp_path):
    from conftest import brute_force_topk

    rng = np.random.default_rng(5)
    docs = random_batch(rng, 400, 60, density=0.3, levels=50)
    queries = random_batch(rng, 20, 60, density=0.3, levels=50, prefix="q")
    dense = docs.matrix.toarray()
    by_doc = dense.copy()
    for row in by_doc:  # top-5 terms per document, ties to the lower term id
        order = np.lexsort((np.arange(row.size), -row))
        row[order[5:]] = 0
    by_term = dense.copy()
    for col in by_term.T:  # top-30 postings per term, ties to the lower doc position
        order = np.lexsort((np.arange(col.size), -col))
        col[order[30:]] = 0
    import scipy.sparse as sp

    for config, matrix in [
        (BuildConfig(doc_top_k=5), by_doc),
        (BuildConfig(term_top_n=30), by_term),
    ]:
        index = SparseIndex.build(
            docs,
            tmp_path / f"i{config.doc_top_k}",
            config=config.model_copy(update={"quantization": "float32"}),
        )
        assert index.num_postings == int((matrix > 0).sum())
        expected = brute_force_topk(queries.matrix, sp.csr_matrix(matrix), 10)
        got = index.batch_search(queries, 10)
        assert [[h.doc_id for h in r] for r in got] == [
            [docs.ids[p] for p, _ in w] for w in expected
        ]


_KILL_SCRIPT = """
import sys, numpy as np, scipy.sparse as sp
from lsr import SparseIndex, SparseBatch, Vocabulary
rng = np.random.default_rng(0)
vocab = Vocabulary([f"t{i}" for i in range(2000)], frozen=True)
def batches():
    for b in range(400):
        m = sp.random(2000, 2000, density=0.05, format="csr", dtype=np.float32, random_state=b)
        print("batch", b, flush=True)
        yield SparseBatch([f"b{b}-{i}" for i in range(2000)], m, vocab)
SparseIndex.build(batches(), sys.argv[1], vocab=vocab, overwrite=True)
print("finished", flush=True)
"""


@pytest.mark.parametrize("kill_after_batches", [1, 30])
def test_killed_build_leaves_previous_index_readable(tmp_path, kill_after_batches):
    docs = random_batch(np.random.default_rng(2), 100, 2000, density=0.01)
    target = tmp_path / "idx"
    SparseIndex.build(docs, target)
    before = SparseIndex.open(target).batch_search(docs, 5)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(f"batch {kill_after_batches}"):
            break
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    reopened = SparseIndex.open(target)  # full checksum verification
    assert reopened.num_docs == 100
    assert reopened.batch_search(docs, 5) == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "idx"]
    # a killed build may leave its staging directory; the next build removes it
    SparseIndex.build(docs, target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"], leftovers


def test_kill_during_publish_window_is_safe(tmp_path, monkeypatch):
    """Simulate a crash right after the staged files are complete but before the swap."""
    from lsr.index import format as fmt

    docs = random_batch(np.random.default_rng(4), 50, 20, density=0.2)
    target = tmp_path / "idx"
    SparseIndex.build(docs, target)
    expected = SparseIndex.open(target).search({"t3": 1.0}, 3)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fmt, "_renameat2_exchange", crash)
    with pytest.raises(KeyboardInterrupt):
        SparseIndex.build(
            random_batch(np.random.default_rng(9), 10, 20, 0.5), target, overwrite=True
        )
    assert SparseIndex.open(target).search({"t3": 1.0}, 3) == expected


def test_crash_between_fallback_renames_recovers_old_index(tmp_path, monkeypatch):
    """Without renameat2 a replacement is two renames; a crash between them must lose nothing."""
    import os as _os

    from lsr.index import format as fmt

    docs = random_batch(np.random.default_rng(4), 50, 20, density=0.2)
    target = tmp_path / "idx"
    SparseIndex.build(docs, target)
    expected = SparseIndex.open(target).search({"t3": 1.0}, 3)
    monkeypatch.setattr(fmt, "_renameat2_exchange", lambda a, b: False)
    real_rename = _os.rename
    calls = []

    def rename_then_die(src, dst):
        calls.append((src, dst))
        real_rename(src, dst)
        if len(calls) == 1:  # the old index has been parked; the new one is not in place yet
            raise KeyboardInterrupt

    monkeypatch.setattr(fmt.os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        SparseIndex.build(
            random_batch(np.random.default_rng(9), 10, 20, 0.5), target, overwrite=True
        )
    monkeypatch.setattr(fmt.os, "rename", real_rename)
    assert not target.exists()
    parked = fmt.previous_path(target.absolute())
    # a reader never writes: it names the repair and leaves the parked index where it is
    with pytest.raises(IndexFormatError, match="lsr index repair"):
        SparseIndex.open(target)
    assert parked.is_dir() and not target.exists()
    # the next writer, or an explicit repair, puts it back
    assert fmt.repair(target) == [
        f"restored {target} from {parked.name} (a replace was interrupted)"
    ]
    assert SparseIndex.open(target).search({"t3": 1.0}, 3) == expected
    assert fmt.repair(target) == []


def test_opening_an_index_never_writes(tmp_path, monkeypatch):
    """A reader must work where nothing can be written (a read-only mount, another user's index):
    every call that could change the filesystem fails while the index is opened and searched."""
    import builtins
    import os as _os
    import shutil as _shutil

    docs = random_batch(np.random.default_rng(5), 40, 20, density=0.3)
    target = tmp_path / "ro"
    expected = SparseIndex.build(docs, target).search({"t1": 1.0, "t2": 0.5}, 5)
    parked = tmp_path / ".ro.lsr-previous"  # a stray parked sibling is not the reader's business
    parked.mkdir()
    (parked / "manifest.json").write_text("{}")
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def refuse(*args, **kwargs):
        raise PermissionError(f"read-only: {args[:1]}")

    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise PermissionError(f"read-only: {file}")
        return real_open(file, mode, *args, **kwargs)

    for name in ("rename", "replace", "mkdir", "makedirs", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(_os, name, refuse)
    monkeypatch.setattr(_shutil, "rmtree", refuse)
    monkeypatch.setattr(builtins, "open", read_only_open)
    index = SparseIndex.open(target)  # checksums verified too
    assert index.search({"t1": 1.0, "t2": 0.5}, 5) == expected
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_explicit_zeros_are_not_postings(tmp_path):
    import scipy.sparse as sp

    from lsr import SparseBatch, Vocabulary

    matrix = sp.csr_matrix(
        (np.array([0.0, 2.0, 0.0], dtype=np.float32), np.array([0, 1, 1]), np.array([0, 2, 3])),
        shape=(2, 2),
    )
    docs = SparseBatch(["a", "b"], matrix, Vocabulary(["x", "y"], frozen=True))
    for quantization in ("uint8", "float16", "float32"):
        index = SparseIndex.build(docs, tmp_path / quantization, quantization=quantization)
        assert index.num_postings == 1
        assert index.search({"x": 1.0}, 5) == []
        assert [h.doc_id for h in index.search({"y": 1.0}, 5)] == ["a"]


def test_arrays_that_do_not_fit_together_are_refused(small):
    """A consistent manifest over arrays of the wrong type or size: a clear error, no traceback."""
    from lsr.index import format as fmt

    _, index = small
    np.save(index.path / "term_max.npy", np.zeros(3, dtype=np.float64))
    manifest = json.loads((index.path / "manifest.json").read_text())
    entry = manifest["arrays"]["term_max"]
    entry.update(
        dtype="<f8",
        shape=[3],
        bytes=(index.path / "term_max.npy").stat().st_size,
        sha256=sha256_file(index.path / "term_max.npy"),
    )
    manifest["manifest_sha256"] = fmt.manifest_digest(manifest)
    (index.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="'term_max' is float64"):
        SparseIndex.open(index.path)
