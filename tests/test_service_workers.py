"""Several service processes over one data directory: one owns each collection's writes, the
others follow it read-only and forward writes to it. Real `lsr serve` processes on loopback:
every acknowledged write is visible to the next request on any process, results equal brute
force, and when the owner is killed (-9) another process takes the writes over."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from collection_oracle import brute_force

pytest.importorskip("fastapi")
from tests.test_service_faults import _call
from tests.test_service_faults import _start as _serve

VOCAB = [f"t{i}" for i in range(10)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _vector(rng: random.Random) -> dict[str, float]:
    return {t: rng.randint(1, 8) / 4 for t in rng.sample(VOCAB, rng.randint(1, 4))}


def _check(bases: list[str], model: dict[str, tuple[dict[str, float], dict[str, Any]]],
           rng: random.Random) -> None:  # fmt: skip
    query = _vector(rng)
    expected = brute_force(model, query, 50, None)
    for base in bases:
        status, body = _call(base, "POST", "/collections/c/search", {"vector": query, "limit": 50})
        assert status == 200, body
        assert [(h["id"], h["score"]) for h in body["hits"]] == expected, base
        assert _call(base, "GET", "/collections/c")[1]["live_docs"] == len(model)


def test_followers_forward_writes_and_see_them_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, a = _serve(data)
    try:
        status, body = _call(a, "PUT", "/collections/c", {"vocab": VOCAB, "flush_docs": 6})
        assert status == 201, body
        second, b = _serve(data)
        try:
            assert _call(a, "GET", "/info")[1]["worker"]["owns"] == ["c"]
            assert _call(b, "GET", "/info")[1]["worker"]["owns"] == []
            rng = random.Random(7)
            model: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}
            for step in range(40):
                base = rng.choice([a, b])
                doc_id = f"d{rng.randint(0, 14)}"
                if rng.random() < 0.75:
                    vector = _vector(rng)
                    upsert = {"documents": [{"id": doc_id, "vector": vector}]}
                    status, body = _call(base, "PUT", "/collections/c/documents", upsert)
                    assert status == 200 and body["count"] == 1, body
                    model[doc_id] = (vector, {})
                else:
                    status, body = _call(base, "DELETE", f"/collections/c/documents/{doc_id}")
                    assert status == (200 if doc_id in model else 404), body
                    model.pop(doc_id, None)
                if step % 4 == 0:
                    _check([a, b], model, rng)
            _check([a, b], model, rng)
            status, body = _call(b, "PUT", "/collections/c/documents",
                                 {"documents": [{"id": "x", "vector": {"nope": 1.0}}]})  # fmt: skip
            assert status == 400 and "unknown term" in body["error"]  # the owner's answer

            first.kill()  # -9: the owner dies; its lock goes with it
            first.wait()
            upsert = {"documents": [{"id": "after", "vector": {"t1": 1.0}}]}
            status, body = _call(b, "PUT", "/collections/c/documents", upsert)
            assert status == 200, body
            model["after"] = ({"t1": 1.0}, {})
            assert _call(b, "GET", "/info")[1]["worker"]["owns"] == ["c"]
            _check([b], model, rng)
            third, c = _serve(data)  # a restarted process follows the new owner
            try:
                assert _call(c, "GET", "/info")[1]["worker"]["owns"] == []
                status, _ = _call(c, "DELETE", "/collections/c/documents/after")
                assert status == 200
                model.pop("after")
                _check([b, c], model, rng)
                assert _call(c, "DELETE", "/collections/c")[0] == 200  # forwarded: c is gone
                assert _call(b, "GET", "/collections/c")[0] == 404
                assert _call(c, "GET", "/collections/c")[0] == 404
            finally:
                _stop(third)
        finally:
            _stop(second)
    finally:
        _stop(first)


def test_uvicorn_workers_share_one_collection(tmp_path: Path) -> None:
    process, base = _serve(tmp_path / "data", "--workers", "2")
    try:
        assert _call(base, "PUT", "/collections/c", {"vocab": VOCAB})[0] == 201
        rng = random.Random(3)
        model: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}
        pids = set()
        for i in range(30):  # each call is a new connection: the kernel picks the worker
            vector = _vector(rng)
            status, body = _call(base, "PUT", "/collections/c/documents",
                                 {"documents": [{"id": f"d{i}", "vector": vector}]})  # fmt: skip
            assert status == 200, body
            model[f"d{i}"] = (vector, {})
            _check([base], model, rng)  # read-after-write, whichever worker answers
            pids.add(_call(base, "GET", "/info")[1]["worker"]["pid"])
        print(json.dumps({"workers_seen": len(pids)}))
    finally:
        _stop(process)
