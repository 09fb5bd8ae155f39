"""mlp (uniCOIL-style) and decoder-only (causal LM, LoRA) students (issue #8): a 3-step run
through ``train()`` on tiny random models, then lsr's encoder over the saved files against
sentence-transformers' reload of the same files (the trained modules, eval mode)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SPLADE_TINY, save_tiny_bert_mlm

pytest.importorskip("sentence_transformers")
pytest.importorskip("bm25s")
pytestmark = pytest.mark.skipif(
    not (SPLADE_TINY / "tokenizer.json").is_file(), reason="needs splade-tiny's tokenizer"
)

TEXTS = [
    "Vitamin D deficiency is associated with an increased risk of fractures.",
    "The protein kinase regulates cell division in yeast.",
    "A short one.",
]
TOPICS = [
    ("vitamin d bone fractures", "Vitamin D and calcium lower the risk of hip fractures."),
    ("kinase cell cycle", "A protein kinase controls the yeast cell cycle and division."),
    ("insulin diabetes", "Insulin resistance is the hallmark of type 2 diabetes."),
    ("malaria mosquito", "Mosquito nets reduce the transmission of malaria in children."),
    ("tumor suppressor", "The p53 tumor suppressor gene is mutated in many cancers."),
    ("gut microbiome", "The gut microbiome shapes immunity and metabolism in mice."),
    ("antibiotic resistance", "Antibiotic resistance spreads through plasmids in bacteria."),
    ("sleep memory", "Sleep consolidates memory in the hippocampus of rats."),
]


def write_tiny_beir(target: Path) -> Path:
    """8 queries, one relevant document each, 8 unrelated documents; every document titled."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "qrels").mkdir(exist_ok=True)
    docs, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for i, (query, text) in enumerate(TOPICS):
        docs.append({"_id": f"d{i}", "title": query.title(), "text": text})
        docs.append({"_id": f"x{i}", "title": f"Note {i}", "text": f"Unrelated remark {i}."})
        queries.append({"_id": f"q{i}", "text": query})
        qrels.append(f"q{i}\td{i}\t1")
    for name, rows in (("corpus", docs), ("queries", queries)):
        lines = "".join(json.dumps(r) + "\n" for r in rows)
        (target / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    (target / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return target


def tiny_llama(out: Path) -> Path:
    """A random 2-layer, 32-wide Llama causal LM with splade-tiny's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init: fewer active terms
        model.lm_head.weight.normal_(0, 0.3)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(SPLADE_TINY / name, out / name)
    return out


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("beir-students"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert_mlm(tmp_path_factory.mktemp("tiny-bert"), hidden_size=32)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def run(model: Path, beir: Path, out: Path, student: dict, data: dict | None = None, **train):
    from lsr.train.config import load_config
    from lsr.train.trainer import train as run_training

    config = load_config(
        data={
            "student": {"model": str(model), "document_max_length": 32, **student},
            "data": {"beir": str(beir), "negatives": 1, **(data or {})},
            "sparsity": {"lambda_d": 1e-4},
            "train": {
                "output_dir": str(out),
                "batch_size": 4,
                "max_steps": 3,
                "precision": "fp32",
                "lr": 1e-3,
                **train,
            },
        }
    )
    return run_training(config)


def compare(model_dir: Path) -> tuple[np.ndarray, np.ndarray, object]:
    """(sentence-transformers' document vectors, lsr's, lsr's encoder) of a saved model."""
    from sentence_transformers import SparseEncoder

    from lsr.encoders import load_encoder

    st = SparseEncoder(str(model_dir), device="cpu", trust_remote_code=True)
    st.eval()
    ours = load_encoder(model_dir)
    a = st.encode_document(TEXTS, convert_to_tensor=True).to_dense().float().numpy()
    b = ours.encode_document(TEXTS).matrix.toarray()
    return a, b, ours


def test_mlp_student_siamese(tmp_path, beir, tiny_bert):
    from safetensors.torch import load_file

    result = run(tiny_bert, beir, tmp_path / "run", {"family": "mlp"})
    model_dir = Path(result.model_dir)
    folder = model_dir / "0_MlpStudent"
    head = load_file(str(folder / "lsr_mlp_head.safetensors"))
    assert head["weight"].shape == (1, 32) and head["bias"].shape == (1,)
    a, b, ours = compare(model_dir)
    assert ours.document.config.family == "mlp" and ours.query.config.family == "mlp"
    assert ours.document.random_head is False
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    assert (a > 0).sum() > 0
    # no expansion: only the text's own tokens get weights
    tokens = set(ours.document.backbone.token_ids([TEXTS[0]])[0])
    assert set(np.flatnonzero(a[0])) <= tokens
    # the head was trained (it starts from lsr's seeded init: N(0, 0.02), bias 0)
    assert float(head["bias"].abs()) > 0


def test_mlp_student_inference_free(tmp_path, beir, tiny_bert):
    from sentence_transformers import SparseEncoder

    result = run(
        tiny_bert, beir, tmp_path / "run", {"family": "mlp", "query_mode": "inference-free"}
    )
    model_dir = Path(result.model_dir)
    assert (model_dir / "idf.json").is_file()
    a, b, ours = compare(model_dir)
    assert ours.config.inference_free and ours.document.config.family == "mlp"
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    st = SparseEncoder(str(model_dir), device="cpu", trust_remote_code=True)
    queries = ["vitamin d fractures", "kinase"]
    qa = st.encode_query(queries, convert_to_tensor=True).to_dense().float().numpy()
    qb = ours.encode_query(queries).matrix.toarray()
    np.testing.assert_allclose(qb, qa, atol=1e-5, rtol=1e-5)


def test_decoder_lora_student(tmp_path, beir, llama):
    import torch
    from safetensors.torch import load_file

    from lsr.train.config import load_config
    from lsr.train.trainer import build_student

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    # before training: only the adapters are trainable (every base weight frozen)
    config = load_config(
        data={
            "student": {"model": str(llama), "lora": lora},
            "data": {"beir": str(beir)},
            "train": {"output_dir": str(tmp_path / "x")},
        }
    )
    model = build_student(config, None, "cpu")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    # the unmerged, in-memory module (adapters moved off their zero init) against lsr's encoder
    # of what save_model writes (adapters merged): the same vectors
    from lsr.encoders import load_encoder
    from lsr.train.trainer import save_model

    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.eval()
    live = model.encode_document(TEXTS, convert_to_tensor=True).to_dense().float().numpy()
    saved = save_model(model, tmp_path / "saved")
    merged = load_encoder(saved).encode_document(TEXTS).matrix.toarray()
    np.testing.assert_allclose(merged, live, atol=1e-5, rtol=1e-4)
    assert any("lora_" in n for n, _ in model.named_parameters())  # saving left it unmerged

    result = run(llama, beir, tmp_path / "run", {"lora": lora})
    folder = Path(result.model_dir) / "0_CausalSpladeStudent"
    before = load_file(str(llama / "model.safetensors"))
    after = load_file(str(folder / "model.safetensors"))
    assert not any("lora" in k for k in after)  # merged: a plain causal LM
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    a, b, ours = compare(Path(result.model_dir))
    assert ours.document.backbone.causal and ours.document.echo
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)
    assert (a > 0).sum() > 0


def test_decoder_student_inference_free_full(tmp_path, beir, llama):
    result = run(llama, beir, tmp_path / "run", {"query_mode": "inference-free"})
    a, b, ours = compare(Path(result.model_dir))
    assert ours.config.inference_free and ours.document.echo
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)


def test_mlp_student_on_causal_backbone_with_lora(tmp_path, beir, llama):
    from lsr.train.config import load_config
    from lsr.train.trainer import build_student

    student = {"family": "mlp", "lora": {"r": 2, "target_modules": ["q_proj"]}}
    config = load_config(
        data={
            "student": {"model": str(llama), **student},
            "data": {"beir": str(beir)},
            "train": {"output_dir": str(tmp_path / "x")},
        }
    )
    model = build_student(config, None, "cpu")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = {n for n in trainable if "lora_" not in n}
    assert heads == {"0.head.weight", "0.head.bias"}  # adapters + the mlp head
    result = run(llama, beir, tmp_path / "run", student, data={"dev_queries": 2}, eval_steps=3)
    assert "dev_ndcg_cut_10" in result.final_metrics  # dev evaluation through lsr's encoder
    a, b, ours = compare(Path(result.model_dir))
    assert ours.document.config.family == "mlp" and ours.document.echo
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)
    assert (a > 0).sum() > 0


