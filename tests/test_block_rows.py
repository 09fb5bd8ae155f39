"""Block rows: full rows of block maxima and posting starts for the commonest terms, checked
against the postings themselves; searches with rows equal searches without, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_batch

from lsr import SparseIndex, Vocabulary
from lsr.index import kernels
from lsr.index.format import IndexFormatError, finalize_manifest, save_array
from lsr.sparse import SparseBatch


def _postings_by_block(index: SparseIndex, term: int) -> dict[int, list[int]]:
    """Oracle: term's posting indexes (from its first), grouped by block, from a walk over its
    entries in plain Python."""
    ix = index.kernel_arrays
    out: dict[int, list[int]] = {}
    block, far, p = -1, ix.term_far_ptr[term], 0
    for e in range(ix.term_entry_ptr[term], ix.term_entry_ptr[term + 1]):
        gap = int(ix.entry_gap[e])
        if gap == 0:
            gap, far = int(ix.far_gap[far]), far + 1
        block += gap
        n = int(ix.entry_count[e]) + 1
        out[block] = list(range(p, p + n))
        p += n
    return out


def _row_start(ix, r: int, b: int) -> int:
    return int(ix.row_base[r, b >> kernels.ROW_GROUP_SHIFT]) + int(ix.row_offset[r, b])


def _check_rows(index: SparseIndex, share: float) -> int:
    """Every term with at least ``share`` of the blocks has a row; each row's maxima and posting
    ranges are the term's own, block by block. Returns the number of rows."""
    ix = index.kernel_arrays
    entries = np.diff(ix.term_entry_ptr)
    want_rows = np.flatnonzero(entries >= kernels.rows_entry_floor(ix.n_blocks, share))
    assert np.flatnonzero(ix.term_row >= 0).tolist() == want_rows.tolist()
    assert ix.term_row[want_rows].tolist() == list(range(len(want_rows)))
    lut = index.lut
    for t in want_rows.tolist():
        r = int(ix.term_row[t])
        blocks = _postings_by_block(index, t)
        base = int(ix.term_post_ptr[t])
        for b in range(ix.n_blocks):
            mine = blocks.get(b, [])
            start, end = _row_start(ix, r, b), _row_start(ix, r, b + 1)
            assert list(range(start, end)) == mine
            codes = ix.post_codes[[base + p for p in mine]]
            want_max = codes.max() if mine else 0
            assert ix.row_max[r, b] == want_max
            if not mine:  # no posting: the row's code decodes to 0
                assert (float(ix.row_max[r, b]) if lut is None else lut[ix.row_max[r, b]]) == 0
    return len(want_rows)


