"""The demo's service part: talk to a running `lsr serve` over HTTP (what curl would send).

Creates a collection with splade-tiny, upserts SciFact abstracts as text with metadata, searches
(plain, filtered, paged), deletes a document and shows the answers. Usage:
    demo_service.py BASE_URL MODEL_DIR BEIR_DIR [N_DOCS]
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

from lsr.corpus import iter_corpus


def call(base: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{method} {path}: HTTP {exc.code} {exc.read().decode()}") from None


def main() -> None:
    base, model, beir = sys.argv[1:4]
    n_docs = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(base, "GET", "/readyz")["status"] == "ready":  # type: ignore[index]
                break
        except (urllib.error.URLError, ConnectionError, SystemExit):
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not become ready in 60 s")
        time.sleep(0.2)
    print("PUT /collections/scifact  {'model': 'splade-tiny', 'schema': {'year': 'number'}}")
    call(base, "PUT", "/collections/scifact", {"model": model, "schema": {"year": "number"}})
    docs = []
    for i, (doc_id, text) in enumerate(iter_corpus(beir)):
        if i == n_docs:
            break
        docs.append({"id": doc_id, "text": text, "metadata": {"year": 2000 + i % 20}})
    started = time.perf_counter()
    for start in range(0, len(docs), 100):
        answer = call(
            base, "PUT", "/collections/scifact/documents", {"documents": docs[start : start + 100]}
        )
    print(
        f"PUT /collections/scifact/documents x{len(docs)} "
        f"in {time.perf_counter() - started:.1f} s -> {answer}"
    )
    query = "Does vitamin D lower the risk of cancer?"
    for body in (
        {"query": query, "limit": 3},
        {"query": query, "limit": 3, "filter": {"year": {"gte": 2015}}, "with_metadata": True},
        {"query": query, "limit": 3, "offset": 3},
    ):
        answer = call(base, "POST", "/collections/scifact/search", body)
        print(f"POST /collections/scifact/search {json.dumps(body)}")
        for hit in answer["hits"]:  # type: ignore[index]
            print(f"    {hit['score']:8.3f}  {hit['id']}  {hit.get('metadata') or ''}")
    first = docs[0]["id"]
    print(
        f"DELETE /collections/scifact/documents/{first} ->",
        call(base, "DELETE", f"/collections/scifact/documents/{first}"),
    )
    info = call(base, "GET", "/collections/scifact")
    print(
        f"GET /collections/scifact -> live_docs {info['live_docs']}, "  # type: ignore[index]
        f"segments {len(info['segments'])}"  # type: ignore[index]
    )


if __name__ == "__main__":
    main()
