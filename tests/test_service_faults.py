"""`kill -9` of a real `lsr serve` process during a stream of acknowledged writes: after a restart
every acknowledged write is there, the one in flight is all there or absent, searches answer."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from collection_oracle import brute_force

pytest.importorskip("fastapi")

VOCAB = [f"t{i}" for i in range(10)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _start(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `lsr serve` (``extra``: its options) on a free port, once it answers /readyz."""
    port = _free_port()
    env = dict(os.environ, LSR_DATA_DIR=str(data_dir), LSR_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "lsr", "serve", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if _call(base, "GET", "/readyz")[0] == 200:
                return process, base
        except (urllib.error.URLError, ConnectionError):
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("lsr serve did not become ready")


def _apply(model: dict[str, Any], op: dict[str, Any]) -> None:
    if op["kind"] == "upsert":
        for doc in op["documents"]:
            model[doc["id"]] = (doc["vector"], doc.get("metadata"))
    else:
        for doc_id in op["ids"]:
            model.pop(doc_id, None)


def _state(base: str) -> dict[str, Any]:
    """The live documents, read back through search (one term at a time) and get."""
    found: dict[str, dict[str, float]] = {}
    for term in VOCAB:
        _, body = _call(base, "POST", "/collections/c/search",
                        {"vector": {term: 1.0}, "limit": 1000})  # fmt: skip
        for hit in body["hits"]:
            found.setdefault(hit["id"], {})[term] = hit["score"]
    return found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_during_writes_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    process, base = _start(tmp_path / "data")
    acked: list[dict[str, Any]] = []
    in_flight: list[dict[str, Any]] = []
    try:
        status, _ = _call(base, "PUT", "/collections/c", {"vocab": VOCAB, "flush_docs": 5})
        assert status == 201

        def writer() -> None:
            for step in range(10_000):
                if rng.random() < 0.75:
                    docs = [
                        {
                            "id": f"d{rng.randrange(30)}",
                            "vector": {t: rng.randint(1, 8) / 4 for t in rng.sample(VOCAB, 3)},
                            "metadata": {"step": step},
                        }
                    ]
                    docs = list({d["id"]: d for d in docs}.values())
                    op = {"kind": "upsert", "documents": docs}
                    request = ("PUT", "/collections/c/documents", {"documents": docs})
                else:
                    ids = [f"d{rng.randrange(30)}" for _ in range(2)]
                    op = {"kind": "delete", "ids": ids}
                    request = ("POST", "/collections/c/documents/delete", {"ids": ids})
                in_flight[:] = [op]
                try:
                    status, _ = _call(base, *request)
                except (urllib.error.URLError, ConnectionError, OSError):
                    return  # the server died under this request
                if status != 200:
                    return
                acked.append(op)
                in_flight.clear()

        thread = threading.Thread(target=writer)
        thread.start()
        target = rng.randint(10, 40)  # acknowledged writes before the kill, then a random instant
        deadline = time.monotonic() + 120
        while len(acked) < target and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.random() * 0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        thread.join(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(acked) >= 10, "the server died before taking writes"

    process, base = _start(tmp_path / "data")
    try:
        without: dict[str, Any] = {}
        for op in acked:
            _apply(without, op)
        candidates = [without]
        if in_flight:
            with_it = dict(without)
            _apply(with_it, in_flight[0])
            candidates.append(with_it)
        got = _state(base)
        expected = [
            {i: {t: w for t, w in vector.items()} for i, (vector, _) in model.items()}
            for model in candidates
        ]
        assert got in expected, "the restarted service lost or half-applied a write"
        model = candidates[expected.index(got)]
        query = {"t1": 1.0, "t2": 0.5, "t3": 0.25}
        _, body = _call(base, "POST", "/collections/c/search", {"vector": query, "limit": 10})
        assert [(h["id"], h["score"]) for h in body["hits"]] == brute_force(model, query, 10)
        assert _call(base, "PUT", "/collections/c/documents",
                     {"documents": [{"id": "new", "vector": {"t0": 1.0}}]})[0] == 200  # fmt: skip
    finally:
        process.kill()
        process.wait()