@pytest.mark.parametrize("echo", [True, False])
def test_decoder_module_matches_lsr_untrained(tmp_path, llama, echo):
    from sentence_transformers import SparseEncoder

    from lsr.encoders import load_encoder
    from lsr.train.decoder_student import CausalSpladeStudent

    module = CausalSpladeStudent.from_pretrained(llama, max_seq_length=24, echo=echo)
    model = SparseEncoder(modules=[module], device="cpu")
    model.eval()
    live = model.encode_document(TEXTS, convert_to_tensor=True).to_dense().float().numpy()
    model.save(str(tmp_path / "m"))
    ours = load_encoder(tmp_path / "m")
    assert ours.document.echo is echo
    np.testing.assert_allclose(ours.encode_document(TEXTS).matrix.toarray(), live, atol=1e-5)


def test_student_config_errors(tmp_path, beir, tiny_bert, llama):
    from lsr.errors import InputError
    from lsr.train.config import check_paths, load_config

    def config(student: dict, **sections: dict):
        data = {
            "student": {"model": str(tiny_bert), **student},
            "data": {"beir": str(beir)},
            "train": {"output_dir": str(tmp_path)},
        }
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        return load_config(data=data)

    with pytest.raises(InputError, match="causal"):
        check_paths(config({"lora": {"r": 2}}))
    with pytest.raises(InputError, match="causal"):
        check_paths(config({"echo": True}))
    with pytest.raises(InputError, match="family"):
        config({"family": "binary"})
    with pytest.raises(InputError, match="lora"):
        config({"lora": {"r": 0}})
    check_paths(config({"model": str(llama), "lora": {"r": 2}}))  # fine on a causal LM
    assert config({}).student.family == "mlm" and config({}).student.lora is None
