"""Sharded collections on Ray Serve (a local cluster on loopback; skipped without Ray).

One Serve application holds four sharded collections, ``n1`` … ``n4`` with 1 to 4 shards
(``n3``: 2 shard groups of 2 reader replicas each; the others one group, one replica). The router
deployment answers the same HTTP API as ``lsr serve``; for every N its answers equal a plain
collection's through the in-process service (sparse, dense, hybrid, filtered, paged, explained,
PRF, batched; before and after writes made through the router). Killing a reader replica
mid-load never yields a wrong answer: every request either returns the right hits (failed over
to the other replica, or to the restarted one) or a 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("fastapi")

from ray import serve  # noqa: E402

from lsr.shards.collection import ShardedCollection  # noqa: E402
from lsr.vocab import Vocabulary  # noqa: E402
from service.ray_serve import build_application  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402
from tests.test_service import VOCAB, Server, _docs  # noqa: E402
from tests.test_service_faults import _call, _free_port  # noqa: E402
from tests.test_service_sharded import SEARCHES  # noqa: E402


def _hits(base: str, name: str) -> list[Any]:
    out = []
    for search in SEARCHES:
        status, body = _call(base, "POST", f"/collections/{name}/search", search)
        assert status == 200, body
        out.append(body["hits"])
    status, body = _call(base, "POST", f"/collections/{name}/search/batch",
                         {"searches": SEARCHES[:3]})  # fmt: skip
    assert status == 200, body
    out.append([r["hits"] for r in body["results"]])
    return out


NAMES = {"n1": 1, "n2": 2, "n3": 3, "n4": 4}


def _through_router(base: str, name: str) -> Callable[..., tuple[int, Any]]:
    """A request to collection ``name`` on the router, written as one to collection ``s``."""

    def send(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return _call(base, method, path.replace("/collections/s/", f"/collections/{name}/"), body)

    return send


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local Ray cluster serving n1..n4, and the in-process service over a plain collection
    with the same documents."""
    data = tmp_path_factory.mktemp("ray") / "data"
    data.mkdir()
    docs = _docs(40)
    for name, shards in NAMES.items():
        with ShardedCollection.create(
            data / name, shards, vocab=Vocabulary(VOCAB, frozen=True), dense_dim=3, flush_docs=8
        ) as sharded:
            sharded.upsert([d["id"] for d in docs], vectors=[d["vector"] for d in docs],
                           texts=[d["text"] for d in docs], dense=[d["dense"] for d in docs],
                           metadata=[d["metadata"] for d in docs])  # fmt: skip
    plain = Server(tmp_path_factory.mktemp("plain") / "data")
    status, body = plain.call(
        "PUT", "/collections/s", {"vocab": VOCAB, "dense_dim": 3, "flush_docs": 8}
    )
    assert status == 201, body
    assert plain.call("PUT", "/collections/s/documents", {"documents": docs})[0] == 200
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="lsr-test", _node_ip_address="127.0.0.1")  # fmt: skip
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = ServiceSettings(data_dir=data, api_key=None)
        one = {"n1": 1, "n2": 1, "n4": 1}
        application = build_application(
            settings, replicas={**one, "n3": 2}, groups={**one, "n3": 2}
        )
        serve.run(application, name="lsr", route_prefix="/")
        yield {"base": f"http://127.0.0.1:{port}", "plain": plain}
    finally:
        plain.stop()
        serve.shutdown()
        ray.shutdown()


def test_router_answers_like_one_collection(cluster: dict[str, Any]) -> None:
    base, plain = cluster["base"], cluster["plain"]
    assert _call(base, "GET", "/readyz")[0] == 200
    expected = _hits(plain.base, "s")
    for name in NAMES:
        assert _hits(base, name) == expected, name
    # the same writes through the router (no API key set) and the plain service (key given)
    for send in [*(_through_router(base, name) for name in NAMES), plain.call]:
        status, body = send("POST", "/collections/s/documents/delete", {"filter": {"lang": "en"}})
        assert status == 200 and body["count"] == 20, body
        new = {"documents": [{"id": "n1", "vector": {"t3": 2.0}, "dense": [1.0, 1.0, 1.0],
                              "metadata": {"lang": "de"}}]}  # fmt: skip
        assert send("PUT", "/collections/s/documents", new)[0] == 200
    expected = _hits(plain.base, "s")
    for name, shards in NAMES.items():
        assert _hits(base, name) == expected, name
        status, info = _call(base, "GET", f"/collections/{name}")
        assert status == 200 and info["live_docs"] == 21 and len(info["shards"]) == shards
    assert _call(base, "GET", "/collections/n4/documents/n1")[1]["metadata"] == {"lang": "de"}
    status, body = _call(base, "PUT", "/collections/other", {"vocab": VOCAB})
    assert status == 400 and "Ray router" in body["error"]
    bad = {"vector": {"t1": 1.0}, "filter": {"nope": 1}}
    status, body = _call(base, "POST", "/collections/n2/search", bad)
    assert status == 400 and "nope" in body["error"]


def test_a_killed_reader_replica_never_gives_wrong_answers(cluster: dict[str, Any]) -> None:
    base = cluster["base"]
    query = {"vector": {"t1": 1.0, "t5": 0.75, "t7": 0.25}, "limit": 20}
    expected = _call(base, "POST", "/collections/n3/search", query)[1]["hits"]
    outcomes: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, body = _call(base, "POST", "/collections/n3/search", query)
            if status == 200:
                outcomes.append("right" if body["hits"] == expected else "WRONG")
            else:
                outcomes.append(f"status {status}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "n3-read-0" in a["name"]]  # fmt: skip
    assert len(replicas) == 2, replicas
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    ray.kill(victim, no_restart=False)
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(60)
    assert "WRONG" not in outcomes
    assert outcomes.count("right") > 10
    assert set(outcomes) <= {"right", "status 503"}, set(outcomes)
    # the cluster keeps answering (Serve restarts the replica)
    assert _call(base, "POST", "/collections/n3/search", query)[1]["hits"] == expected
