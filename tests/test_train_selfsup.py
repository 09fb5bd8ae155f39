"""Self-supervised training data (``data.mode: title_abstract``): title -> text pairs from a
corpus without queries, BM25 negatives that never are the document itself, a dev slice of
held-out titles, and a 3-step ``train()`` run on a BEIR directory with no queries or qrels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SPLADE_TINY, save_tiny_bert_mlm

pytest.importorskip("bm25s")
pytest.importorskip("sentence_transformers")

DOCS = [
    ("d0", "Vitamin D and fractures", "Vitamin D and calcium lower the risk of hip fractures."),
    ("d1", "Kinases in yeast", "A protein kinase controls the yeast cell cycle and division."),
    ("d2", "Insulin resistance", "Insulin resistance is the hallmark of type 2 diabetes."),
    ("d3", "", "Mosquito nets reduce the transmission of malaria in children."),
    ("d4", "The p53 gene", "The p53 tumor suppressor gene is mutated in many cancers."),
    ("d5", "   ", "The gut microbiome shapes immunity and metabolism in mice."),
    ("d6", "Plasmids", "Antibiotic resistance spreads through plasmids in bacteria."),
    ("d7", "Sleep and memory", "Sleep consolidates memory in the hippocampus of rats."),
    ("d8", "Empty body", ""),
    ("d9", "Vitamin D in winter", "Vitamin D levels drop in winter at high latitudes."),
]


def write_corpus_only(target: Path) -> Path:
    """A BEIR-like directory with corpus.jsonl only (no queries, no qrels)."""
    target.mkdir(parents=True, exist_ok=True)
    rows = [{"_id": i, "title": t, "text": x} for i, t, x in DOCS]
    (target / "corpus.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    return target


def config_for(beir: Path, out: Path, model: str = "unused", **data: object):
    from lsr.train.config import load_config

    return load_config(
        data={
            "student": {"model": model, "document_max_length": 32},
            "data": {"beir": str(beir), "mode": "title_abstract", "negatives": 2, **data},
            "sparsity": {"lambda_d": 1e-4},
            "train": {"output_dir": str(out), "batch_size": 4, "max_steps": 3, "precision": "fp32"},
        }
    )


def test_title_pairs_and_negatives(tmp_path):
    from lsr.train.data import build_training_data

    beir = write_corpus_only(tmp_path / "beir")
    data = build_training_data(config_for(beir, tmp_path / "out"))
    # titled documents with a text: d0 d1 d2 d4 d6 d7 d9 (d3/d5 untitled, d8 has no text)
    assert data.train_queries == ["d0", "d1", "d2", "d4", "d6", "d7", "d9"]
    texts = {i: x for i, _, x in DOCS}
    titles = {i: t for i, t, _ in DOCS}
    rows = data.dataset.to_list()
    assert [r["query"] for r in rows] == [titles[q] for q in data.train_queries]
    for q, row in zip(data.train_queries, rows, strict=True):
        assert row["positive"] == texts[q]  # the text without its title
        negatives = [row["negative_1"], row["negative_2"]]
        assert texts[q] not in negatives and len(set(negatives)) == 2
        assert all(n in texts.values() for n in negatives)
    assert data.corpus == texts  # every document (untitled too), titles left out
    assert data.summary["mode"] == "title_abstract" and data.dev is None
    # the BM25 top hit for "Vitamin D and fractures" besides d0 itself is the other vitamin text
    d0 = rows[0]
    assert texts["d9"] in (d0["negative_1"], d0["negative_2"])


def test_title_dev_slice(tmp_path):
    from lsr.train.data import build_training_data

    beir = write_corpus_only(tmp_path / "beir")
    data = build_training_data(config_for(beir, tmp_path / "out", dev_queries=2, dev_depth=3))
    assert data.dev is not None and len(data.dev.queries) == 2
    assert not set(data.dev.queries) & set(data.train_queries)
    assert len(data.train_queries) == 5
    for q, judged in data.dev.qrels.items():
        assert judged == {q: 1} and q in data.dev.doc_ids


def test_title_config_errors(tmp_path):
    from lsr.errors import InputError
    from lsr.train.data import build_training_data

    beir = write_corpus_only(tmp_path / "beir")
    with pytest.raises(InputError, match="mode"):
        config_for(beir, tmp_path / "out", model="x", mode="titles")
    with pytest.raises(InputError, match="teachers"):
        from lsr.train.config import load_config

        load_config(
            data={
                "student": {"model": "x"},
                "data": {"beir": str(beir), "mode": "title_abstract"},
                "loss": {"name": "marginmse", "teachers": str(tmp_path)},
                "train": {"output_dir": str(tmp_path)},
            }
        )
    untitled = tmp_path / "untitled"
    untitled.mkdir()
    (untitled / "corpus.jsonl").write_text(json.dumps({"_id": "a", "text": "x"}) + "\n")
    with pytest.raises(InputError, match="title"):
        build_training_data(config_for(untitled, tmp_path / "out"))


@pytest.mark.skipif(not (SPLADE_TINY / "tokenizer.json").is_file(), reason="needs splade-tiny")
def test_title_training_run(tmp_path):
    from lsr.train.trainer import train

    beir = write_corpus_only(tmp_path / "beir")
    model = save_tiny_bert_mlm(tmp_path / "tiny", hidden_size=32)
    config = config_for(beir, tmp_path / "out", model=str(model), negatives=1)
    result = train(config)
    assert result.steps == 3 and result.examples == 7
    assert result.data["mode"] == "title_abstract"
    assert (Path(result.model_dir) / "modules.json").is_file()
