"""Service benchmark: load and latency through HTTP, each part anchored in the same run.

SciFact (5,183 documents as the pre-encoded splade-tiny vectors, the 300 test queries as text)
in three collections built with the library in one data directory: ``siamese`` (queries through
splade-tiny), ``free`` (inference-free: queries are tokens weighted by an IDF table computed over
the corpus) and ``hybrid`` (siamese + all-MiniLM-L6-v2 dense rows). Every document has metadata
``year`` (2000-2024) and ``bucket`` (b0-b7), uniform from a seeded generator. The server is a
separate process (uvicorn over ``service.app.create_app`` on 127.0.0.1, plus one BM25 route).

a) Load: C clients (threads of a separate process, one keep-alive connection each, no think
   time) for S seconds of a fixed mix: siamese text search, inference-free text search,
   inference-free search filtered on the metadata, hybrid text search (sparse + dense, RRF), and
   upserts of 4 pre-encoded documents into ``free`` (half replace existing ids with their own
   vectors, half add new ids; flush_docs 256, so segments are flushed while searches run). Zero
   errors required; throughput and p50/p99 per request kind. When the service has micro-batched
   siamese query encoding (``query_batching`` / ``query_batch_ms`` in service/settings.py), the
   load runs with it off and on, each on a fresh copy of the data directory.
b) Latency claim: inference-free search end to end (client to client) vs BM25 (bm25s, its
   default tokenizer, over the same SciFact texts) served by the same FastAPI app under an extra
   route ``POST /bm25/{name}/search`` taking the same SearchRequest and answering the same
   SearchResponse. One sequential client, the test queries in turn for R rounds (order of the
   systems alternating); each query's time is its median over rounds. Ratios: inference-free /
   BM25 (seed paper: 1.1x) and siamese / inference-free.
c) Service overhead: HTTP p50 minus ``Collection.search`` p50 in-process (same collection
   directory, same queries, same k, opened before the server starts), siamese and inference-free.
   The HTTP hits must equal the library's exactly (ids and scores).

    python -m eval.bench_service [--seconds 60] [--clients 32] [--rounds 3] [--out eval/results]
    python -m eval.bench_service --quick     # 1,000 docs, 30 queries, 8 clients for 8 s
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_live import latency, run_header, summarize
from service.models import Hit, SearchRequest, SearchResponse

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny"
MODEL = SHARED / "models" / "splade-tiny"
BEIR = SHARED / "data" / "beir" / "scifact"
WORK = REPO / "eval" / "work"
CACHE = WORK / "bench_service-cache"
K = 10
MIX = {"siamese": 0.3, "free": 0.3, "filtered": 0.15, "hybrid": 0.15, "upsert": 0.1}
UPSERT_BATCH = 4
FREE_FLUSH = 256  # flush_docs of collection free
PAPER_FREE_OVER_BM25 = 1.1
TARGET_FREE_OVER_BM25 = 1.1
FILTERS = ({"bucket": {"in": ["b1", "b2"]}}, {"year": {"gte": 2015}})  # ~25 %, ~40 % of docs


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Data:
    """The SciFact documents (pre-encoded vectors, texts, metadata, dense rows) and test queries."""

    ids: list[str]
    texts: list[str]
    vectors: Any  # SparseBatch
    metadata: list[dict[str, Any]]
    dense: np.ndarray
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]


def dense_rows(ids: list[str], texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 document rows (cached in eval/work: encoding SciFact takes minutes)."""
    from lsr.encoders.config import DEFAULT_DENSE_MODEL

    path = CACHE / f"scifact-dense-{DEFAULT_DENSE_MODEL.split('/')[-1]}.npz"
    if path.is_file():
        cached = np.load(path)
        position = {str(i): n for n, i in enumerate(cached["ids"].tolist())}
        if all(i in position for i in ids):
            return np.ascontiguousarray(cached["matrix"][[position[i] for i in ids]])
    from lsr.encoders.dense_encoder import DenseEncoder

    print(f"   encoding {len(ids)} documents with {DEFAULT_DENSE_MODEL} (cached afterwards)")
    matrix = np.asarray(DenseEncoder(DEFAULT_DENSE_MODEL).encode_document(texts), np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.asarray(ids), matrix=matrix)
    return matrix


