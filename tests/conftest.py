"""Shared fixtures: real SciFact vectors from ../shared and small random collections."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lsr.sparse import SparseBatch
from lsr.vocab import Vocabulary

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download: a hub id fails fast
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's exit status once every report is written, without the interpreter's
    teardown: twice in about five full runs beside another CPU-heavy job (2026-12-03), the
    process died with SIGSEGV (exit 139) after pytest had printed its summary, once with every
    test passed. Where is not known (the suite loads numba's threads, torch, faiss, a JVM);
    it never happened in two runs with nothing beside them. Every fixture has been torn down
    by now. LSR_TEST_FULL_TEARDOWN=1 keeps the normal exit, to look into it."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None or os.environ.get("LSR_TEST_FULL_TEARDOWN") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


SHARED = Path(os.environ.get("LSR_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "data" / "vectors" / "scifact-splade-tiny"
SPLADE_TINY = SHARED / "models" / "splade-tiny"


def random_batch(
    rng: np.random.Generator,
    n_rows: int,
    n_terms: int,
    density: float,
    levels: int = 8,
    prefix: str = "d",
) -> SparseBatch:
    """Random non-negative vectors with weights on a coarse grid (exact float sums, many ties)."""
    mask = rng.random((n_rows, n_terms)) < density
    weights = rng.integers(1, levels + 1, size=(n_rows, n_terms)).astype(np.float32) / 4
    matrix = sp.csr_matrix(np.where(mask, weights, 0).astype(np.float32))
    vocab = Vocabulary([f"t{i}" for i in range(n_terms)], frozen=True)
    return SparseBatch([f"{prefix}{i}" for i in range(n_rows)], matrix, vocab)


def brute_force_topk(
    queries: sp.csr_matrix, docs: sp.csr_matrix, k: int
) -> list[list[tuple[int, float]]]:
    """The oracle: full Q @ D.T, positive scores, highest first, ties by lower doc position."""
    scores = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    out = []
    for row in scores:
        order = np.lexsort((np.arange(row.size), -row))
        out.append([(int(j), float(row[j])) for j in order[:k] if row[j] > 0])
    return out


@pytest.fixture(scope="session")
def splade_vocab() -> Vocabulary:
    return Vocabulary.load(SPLADE_TINY)


@pytest.fixture(scope="session")
def scifact(splade_vocab: Vocabulary) -> dict[str, SparseBatch]:
    from lsr.sparse import read_jsonl

    return {
        name: read_jsonl(VECTORS / f"{name}.jsonl.gz", splade_vocab)
        for name in ("docs", "queries-siamese", "queries-idf")
    }


SCIFACT_BEIR = SHARED / "data" / "beir" / "scifact"


def write_beir_slice(
    target: Path, n_test: int = 12, n_train: int = 10, n_extra: int = 60, seed: int = 0
) -> Path:
    """A small BEIR dataset cut from SciFact: some test and train queries, every document they
    judge, and ``n_extra`` other documents (so retrieval has something to get wrong)."""
    import gzip
    import json

    from lsr.corpus import load_corpus, load_qrels, load_queries

    corpus = load_corpus(SCIFACT_BEIR)
    queries = load_queries(SCIFACT_BEIR)
    rng = np.random.default_rng(seed)
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    keep_docs: set[str] = set()
    keep_queries: set[str] = set()
    for split, n in (("test", n_test), ("train", n_train)):
        qrels = load_qrels(SCIFACT_BEIR, split)
        chosen = sorted(qrels)[:n]
        with open(target / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for qid in chosen:
                for did, rel in qrels[qid].items():
                    out.write(f"{qid}\t{did}\t{rel}\n")
                    keep_docs.add(did)
        keep_queries.update(chosen)
    others = [d for d in corpus if d not in keep_docs]
    keep_docs.update(rng.choice(others, size=n_extra, replace=False).tolist())
    with gzip.open(target / "corpus.jsonl.gz", "wt", encoding="utf-8") as out:
        for did, text in corpus.items():
            if did in keep_docs:
                out.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with gzip.open(target / "queries.jsonl.gz", "wt", encoding="utf-8") as out:
        for qid in sorted(keep_queries):
            out.write(json.dumps({"_id": qid, "text": queries[qid]}) + "\n")
    return target


@pytest.fixture(scope="session")
def beir_slice(tmp_path_factory) -> Path:
    return write_beir_slice(tmp_path_factory.mktemp("beir-slice"))


def save_tiny_bert_mlm(out: Path, *, hidden_size: int = 16, dropout: float = 0.1) -> Path:
    """A random 1-layer BERT masked LM (bert-base-uncased vocabulary) with splade-tiny's
    tokenizer files, saved at ``out``: a student that trains in seconds, built without a
    download."""
    import shutil

    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertForMaskedLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SPLADE_TINY / name, out / name)
    return out
