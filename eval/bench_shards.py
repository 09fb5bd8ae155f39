"""Sharded collections: what scatter-gather costs against one collection of the same total size.

1. In process. A plain :class:`~lsr.collection.Collection` (the anchor) against
   :class:`~lsr.shards.collection.ShardedCollection` with N = 2 and 4 shards (searched on one
   thread per shard), the same documents, each compacted to one segment per shard; k = 10, one
   query at a time, siamese and inference-free query vectors. Workloads: SciFact encoded by
   splade-tiny (5,183 docs, the 300 test queries) and a synthetic SPLADE-like collection fitted
   to it (eval/synthetic.py, ``--docs``). Every sharded answer must equal the anchor's (ids and
   scores); the run stops if one does not.
2. Over HTTP. ``lsr serve``'s app (uvicorn, one process) over the plain SciFact collection
   against the Ray Serve router (service.ray_serve: a local Ray cluster, the collection in
   N = 2 shards, 2 shard groups x 1 reader replica), one client, the same searches as JSON; the
   answers must be equal.

Latency: every system runs every query in turn for R rounds in alternating order; a query's time
is its median over the rounds (eval.bench_live.latency). Build times (upsert + compact) are
reported per system.

    python -m eval.bench_shards [--docs 200000] [--out eval/results]
    python -m eval.bench_shards --quick      # small sizes, writes to eval/work/
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.bench_live import BEIR, VECTORS, latency, run_header
from lsr.collection import Collection
from lsr.shards.collection import ShardedCollection
from lsr.sparse import SparseBatch, TermWeights, read_jsonl
from lsr.vocab import Vocabulary

MODEL = VECTORS.parents[2] / "models" / "splade-tiny"
SHARDS = (2, 4)
BATCH = 4096


def load_scifact(n_queries: int) -> tuple[SparseBatch, dict[str, SparseBatch]]:
    from lsr.corpus import load_qrels

    vocab = Vocabulary.load(MODEL)
    docs = read_jsonl(VECTORS / "docs.jsonl.gz", vocab)
    test = set(load_qrels(BEIR, "test"))
    queries = {}
    for mode, file in (("siamese", "queries-siamese"), ("inference-free", "queries-idf")):
        batch = read_jsonl(VECTORS / f"{file}.jsonl.gz", vocab)
        rows = [i for i, q in enumerate(batch.ids) if q in test][:n_queries]
        queries[mode] = SparseBatch([batch.ids[i] for i in rows], batch.matrix[rows], vocab)
    return docs, queries


def load_synthetic(n_docs: int, n_queries: int) -> tuple[SparseBatch, dict[str, SparseBatch]]:
    from eval.synthetic import generate_collection, generate_queries

    docs = generate_collection(n_docs, seed=0)
    return docs, {
        mode: generate_queries(docs, n_queries, mode=mode, seed=1)
        for mode in ("siamese", "inference-free")
    }


def rows(batch: SparseBatch) -> list[TermWeights]:
    m = batch.matrix
    return [
        TermWeights(
            m.indices[m.indptr[i] : m.indptr[i + 1]].astype(np.int64),
            m.data[m.indptr[i] : m.indptr[i + 1]].astype(np.float32),
        )
        for i in range(m.shape[0])
    ]


def fill(collection: Any, docs: SparseBatch) -> float:
    """Upsert ``docs`` in batches and compact; seconds."""
    t0 = time.perf_counter()
    for start in range(0, len(docs), BATCH):
        stop = min(start + BATCH, len(docs))
        part = SparseBatch(docs.ids[start:stop], docs.matrix[start:stop], docs.vocab)
        collection.upsert(part.ids, vectors=part)
    collection.compact()
    return time.perf_counter() - t0


def in_process(
    name: str, docs: SparseBatch, queries: dict[str, SparseBatch], work: Path, rounds: int
) -> dict[str, Any]:
    """Plain collection vs N shards on one workload."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    opened: dict[str, Any] = {"one collection": Collection.create(work / "one", vocab=docs.vocab,
                                                                  flush_docs=1 << 20)}  # fmt: skip
    for n in SHARDS:
        opened[f"{n} shards"] = ShardedCollection.create(
            work / f"s{n}", n, vocab=docs.vocab, flush_docs=1 << 20
        )
    out: dict[str, Any] = {"docs": len(docs), "postings": int(docs.matrix.nnz),
                           "build_seconds": {}, "latency": {}}  # fmt: skip
    try:
        with Collection.create(work / "warm-up", vocab=docs.vocab) as warm:  # compile kernels
            fill(warm, SparseBatch(docs.ids[:500], docs.matrix[:500], docs.vocab))
        for label, collection in opened.items():
            out["build_seconds"][label] = round(fill(collection, docs), 2)
        info = opened["one collection"].info()
        out["bytes"] = {
            "segments": info["segment_bytes"],
            "segments_per_posting": round(info["segment_bytes"] / docs.matrix.nnz, 2),
            "store": info["store_bytes"],
        }
        for mode, batch in queries.items():
            qs = rows(batch)
            systems = {
                label: (lambda i, c=c, qs=qs: [(h.doc_id, h.score) for h in c.search(qs[i], 10)])
                for label, c in opened.items()
            }
            stats, answers = latency(systems, len(qs), rounds)
            for label in systems:
                if answers[label] != answers["one collection"]:
                    raise AssertionError(f"{name} {mode}: {label} differs from one collection")
            anchor = stats["one collection"]["p50_ms"]
            for label in stats:
                stats[label]["p50_vs_one"] = round(stats[label]["p50_ms"] / anchor, 3)
            out["latency"][mode] = {"queries": len(qs), **stats}
            print(f"{name} {mode}: " + ", ".join(
                f"{k} {v['p50_ms']:.3f} ms" for k, v in stats.items()))  # fmt: skip
    finally:
        for collection in opened.values():
            collection.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def over_http(docs: SparseBatch, queries: dict[str, SparseBatch], work: Path, rounds: int) -> dict:
    """lsr serve's app over one collection vs the Ray Serve router over 2 shards."""
    import ray
    from ray import serve

    from eval.bench_service import Client, Server, free_port
    from service.ray_serve import build_application
    from service.settings import ServiceSettings

    shutil.rmtree(work, ignore_errors=True)
    (work / "plain").mkdir(parents=True)
    (work / "ray").mkdir(parents=True)
    with Collection.create(work / "plain" / "c", vocab=docs.vocab) as c:
        fill(c, docs)
    with ShardedCollection.create(work / "ray" / "c", 2, vocab=docs.vocab) as c:
        fill(c, docs)
    plain = Server(work / "plain", {}, None)
    port = free_port()
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="lsr-bench",
             _node_ip_address="127.0.0.1")  # fmt: skip
    out: dict[str, Any] = {}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServiceSettings(data_dir=work / "ray", api_key=None)
        serve.run(build_application(settings, replicas=1, groups=2), name="lsr", route_prefix="/")
        out["ray_start_seconds"] = round(time.perf_counter() - t0, 1)
        clients = {
            "lsr serve (1 collection)": Client(plain.port),
            "Ray Serve router (2 shards)": Client(port),
        }
        tokens = docs.vocab.tokens
        for mode, batch in queries.items():
            bodies = [
                {"vector": {tokens[t]: float(w) for t, w in zip(q.terms, q.weights, strict=True)},
                 "limit": 10}
                for q in rows(batch)
            ]  # fmt: skip
            systems = {
                label: (
                    lambda i, cl=cl, bodies=bodies: cl.search("/collections/c/search", bodies[i])
                )
                for label, cl in clients.items()
            }
            stats, answers = latency(systems, len(bodies), rounds)
            first, second = answers.values()
            if first != second:
                raise AssertionError(f"http {mode}: the router's answers differ")
            labels = list(stats)
            stats[labels[1]]["p50_vs_lsr_serve"] = round(
                stats[labels[1]]["p50_ms"] / stats[labels[0]]["p50_ms"], 3
            )
            out[mode] = {"queries": len(bodies), **stats}
            print(f"http {mode}: " + ", ".join(
                f"{k} {v['p50_ms']:.2f} ms" for k, v in stats.items()))  # fmt: skip
    finally:
        plain.stop()
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Sharded collections: scatter-gather overhead",
        "",
        f"{result['header']['date']}, {result['header']['machine']['cpus']} CPUs; "
        "latency is p50 / p99 of each query's median over the rounds; k = 10; one client. "
        "Every sharded answer equals one collection's (checked in the run).",
        "",
        "## In process (threads over local shards)",
        "",
        "| workload | queries | system | build s | p50 ms | p99 ms | p50 vs one |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, w in result["in_process"].items():
        for mode, stats in w["latency"].items():
            for label, s in stats.items():
                if label == "queries":
                    continue
                lines.append(
                    f"| {name} ({w['docs']:,} docs) | {mode} | {label} | "
                    f"{w['build_seconds'][label]} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | "
                    f"{s['p50_vs_one']:.2f}x |"
                )
    lines += ["", "One collection's segments (float16 weights, postings + forward rows + ids):", ""]
    for name, w in result["in_process"].items():
        b = w["bytes"]
        lines.append(
            f"- {name}: {w['postings']:,} postings, {b['segments']:,} bytes of segments "
            f"({b['segments_per_posting']} per posting)"
        )
    http_result = result.get("http")
    if http_result:
        lines += [
            "",
            "## Over HTTP (SciFact)",
            "",
            f"Ray cluster + Serve application start: {http_result['ray_start_seconds']} s.",
            "",
            "| queries | system | p50 ms | p99 ms | p50 vs lsr serve |",
            "|---|---|---:|---:|---:|",
        ]
        for mode in ("siamese", "inference-free"):
            for label, s in http_result[mode].items():
                if label == "queries":
                    continue
                ratio = s.get("p50_vs_lsr_serve")
                lines.append(
                    f"| {mode} | {label} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                    f"{f'{ratio:.2f}x' if ratio else '1.00x'} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000, help="synthetic documents")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-http", action="store_true", help="skip the Ray Serve part")
    args = parser.parse_args(argv)
    if args.quick:
        args.docs, args.queries, args.rounds = 20_000, 30, 1
        args.out = Path("eval/work")
    work = Path("eval/work/bench_shards")
    result: dict[str, Any] = {"header": run_header(args.quick), "in_process": {}}
    scifact_docs, scifact_queries = load_scifact(args.queries)
    result["in_process"]["SciFact"] = in_process(
        "SciFact", scifact_docs, scifact_queries, work, args.rounds
    )
    synth_docs, synth_queries = load_synthetic(args.docs, args.queries)
    result["in_process"]["synthetic"] = in_process(
        "synthetic", synth_docs, synth_queries, work, args.rounds
    )
    if not args.no_http:
        result["http"] = over_http(scifact_docs, scifact_queries, work, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(result, indent=1))
    (args.out / "shards.md").write_text(markdown(result))
    print(f"wrote {args.out / 'shards.json'} and shards.md")


if __name__ == "__main__":
    main()