def load_data(n_docs: int | None, n_queries: int) -> Data:
    from lsr.corpus import load_corpus, load_qrels, load_queries
    from lsr.sparse import SparseBatch, read_jsonl
    from lsr.vocab import Vocabulary

    docs = read_jsonl(VECTORS / "docs.jsonl.gz", Vocabulary.load(MODEL))
    if n_docs is not None:
        docs = SparseBatch(docs.ids[:n_docs], docs.matrix[:n_docs], docs.vocab)
    corpus = load_corpus(BEIR)
    texts = [corpus[i] for i in docs.ids]
    rng = np.random.default_rng(7)
    years = rng.integers(2000, 2025, size=len(docs))
    buckets = rng.integers(0, 8, size=len(docs))
    metadata = [{"year": int(y), "bucket": f"b{b}"} for y, b in zip(years, buckets, strict=True)]
    qrels = load_qrels(BEIR, "test")
    all_queries = load_queries(BEIR)
    query_ids = list(qrels)[:n_queries]
    return Data(
        list(docs.ids),
        texts,
        docs,
        metadata,
        dense_rows(list(docs.ids), texts),
        query_ids,
        [all_queries[q] for q in query_ids],
        qrels,
    )


def idf_file(data: Data) -> Path:
    """IDF over the indexed texts with splade-tiny's tokenizer (the model ships none)."""
    from lsr.encoders.loading import compute_idf

    path = CACHE / f"scifact-splade-tiny-idf-{len(data.ids)}.json"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        compute_idf(str(MODEL), data.texts).save(path)
    return path


def build_data_dir(data: Data, path: Path) -> dict[str, float]:
    """The three collections, each compacted to one segment; seconds per collection."""
    from lsr.collection import Collection
    from lsr.encoders.config import DEFAULT_DENSE_MODEL

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    schema = {"year": "number", "bucket": "keyword"}
    specs: dict[str, dict[str, Any]] = {
        "siamese": {"query_mode": "siamese"},
        # small flushes: the load's upserts flush segments (and merge them) while searches run
        "free": {"query_mode": "inference-free", "idf": idf_file(data), "flush_docs": FREE_FLUSH},
        "hybrid": {"query_mode": "siamese", "dense_model": DEFAULT_DENSE_MODEL},
    }
    seconds = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        with Collection.create(path / name, model=str(MODEL), schema=schema, **spec) as c:
            dense = data.dense if name == "hybrid" else None
            c.upsert(data.ids, vectors=data.vectors, dense=dense, metadata=data.metadata)
            c.compact()
        seconds[name] = time.perf_counter() - t0
    return seconds


