"""eval/bench_block_rows: the comparison finds no differing hit list where the indexes hold the
same vectors, finds them where they do not, and renders its report."""

from __future__ import annotations

import numpy as np
from conftest import random_batch

from eval import bench_block_rows as bench
from lsr import SparseIndex


def test_compare_and_report(tmp_path):
    rng = np.random.default_rng(5)
    docs = random_batch(rng, 300, 40, density=0.2, levels=50)
    queries = random_batch(rng, 12, 40, density=0.3, prefix="q")
    plain = SparseIndex.build(docs, tmp_path / "plain", block_size=8)
    rows = SparseIndex.build(docs, tmp_path / "rows", block_size=8, block_rows=0.3)
    assert rows.manifest["num_block_rows"] > 0
    searches = bench.compare(plain, rows, queries, rounds=1)
    assert [(s["algorithm"], s["heap_factor"]) for s in searches] == [
        ("blockmax", 1.0), ("blockmax", 0.85), ("approximate", None)
    ]  # fmt: skip
    assert all(s["differing"] == 0 for s in searches)
    assert all(s["plain_ms"]["p50"] > 0 and s["rows_ms"]["p50"] > 0 for s in searches)
    other = SparseIndex.build(  # other weights: the comparison must notice
        random_batch(np.random.default_rng(6), 300, 40, density=0.2, levels=50),
        tmp_path / "other", block_size=8,
    )  # fmt: skip
    assert bench.compare(plain, other, queries, rounds=1)[0]["differing"] > 0
    report = {
        "date": "today",
        "machine": {"cpus": 2},
        "workloads": {
            "tiny": {
                "docs": plain.num_docs,
                "postings": plain.num_postings,
                "plain": {"bytes_per_posting": 3.0, "build_s": 0.1},
                "shares": [
                    {
                        "share": 0.3,
                        "rows": rows.manifest["num_block_rows"],
                        "bytes_per_posting": 3.5,
                        "build_s": 0.1,
                        "modes": {"siamese": {"mean_terms": 12.0, "searches": searches}},
                    }
                ],
            }
        },
    }
    text = bench.markdown(report)
    assert text.count("| tiny (300 docs) | 0.3 |") == 3
    assert "approximate |" in text and "blockmax hf 0.85 |" in text
