"""The query micro-batcher: concurrent texts leave as batches, each caller gets its own text's
result (bit for bit the single-text encoding, with the real siamese encoder), and one bad text
fails only its own request."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading

import numpy as np
import pytest

from service.batching import EncodeBatcher
from tests.conftest import SHARED, SPLADE_TINY


def test_waiting_texts_leave_together_and_results_go_back_to_their_callers() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def encode_batch(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        if len(calls) == 1:
            release.wait(30)  # the first batch holds the only slot while others queue
        return [t.upper() for t in texts]

    async def main() -> list[str]:
        batcher = EncodeBatcher(encode_batch, max_batch=4, max_inflight=1)
        first = asyncio.create_task(batcher.encode("a"))
        await asyncio.sleep(0.05)  # "a" is being encoded alone, the slot is taken
        rest = [asyncio.create_task(batcher.encode(t)) for t in "bcdefg"]
        await asyncio.sleep(0.05)
        release.set()
        return [await first, *[await r for r in rest]]

    assert asyncio.run(main()) == list("ABCDEFG")
    # b..g queued while a was encoded: they leave as batches of at most 4, in arrival order
    assert calls == [["a"], ["b", "c", "d", "e"], ["f", "g"]]


def test_a_window_gathers_texts_before_the_first_batch() -> None:
    calls: list[list[str]] = []

    def encode_batch(texts: list[str]) -> list[int]:
        calls.append(list(texts))
        return [len(t) for t in texts]

    async def main() -> list[int]:
        batcher = EncodeBatcher(encode_batch, max_batch=3, max_inflight=1, window_s=30)
        return list(await asyncio.gather(*(batcher.encode(t) for t in ["x", "yy", "zzz"])))

    assert asyncio.run(main()) == [1, 2, 3]
    assert calls == [["x", "yy", "zzz"]]  # the batch filled: it did not wait the 30 s out


def test_one_bad_text_fails_only_its_own_request() -> None:
    def encode_batch(texts: list[str]) -> list[str]:
        if "bad" in texts:
            raise ValueError("cannot encode 'bad'")
        return [t * 2 for t in texts]

    async def main() -> list[object]:
        batcher = EncodeBatcher(encode_batch, max_batch=8, max_inflight=1, window_s=30)
        tasks = [batcher.encode(t) for t in ["ok", "bad", "fine"]]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    good, bad, fine = asyncio.run(main())
    assert (good, fine) == ("okok", "finefine")
    assert isinstance(bad, ValueError) and "bad" in str(bad)


def test_siamese_batches_equal_single_encodings_bit_for_bit() -> None:
    pytest.importorskip("torch")
    from lsr.encoders.config import EncoderConfig
    from lsr.encoders.loading import load_encoder

    with gzip.open(SHARED / "data/beir/scifact/queries.jsonl.gz", "rt") as handle:
        texts = [json.loads(line)["text"] for line, _ in zip(handle, range(20), strict=False)]
    texts += texts[:3]  # repeats in one batch
    query = load_encoder(EncoderConfig(model=str(SPLADE_TINY))).query
    calls: list[int] = []

    def encode_batch(batch: list[str]) -> list:
        calls.append(len(batch))
        encoded = query.encode(batch)
        return [encoded.row(i) for i in range(len(batch))]

    async def main() -> list:
        batcher = EncodeBatcher(encode_batch, max_batch=8, max_inflight=1, window_s=30)
        return list(await asyncio.gather(*(batcher.encode(t) for t in texts)))

    got = asyncio.run(main())
    assert calls == [8, 8, 7]
    for text, vector in zip(texts, got, strict=True):
        alone = query.encode_one(text)
        np.testing.assert_array_equal(np.asarray(vector.terms), np.asarray(alone.terms))
        assert np.asarray(vector.weights).tobytes() == np.asarray(alone.weights).tobytes(), text