# -- the server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data_dir: Path, port: int, bm25_docs: int | None) -> None:
    """The service (settings from LSR_ variables) plus ``POST /bm25/{name}/search``: BM25 over
    the SciFact texts of collection ``free``, same request and response bodies."""
    import uvicorn

    from lsr.baselines.bm25 import Bm25sBaseline
    from lsr.corpus import iter_corpus
    from service.app import create_app
    from service.registry import NotFound
    from service.settings import ServiceSettings

    app = create_app(ServiceSettings(data_dir=data_dir, port=port))
    if bm25_docs:
        corpus = list(iter_corpus(BEIR))[:bm25_docs]
        indexes = {"free": Bm25sBaseline().index(corpus)}

        @app.post("/bm25/{name}/search", tags=["search"], response_model=SearchResponse)
        def bm25_search(name: str, body: SearchRequest) -> SearchResponse:
            """BM25 (bm25s defaults) over the collection's texts; query text, limit, offset."""
            started = time.perf_counter()
            if name not in indexes:
                raise NotFound(f"no BM25 index named {name!r}")
            ranked = indexes[name].search({"q": body.query or ""}, k=body.offset + body.limit)
            hits = [Hit(id=i, score=s) for i, s in ranked["q"][body.offset :]]
            return SearchResponse(hits=hits, took_ms=(time.perf_counter() - started) * 1000)

    # (route annotations are strings here: FastAPI resolves them in this module's namespace,
    # hence the module-level import of the service models)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Server:
    """``python -m eval.bench_service --serve`` in a subprocess, ready when /readyz answers."""

    def __init__(self, data_dir: Path, env: dict[str, str], bm25_docs: int | None) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "eval.bench_service",
            "--serve",
            str(data_dir),
            "--port",
            str(self.port),
            "--bm25-docs",
            str(bm25_docs or 0),
        ]
        environ = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(command, cwd=REPO, env=environ)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Client:
    """One keep-alive HTTP/1.1 connection; ``post`` returns (status, raw body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: Any, method: str = "POST") -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, data, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()  # the server closed an idle keep-alive connection: reconnect
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def search(self, path: str, body: dict[str, Any]) -> list[tuple[str, float]]:
        status, raw = self.post(path, body)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status} {raw[:200]!r}")
        return [(h["id"], h["score"]) for h in json.loads(raw)["hits"]]

    def close(self) -> None:
        self.conn.close()


# -- a) load --------------------------------------------------------------------------------------
def request_for(kind: str, rng: random.Random, work: dict[str, Any], serial: str) -> tuple:
    """(method, path, body) of one request of ``kind``."""
    query = rng.choice(work["queries"])
    if kind == "siamese":
        return "POST", "/collections/siamese/search", {"query": query, "limit": K}
    if kind == "free":
        return "POST", "/collections/free/search", {"query": query, "limit": K}
    if kind == "filtered":
        body = {"query": query, "limit": K, "filter": rng.choice(FILTERS)}
        return "POST", "/collections/free/search", body
    if kind == "hybrid":
        body = {"query": query, "limit": K, "mode": "hybrid", "fusion": {"method": "rrf"}}
        return "POST", "/collections/hybrid/search", body
    docs = rng.sample(work["upserts"], UPSERT_BATCH)
    replace = rng.random() < 0.5
    batch = [
        {
            "id": d["id"] if replace else f"{d['id']}-{serial}-{j}",
            "vector": d["vector"],
            "metadata": d["metadata"],
        }
        for j, d in enumerate(docs)
    ]
    return "PUT", "/collections/free/documents", {"documents": batch}


def load_client(port: int, work_file: Path, clients: int, seconds: float, out: Path) -> None:
    """The load generator (its own process): ``clients`` threads, closed loop, for ``seconds``
    after a warm-up; writes per-kind latencies and statuses to ``out``."""
    work = json.loads(work_file.read_text())
    kinds, weights = list(MIX), list(MIX.values())
    warmup = min(5.0, seconds / 6)
    start = time.monotonic() + 0.5
    measure_from, stop_at = start + warmup, start + warmup + seconds
    results: list[list[tuple[str, float, float, int | str]]] = [[] for _ in range(clients)]

    def run(c: int) -> None:
        rng = random.Random(1000 + c)
        client = Client(port)
        n = 0
        while time.monotonic() < start:
            time.sleep(0.01)
        while (now := time.monotonic()) < stop_at:
            kind = rng.choices(kinds, weights)[0]
            method, path, body = request_for(kind, rng, work, f"{c}-{n}")
            t0 = time.perf_counter()
            try:
                status: int | str = client.post(path, body, method)[0]
            except Exception as exc:  # counted as an error of its kind
                status = type(exc).__name__
                client.close()
                client = Client(port)
            results[c].append((kind, now, time.perf_counter() - t0, status))
            n += 1
        client.close()

    cpu0 = time.process_time()
    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [r for per_client in results for r in per_client]
    report: dict[str, Any] = {
        "clients": clients,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "client_cpu_seconds": time.process_time() - cpu0,
        "kinds": {},
    }
    for kind in [*kinds, "all"]:
        mine = [r for r in rows if kind in ("all", r[0])]
        timed = [r[2] for r in mine if r[1] >= measure_from and r[3] in (200, 201)]
        statuses = Counter(str(r[3]) for r in mine)
        bad = {s: n for s, n in statuses.items() if not s.startswith("2")}
        report["kinds"][kind] = {
            "requests": len(mine),
            "non_2xx": bad,
            "errors": sum(bad.values()),
            "measured": len(timed),
            "req_per_s": len(timed) / seconds,
            **(summarize(timed) if timed else {}),
        }
    out.write_text(json.dumps(report, indent=2))


def load_run(
    pristine: Path, scratch: Path, data: Data, env: dict[str, str], clients: int, seconds: float
) -> dict[str, Any]:
    """One load run on a fresh copy of the data directory, server started with ``env``."""
    data_dir = scratch / "load-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(pristine, data_dir)
    vectors = data.vectors.to_dicts()
    upsert_pool = [
        {"id": data.ids[i], "vector": vectors[i], "metadata": data.metadata[i]}
        for i in range(0, len(data.ids), max(1, len(data.ids) // 400))
    ]
    work_file, out = scratch / "load-work.json", scratch / "load-out.json"
    work_file.write_text(json.dumps({"queries": data.queries, "upserts": upsert_pool}))
    server = Server(data_dir, env, bm25_docs=None)
    try:
        warm = Client(server.port)
        rng = random.Random(0)
        for kind in MIX:  # first calls load the encoders
            for _ in range(3):
                method, path, body = request_for(
                    kind, rng, {"queries": data.queries, "upserts": upsert_pool}, "warm"
                )
                status, raw = warm.post(path, body, method)
                assert status in (200, 201), (kind, status, raw[:200])
        warm.close()
        cpu0 = server.cpu_seconds()
        wall0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "eval.bench_service",
                "--load-client",
                str(server.port),
                "--work",
                str(work_file),
                "--clients",
                str(clients),
                "--seconds",
                str(seconds),
                "--load-out",
                str(out),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=True,
        )
        wall = time.perf_counter() - wall0
        report = json.loads(out.read_text())
        report["server_cpu_seconds"] = server.cpu_seconds() - cpu0
        report["wall_seconds"] = wall
        status, raw = Client(server.port).post("/collections/free", None, "GET")
        report["free_after"] = {
            k: v for k, v in json.loads(raw).items() if k in ("live_docs", "generation")
        }
        report["free_after"]["segments"] = len(json.loads(raw).get("segments", []))
    finally:
        server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return report


# -- b, c) sequential latency ---------------------------------------------------------------------
def ndcg10(data: Data, answers: Sequence[Sequence[tuple[str, float]]]) -> float:
    from lsr.metrics import evaluate

    run = {q: dict(hits) for q, hits in zip(data.query_ids, answers, strict=True)}
    qrels = {q: data.qrels[q] for q in data.query_ids}
    return float(evaluate(qrels, run, ["ndcg_cut_10"]).mean["ndcg_cut_10"])


def library_latency(data: Data, data_dir: Path, rounds: int) -> tuple[dict, dict]:
    """``Collection.search(text, K)`` in this process (encoding included), one query at a time."""
    from lsr.collection import Collection

    opened = {name: Collection.open(data_dir / name) for name in ("siamese", "free")}
    try:
        systems: dict[str, Callable[[int], Any]] = {
            name: (
                lambda i, c=c: [(h.doc_id, float(h.score)) for h in c.search(data.queries[i], K)]
            )
            for name, c in opened.items()
        }
        return latency(systems, len(data.queries), rounds)
    finally:
        for c in opened.values():
            c.close()


def http_latency(data: Data, port: int, rounds: int) -> tuple[dict, dict]:
    """The same queries through HTTP, one sequential keep-alive client."""
    client = Client(port)
    paths = {
        "bm25": "/bm25/free/search",
        "free": "/collections/free/search",
        "siamese": "/collections/siamese/search",
    }
    systems: dict[str, Callable[[int], Any]] = {
        name: (lambda i, p=path: client.search(p, {"query": data.queries[i], "limit": K}))
        for name, path in paths.items()
    }
    try:
        return latency(systems, len(data.queries), rounds)
    finally:
        client.close()


# -- report ---------------------------------------------------------------------------------------
def _f(value: Any, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["sizes"]
    lat, ratios = report["latency"], report["latency"]["ratios"]
    mix = ", ".join(f"{k} {v:.0%}" for k, v in report["mix"].items())
    lines = [
        "# Service benchmark (`eval/bench_service.py`)",
        "",
        f"{report['date']}, lsr {report['versions']['lsr']} "
        f"(commit {str(report['versions'].get('git_commit'))[:10]}), {m['cpus']} CPUs "
        f"({m['processor']}), Python {m['python']}; load average before "
        f"{report['load_average_before']}. "
        + ("**Quick run (tiny sizes): not the committed numbers.** " if report["quick"] else "")
        + "The machine is small and shared (2 cores, other jobs running: absolute numbers are "
        "noisy, ratios measured in the same run are what to read), and every client runs on the "
        "same 2 cores as the server: the load generator's threads and the sequential client take "
        "CPU from the service they measure.",
        "",
        f"SciFact: {s['docs']:,} documents (pre-encoded splade-tiny vectors, metadata year and "
        f"bucket), {s['queries']} test queries as text, k = {report['k']}. Collections: "
        "`siamese` (splade-tiny queries), `free` (inference-free, IDF over the corpus), `hybrid` "
        "(siamese + all-MiniLM-L6-v2, RRF). Server: uvicorn over `create_app` in its own process "
        "on 127.0.0.1, plus `POST /bm25/{name}/search` (bm25s, default tokenizer, k1 1.5, b 0.75, "
        "same request/response bodies; a plain `def` handler, so one thread-pool hop, where the "
        "collection route awaits thread-pool hops for encoding and for search).",
        "",
        "## b) Inference-free vs BM25 through the same service (sequential client)",
        "",
        f"One keep-alive client, the {s['queries']} queries in turn, {s['rounds']} rounds "
        "(system order alternating), each query's median over rounds; client to client.",
        "",
        "| system | p50 ms | p99 ms | mean ms | nDCG@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("bm25", "free", "siamese"):
        row = lat["http"][name]
        lines.append(
            f"| HTTP {name} | {_f(row['p50_ms'])} | {_f(row['p99_ms'])} | "
            f"{_f(row['mean_ms'])} | {_f(lat['ndcg10']['http_' + name], '.4f')} |"
        )
    for name in ("free", "siamese"):
        row = lat["library"][name]
        lines.append(
            f"| library {name} (in-process) | {_f(row['p50_ms'])} | "
            f"{_f(row['p99_ms'])} | {_f(row['mean_ms'])} | "
            f"{_f(lat['ndcg10']['library_' + name], '.4f')} |"
        )
    verdict = "met" if ratios["free_over_bm25_p50"] <= TARGET_FREE_OVER_BM25 else "**not met**"
    lines += [
        "",
        f"- inference-free / BM25: p50 **{ratios['free_over_bm25_p50']:.2f}x**, p99 "
        f"{ratios['free_over_bm25_p99']:.2f}x (seed paper {PAPER_FREE_OVER_BM25}x; target "
        f"<= {TARGET_FREE_OVER_BM25}x: {verdict})",
        f"- siamese / inference-free: p50 **{ratios['siamese_over_free_p50']:.2f}x**, p99 "
        f"{ratios['siamese_over_free_p99']:.2f}x",
        "",
        "## c) Service overhead (HTTP p50 minus in-process `Collection.search` p50)",
        "",
        "| collection | HTTP p50 ms | library p50 ms | overhead ms | HTTP hits == library |",
        "|---|---:|---:|---:|---|",
    ]
    for name in ("siamese", "free"):
        o = lat["overhead"][name]
        lines.append(
            f"| {name} | {_f(o['http_p50_ms'])} | {_f(o['library_p50_ms'])} | "
            f"**{_f(o['overhead_ms'])}** | {o['equal_hits']} |"
        )
    lines += [
        "",
        "The overhead is what the service adds per request: JSON in and out, validation, the "
        "event loop and thread-pool hand-offs, the client's own HTTP work (same cores).",
        "",
        "## a) Load: mixed requests from concurrent clients",
        "",
        f"{s['clients']} clients (threads in a separate process, keep-alive, no think time) for "
        f"{s['seconds']:g} s after a warm-up; mix {mix}"
        f"; filtered = inference-free with {json.dumps(FILTERS[0])} or {json.dumps(FILTERS[1])}; "
        f"upsert = {UPSERT_BATCH} pre-encoded documents into `free` (half replacing ids, half "
        "new). Each run starts from a fresh copy of the data directory.",
        "",
    ]
    for run in report["load"]:
        a = run["kinds"]["all"]
        lines += [
            f"### {run['name']} ({run['env_note']})",
            "",
            f"Throughput **{a['req_per_s']:.1f} req/s**, {a['errors']} errors in "
            f"{a['requests']:,} requests; server CPU {run['server_cpu_seconds']:.0f} s "
            f"({run['server_cpu_seconds'] / run['wall_seconds']:.2f} cores, "
            f"{1000 * run['server_cpu_seconds'] / a['requests']:.1f} ms per request), load "
            f"generator CPU {run['client_cpu_seconds']:.0f} s, over {run['wall_seconds']:.0f} s "
            f"wall (warm-up and start included); clients / throughput = "
            f"{1000 * s['clients'] / a['req_per_s']:.0f} ms against a mean latency of "
            f"{a['mean_ms']:.0f} ms (Little's law: closed-loop clients queue for the cores); "
            f"`free` after: {run['free_after']}.",
            "",
            "| kind | req/s | p50 ms | p99 ms | mean ms | requests (with warm-up) | non-2xx |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for kind, row in run["kinds"].items():
            lines.append(
                f"| {kind} | {row['req_per_s']:.1f} | {_f(row.get('p50_ms'))} | "
                f"{_f(row.get('p99_ms'))} | {_f(row.get('mean_ms'))} | "
                f"{row['requests']:,} | {row['non_2xx'] or 0} |"
            )
        lines.append("")
    if len(report["load"]) > 1:
        base = report["load"][0]["kinds"]
        lines += ["Against the first run (same mix, same clients):", ""]
        for run in report["load"][1:]:
            k = run["kinds"]
            parts = [f"throughput {k['all']['req_per_s'] / base['all']['req_per_s']:.2f}x"]
            for kind in ("siamese", "hybrid"):
                if "p50_ms" in k[kind] and "p50_ms" in base[kind]:
                    parts.append(
                        f"{kind} p50 {k[kind]['p50_ms'] / base[kind]['p50_ms']:.2f}x, "
                        f"p99 {k[kind]['p99_ms'] / base[kind]['p99_ms']:.2f}x"
                    )
            lines.append(f"- {run['name']}: " + "; ".join(parts))
        lines.append("")
    if report.get("batching_note"):
        lines += [report["batching_note"], ""]
    problems = report["problems"]
    lines.append("Problems: " + ("; ".join(problems) if problems else "none."))
    return "\n".join(lines) + "\n"


def problems(report: dict[str, Any]) -> list[str]:
    out = []
    for run in report["load"]:
        if run["kinds"]["all"]["errors"]:
            bad = {k: v["non_2xx"] for k, v in run["kinds"].items() if v["errors"]}
            out.append(f"load run {run['name']!r} had errors: {bad}")
    for name, o in report["latency"]["overhead"].items():
        if not o["equal_hits"]:
            out.append(f"HTTP hits of {name} differ from the library's")
    return out


# -- main -----------------------------------------------------------------------------------------
def load_variants() -> tuple[list[tuple[str, dict[str, str], str]], str]:
    """Service settings of the load runs: micro-batching off and on when the service has it."""
    from service.settings import ServiceSettings

    fields = ServiceSettings.model_fields
    if "query_batching" in fields:
        return [
            ("batching off", {"LSR_QUERY_BATCHING": "false"}, "LSR_QUERY_BATCHING=false"),
            (
                "batching on",
                {"LSR_QUERY_BATCHING": "true", "LSR_QUERY_BATCH_MS": "0"},
                "LSR_QUERY_BATCHING=true, LSR_QUERY_BATCH_MS=0 (the default)",
            ),
            (
                "batching on, 2 ms window",
                {"LSR_QUERY_BATCHING": "true", "LSR_QUERY_BATCH_MS": "2"},
                "LSR_QUERY_BATCHING=true, LSR_QUERY_BATCH_MS=2",
            ),
        ], (
            "Micro-batching (service/batching.py) coalesces concurrent siamese query encodings "
            "into batches of up to `query_batch_size` texts while at most `query_batch_inflight` "
            "batches (default: one per CPU) encode; `query_batch_ms` adds a wait for more texts. "
            "It applies to siamese texts only (both `siamese` and the sparse leg of `hybrid`)."
        )
    if "query_batch_ms" in fields:
        return [
            ("batching off", {"LSR_QUERY_BATCH_MS": "0"}, "LSR_QUERY_BATCH_MS=0"),
            ("batching on", {"LSR_QUERY_BATCH_MS": "2"}, "LSR_QUERY_BATCH_MS=2"),
        ], ""
    return [("default", {}, "default settings")], (
        "The service has no query micro-batching setting: one load run."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration per run")
    parser.add_argument("--clients", type=int, default=32, help="concurrent load clients")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (median per query)")
    parser.add_argument("--queries", type=int, default=300, help="test queries (at most 300)")
    parser.add_argument("--docs", type=int, default=None, help="first N SciFact docs (all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, results in eval/work/")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--render", action="store_true", help="only redraw the md from the JSON")
    # internal: the server and the load generator run as separate processes of this module
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bm25-docs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--load-client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--load-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port, args.bm25_docs)
        return 0
    if args.load_client is not None:
        load_client(args.load_client, args.work, args.clients, args.seconds, args.load_out)
        return 0
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if args.quick:
        args.docs, args.queries, args.rounds = args.docs or 1000, min(args.queries, 30), 1
        args.seconds, args.clients = min(args.seconds, 8.0), min(args.clients, 8)
    out = args.out or (WORK / "bench_service-quick" if args.quick else REPO / "eval" / "results")
    if args.render:
        report = json.loads((out / "bench_service.json").read_text())
        (out / "bench_service.md").write_text(markdown(report))
        return 0
    scratch = WORK / ("bench_service-quick" if args.quick else "bench_service") / "scratch"
    started = time.perf_counter()
    report: dict[str, Any] = {
        **run_header(args.quick),
        "k": K,
        "mix": MIX,
        "filters": list(FILTERS),
        "upsert_batch": UPSERT_BATCH,
        "phase_seconds": {},
    }
    phases = report["phase_seconds"]
    t0 = time.perf_counter()
    data = load_data(args.docs, args.queries)
    phases["load_data"] = time.perf_counter() - t0
    report["sizes"] = {
        "docs": len(data.ids),
        "queries": len(data.queries),
        "rounds": args.rounds,
        "clients": args.clients,
        "seconds": args.seconds,
    }
    print(f"== {len(data.ids):,} docs, {len(data.queries)} queries; building the collections")
    pristine = scratch / "data"
    phases["build"] = build_data_dir(data, pristine)

    print("== c) library latency, in-process")
    t0 = time.perf_counter()
    library, library_answers = library_latency(data, pristine, args.rounds)
    phases["library_latency"] = time.perf_counter() - t0

    print("== b) HTTP latency: BM25, inference-free, siamese")
    t0 = time.perf_counter()
    server = Server(pristine, {}, bm25_docs=len(data.ids))
    try:
        http, http_answers = http_latency(data, server.port, args.rounds)
    finally:
        server.stop()
    phases["http_latency"] = time.perf_counter() - t0
    ratio = {
        f"{a}_over_{b}_{p}": http[a][f"{p}_ms"] / http[b][f"{p}_ms"]
        for a, b in (("free", "bm25"), ("siamese", "free"))
        for p in ("p50", "p99")
    }
    report["latency"] = {
        "http": http,
        "library": library,
        "ratios": ratio,
        "ndcg10": {
            **{f"http_{n}": ndcg10(data, a) for n, a in http_answers.items()},
            **{f"library_{n}": ndcg10(data, a) for n, a in library_answers.items()},
        },
        "overhead": {
            name: {
                "http_p50_ms": http[name]["p50_ms"],
                "library_p50_ms": library[name]["p50_ms"],
                "overhead_ms": http[name]["p50_ms"] - library[name]["p50_ms"],
                "http_over_library_p50": http[name]["p50_ms"] / library[name]["p50_ms"],
                "equal_hits": http_answers[name] == library_answers[name],
            }
            for name in ("siamese", "free")
        },
    }
    print(
        f"   free/bm25 p50 {ratio['free_over_bm25_p50']:.2f}x, siamese/free p50 "
        f"{ratio['siamese_over_free_p50']:.2f}x"
    )

    variants, report["batching_note"] = load_variants()
    report["load"] = []
    for name, env, note in variants:
        print(f"== a) load, {name}: {args.clients} clients for {args.seconds:g} s")
        t0 = time.perf_counter()
        run = load_run(pristine, scratch, data, env, args.clients, args.seconds)
        run.update(name=name, env=env, env_note=note)
        report["load"].append(run)
        phases[f"load {name}"] = time.perf_counter() - t0
        a = run["kinds"]["all"]
        print(
            f"   {a['req_per_s']:.1f} req/s, {a['errors']} errors, p50 {a.get('p50_ms', 0):.1f}"
            f" ms, p99 {a.get('p99_ms', 0):.1f} ms"
        )
    shutil.rmtree(scratch, ignore_errors=True)
    report["seconds"] = time.perf_counter() - started
    report["problems"] = problems(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_service.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_service.md").write_text(markdown(report))
    print(f"wrote {out / 'bench_service.json'}, .md")
    if report["problems"]:
        print("PROBLEMS: " + "; ".join(report["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
