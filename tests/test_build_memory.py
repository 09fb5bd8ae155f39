"""Build streams its input: peak memory stays within a small multiple of the final index size.

``tracemalloc`` sees numpy buffers and also Numba's (its runtime allocates through
``PyMem_RawMalloc``), so the peak below covers every array the builder and its kernels make.
The collection is generated *before* tracing starts; the builder is then fed row slices of it,
``DEFAULT_CHUNK`` (8,192) rows at a time, as a reader would hand them over. Each slice is a copy
made inside the traced window, so the batch in flight is counted, but the rest of the input is not.

Measured (60,000 synthetic SPLADE-like docs, ~14.9M postings, 8,192-row chunks):

    quantization  index on disk       traced peak         peak / index
    uint8         51.2 MB (3.4 B/p)   157 MB (10.5 B/p)   3.07
    float16       69.0 MB (4.6 B/p)   166 MB (11.1 B/p)   2.41  (not tested below)
    float32      104.6 MB (7.0 B/p)   218 MB (14.6 B/p)   2.08

Where the uint8 peak is: when encoding starts the builder still holds every chunk's term ids
(uint16, 2 B/posting) and float32 weights (4 B; the uint8 scale needs the largest weight, known
only at the end), has just allocated the doc-major term ids + codes (3 B), and encodes the
first chunk with float32 temporaries (~13 B per posting of that chunk). The term-major transpose
(3 B in, 5 B out) comes second at ~8.6 B/posting. For float32 the transpose is the peak.
The ratio therefore grows when one chunk is a large part of the collection (20,000 docs in
8,192-row chunks: 3.8), and falls with smaller chunks (1,024-row chunks: 2.7). Holding the whole
input as a CSR matrix would add 8 B/posting and break the bound.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import VECTORS

from eval.synthetic import generate_collection
from lsr.index.builder import BuildConfig, build
from lsr.sparse import DEFAULT_CHUNK, SparseBatch

N_DOCS = 60_000
MAX_RATIO = 4.0  # traced peak / bytes on disk


@pytest.fixture(scope="module")
def collection() -> SparseBatch:
    return generate_collection(N_DOCS, seed=11, real_dir=VECTORS)


def _chunks(batch: SparseBatch, rows: int = DEFAULT_CHUNK) -> Iterator[SparseBatch]:
    for start in range(0, len(batch), rows):
        stop = start + rows
        yield SparseBatch(batch.ids[start:stop], batch.matrix[start:stop], batch.vocab)


def _disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_build_peak_memory_is_a_small_multiple_of_the_index(
    collection: SparseBatch, quantization: str, tmp_path: Path
) -> None:
    config = BuildConfig(quantization=quantization)
    # load the compiled kernels first: dispatch and cache loading are not the builder's data
    small = SparseBatch(collection.ids[:500], collection.matrix[:500], collection.vocab)
    build(_chunks(small, 100), tmp_path / "warm", vocab=collection.vocab, config=config)

    out = tmp_path / "index"
    tracemalloc.start()
    try:
        manifest = build(_chunks(collection), out, vocab=collection.vocab, config=config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    on_disk = _disk_bytes(out)
    assert manifest["num_docs"] == N_DOCS
    assert manifest["num_postings"] == collection.matrix.nnz
    ratio = peak / on_disk
    assert ratio <= MAX_RATIO, (
        f"{quantization}: build peaked at {peak / 1e6:.1f} MB "
        f"({peak / manifest['num_postings']:.2f} B/posting) for a {on_disk / 1e6:.1f} MB index: "
        f"{ratio:.2f}x > {MAX_RATIO}x"
    )