def _skewed_batch(n_docs: int, n_terms: int, seed: int) -> SparseBatch:
    """Terms from rare (2 % of documents) to common (60 %): some get rows, some do not."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_docs, n_terms)) < np.linspace(0.02, 0.6, n_terms)
    weights = rng.integers(1, 1000, size=(n_docs, n_terms)).astype(np.float32) / 8
    matrix = sp.csr_matrix(np.where(mask, weights, 0).astype(np.float32))
    vocab = Vocabulary([f"t{i}" for i in range(n_terms)], frozen=True)
    return SparseBatch([f"d{i}" for i in range(n_docs)], matrix, vocab)


@pytest.mark.parametrize("quantization", ["uint8", "float16", "float32"])
@pytest.mark.parametrize(("block_size", "share"), [(1, 0.3), (4, 0.5), (16, 0.9)])
def test_rows_hold_each_terms_blocks(tmp_path, quantization, block_size, share):
    docs = _skewed_batch(400, 30, seed=7)
    index = SparseIndex.build(
        docs, tmp_path / "i", quantization=quantization, block_size=block_size, block_rows=share
    )
    n_rows = _check_rows(index, share)
    assert 0 < n_rows < 30
    queries = random_batch(np.random.default_rng(8), 20, 30, density=0.5, prefix="q")
    plain = SparseIndex.build(
        docs, tmp_path / "p", quantization=quantization, block_size=block_size
    )
    for heap_factor in (1.0, 0.7):
        got = index.batch_search(queries, 10, algorithm="blockmax", heap_factor=heap_factor)
        want = plain.batch_search(queries, 10, algorithm="blockmax", heap_factor=heap_factor)
        assert got == want
    assert index.manifest["num_block_rows"] == n_rows
    reopened = SparseIndex.open(tmp_path / "i")  # checksums verified, rows read back
    assert np.array_equal(reopened.kernel_arrays.row_offset, index.kernel_arrays.row_offset)


def test_rows_cross_offset_groups(tmp_path):
    """One term in every document of 300 full 256-document blocks: its starts run past what a
    uint16 offset holds (76,800 postings), across three groups of 128 blocks."""
    n_docs, block = 300 * 256, 256
    matrix = sp.csr_matrix(
        (
            np.arange(1, n_docs + 1, dtype=np.float32) % 97 + 1,
            np.zeros(n_docs, dtype=np.int64),
            np.arange(n_docs + 1),
        ),
        shape=(n_docs, 2),
    )
    vocab = Vocabulary(["common", "rare"], frozen=True)
    docs = SparseBatch([f"d{i}" for i in range(n_docs)], matrix, vocab)
    index = SparseIndex.build(docs, tmp_path / "i", block_size=block, block_rows=0.9)
    assert _check_rows(index, 0.9) == 1
    ix = index.kernel_arrays
    assert _row_start(ix, 0, ix.n_blocks) == n_docs
    plain = SparseIndex.build(docs, tmp_path / "p", block_size=block)
    for k in (1, 10, 1000):
        want = plain.search({"common": 1.0}, k, algorithm="exhaustive")
        assert index.search({"common": 1.0}, k, algorithm="blockmax") == want
        assert index.search({"common": 1.0}, k, algorithm="blockmax", threads=2) == want


def test_index_without_rows_has_empty_rows(tmp_path):
    docs = random_batch(np.random.default_rng(1), 50, 10, density=0.3)
    index = SparseIndex.build(docs, tmp_path / "i", block_size=4)
    assert index.manifest["format_version"] == 3  # readable by lsr before block rows
    assert "num_block_rows" not in index.manifest
    assert "term_row" not in index.manifest["arrays"]
    with_rows = SparseIndex.build(docs, tmp_path / "r", block_size=4, block_rows=0.5)
    assert with_rows.manifest["format_version"] == 4
    assert index.kernel_arrays.term_row.shape == (0,)


def _rewrite(path, name: str, array: np.ndarray | None) -> None:
    """Replace (or drop) one array of a built index and reseal its manifest."""
    manifest = json.loads((path / "manifest.json").read_text())
    if array is None:
        (path / manifest["arrays"].pop(name)["file"]).unlink()
    else:
        (path / manifest["arrays"][name]["file"]).unlink()
        manifest["arrays"][name] = save_array(path, name, array)
    finalize_manifest(path, manifest, format_version=manifest["format_version"])


@pytest.mark.parametrize(
    ("name", "damage", "needle"),
    [
        ("row_offset", lambda a: a[:, :-1], "row_offset"),
        ("row_base", lambda a: a.astype(np.int64), "row_base"),
        ("term_row", lambda a: np.where(a >= 0, a + 100, a).astype(np.int32), "do not exist"),
        ("row_max", None, "incomplete"),
    ],
)
def test_damaged_rows_are_refused(tmp_path, name, damage, needle):
    docs = random_batch(np.random.default_rng(3), 200, 12, density=0.4)
    path = tmp_path / "i"
    index = SparseIndex.build(docs, path, block_size=8, block_rows=0.5)
    array = np.array(getattr(index.kernel_arrays, name))
    del index
    _rewrite(path, name, None if damage is None else np.ascontiguousarray(damage(array)))
    with pytest.raises(IndexFormatError, match=needle):
        SparseIndex.open(path)


def test_version_4_without_rows_is_refused(tmp_path):
    docs = random_batch(np.random.default_rng(4), 100, 12, density=0.4)
    path = tmp_path / "i"
    SparseIndex.build(docs, path, block_size=8, block_rows=0.5)
    for name in kernels.OPTIONAL_ARRAYS:
        _rewrite(path, name, None)
    with pytest.raises(IndexFormatError, match="incomplete"):
        SparseIndex.open(path)
