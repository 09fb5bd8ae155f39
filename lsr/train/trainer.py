"""``train(config) -> TrainResult``: a SPLADE student on sentence-transformers' sparse stack.

What is built, in order:

1. **Data** (:mod:`lsr.train.data`): BEIR split → ``(query, positive, negative_1..n[, label])``,
   BM25 hard negatives, teacher labels for marginmse / kl, optional held-out dev queries.
2. **IDF** (inference-free queries, or ``idf_flops``): ``student.idf``, else the model
   directory's ``idf.json``, else BM25 IDF computed over the training corpus with the model's
   tokenizer at the document length (:meth:`lsr.encoders.IdfTable.compute`, what
   ``lsr.encoders.compute_idf`` does).
3. **Student**: ``SparseEncoder(student.model)`` (Transformer(fill-mask) + SpladePooling, e.g.
   splade-tiny). Siamese: that model, with the fast head (:func:`fast_splade_encoder`) unless
   ``train.fast_head`` is off. Inference-free: ``Router.for_query_document`` with a
   ``SparseStaticEmbedding`` query route (initialised from the IDF, frozen unless
   ``student.learn_idf``) and the document route (the fast head as one module, or the stock
   pair). The Router and the fast head work together: the document route is just the
   one-module :class:`FastSpladeTransformer`. ``SparseStaticEmbedding`` applies no ReLU, so a
   learned IDF is *projected*: clamped to >= 0 after every optimizer step (a callback), rather
   than passed through a relu in the forward (which would need a custom module that neither
   sentence-transformers nor lsr could load from the saved files). Learned IDF weights get
   ``student.idf_lr`` through ``learning_rate_mapping`` on the real parameter name.
4. **Loss**: SparseMultipleNegativesRankingLoss (in-batch negatives, no-duplicates batches), or
   :class:`OwnCandidatesInfoNCE` (cross-entropy over each query's own positive and negatives
   only), SparseMarginMSELoss or SparseDistillKLDivLoss (explicit temperature), wrapped in
   SpladeLoss (CachedSpladeLoss with ``train.mini_batch_size``: the regulariser still sees the
   full batch) with our :class:`FlopsRegularizer` / :class:`L1Regularizer` as document (and, for
   siamese students with ``lambda_q``, query) regularisers, and our quadratic warm-up callback
   (which replaces sentence-transformers' default scheduler).
5. **Trainer**: SparseEncoderTrainer, seed, precision (bf16 autocast on a CPU with native bf16,
   AMP on GPU), ``dataloader_num_workers=0``, checkpoints under ``<output>/checkpoints``.
6. **Outputs** in ``train.output_dir``: ``metrics.jsonl`` (and ``metrics.png`` with
   matplotlib; per logged step: loss parts, λ_d,
   λ_q, learning rate; at dev evaluations: nDCG@10 / recall@100 on the dev slice, mean document
   nnz and FLOPS), ``model/`` (the final model in the stock layout:
   Transformer + SpladePooling, or a Router with SparseStaticEmbedding queries; plus
   ``idf.json`` for inference-free models, ``train_config.yaml`` and a ``README.md`` model
   card), ``result.json`` (the summary).

Dev evaluation (``data.dev_queries`` > 0, every ``train.eval_steps`` and at the end) uses our own
machinery on the artifact: the student is saved in the stock layout to ``<output>/dev-model``,
loaded with :func:`lsr.encoders.load_encoder`, the dev slice (positives + BM25 top
``data.dev_depth`` of the dev queries) and the dev queries are encoded, scored exactly (sparse
dot products) and evaluated with :func:`lsr.metrics.evaluate`. Early stopping stops after
``train.early_stopping_patience`` evaluations without a better nDCG@10. The best evaluated model
is kept (``<output>/best-model`` while training, ``best.json`` its step and metrics, also used on
resume) and becomes ``model/`` unless ``train.final_model`` is ``last``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lsr.errors import InputError
from lsr.train.config import TrainConfig, check_paths

__all__ = ["OwnCandidatesInfoNCE", "TrainResult", "resolve_precision", "train"]

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
MODEL = "model"
DEV_MODEL = "dev-model"
BEST_MODEL = "best-model"
BEST_STATE = "best.json"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: str
    model_dir: str
    steps: int
    epochs: float
    seconds: float
    examples: int
    final_loss: float | None
    precision: str
    stopped_early: bool = False
    best_step: int | None = None
    best_dev_ndcg10: float | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    model_step: int | None = None

    def summary(self) -> str:
        """One line for the CLI."""
        parts = [
            f"trained {self.steps} steps ({self.epochs:.2f} epochs, {self.examples} examples) "
            f"in {self.seconds:.0f}s",
            f"loss {self.final_loss:.4g}" if self.final_loss is not None else "",
        ]
        fm = self.final_metrics
        if "dev_ndcg_cut_10" in fm:
            parts.append(f"dev nDCG@10 {fm['dev_ndcg_cut_10']:.4f}")
        if "doc_nnz" in fm:
            parts.append(f"doc nnz {fm['doc_nnz']:.1f}")
        if self.stopped_early:
            parts.append(f"stopped early (best step {self.best_step})")
        if self.model_step is not None and self.model_step != self.steps:
            parts.append(f"model from step {self.model_step} (best dev)")
        parts.append(f"model: {self.model_dir}")
        return ", ".join(p for p in parts if p)


# -- precision ------------------------------------------------------------------------------------
def resolve_precision(precision: str) -> str:
    """``fp32`` | ``bf16`` | ``fp16`` for ``auto`` and a check of explicit values."""

    from lsr.encoders.device import cpu_has_native_bf16

    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise InputError("train.precision fp16 needs a GPU (on CPU it is silently ignored)")
    return precision


# -- losses ---------------------------------------------------------------------------------------
class OwnCandidatesInfoNCE(nn.Module):
    """InfoNCE without in-batch negatives: each query against its own positive and hard negatives
    only (cross-entropy, target the positive), scores ``scale · q·d``."""

    def __init__(self, model: Any, scale: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Any = None) -> Tensor:
        query, docs = embeddings[0], torch.stack(embeddings[1:], dim=1)  # [B, 1+n, V]
        scores = self.scale * torch.einsum("bv,bkv->bk", query, docs)
        target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return nn.functional.cross_entropy(scores, target)

    def forward(self, sentence_features: Any, labels: Any = None) -> Tensor:
        embeddings = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "in_batch_negatives": False}


def _base_loss(config: TrainConfig, model: Any) -> Any:
    from sentence_transformers.sparse_encoder import losses

    loss = config.loss
    if loss.name == "infonce":
        if loss.in_batch_negatives:
            return losses.SparseMultipleNegativesRankingLoss(model, scale=loss.scale)
        return OwnCandidatesInfoNCE(model, scale=loss.scale)
    if loss.name == "marginmse":
        return losses.SparseMarginMSELoss(model)
    return losses.SparseDistillKLDivLoss(model, temperature=loss.temperature)


class Recorded(nn.Module):
    """A regulariser that also records its unweighted values (sentence-transformers logs the
    weighted parts rounded to 4 decimals, which hides small λ·FLOPS): :meth:`pop_mean` gives the
    mean since the last call. Delegates everything else to ``inner`` (a submodule, so its IDF
    buffer moves with the loss)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self._sum = 0.0
        self._count = 0

    @property
    def threshold(self) -> int | None:
        return getattr(self.inner, "threshold", None)

    def compute_loss_from_embeddings(self, embeddings: Tensor) -> Tensor:
        value = self.inner.compute_loss_from_embeddings(embeddings)
        self._sum += float(value.detach())
        self._count += 1
        return value

    def forward(self, embeddings: Tensor) -> Tensor:
        return self.compute_loss_from_embeddings(embeddings)

    def pop_mean(self) -> float | None:
        if not self._count:
            return None
        mean = self._sum / self._count
        self._sum, self._count = 0.0, 0
        return mean

    def get_config_dict(self) -> dict[str, Any]:
        return {"regularizer": type(self.inner).__name__, **self.inner.get_config_dict()}


def _regularizer(config: TrainConfig, idf: Any, slots: int) -> Recorded:
    from lsr.train.regularizers import FlopsRegularizer, L1Regularizer

    sp_ = config.sparsity
    if sp_.regularizer == "l1":
        return Recorded(L1Regularizer(threshold=sp_.threshold))
    return Recorded(
        FlopsRegularizer(
            idf=idf if sp_.regularizer == "idf_flops" else None,
            threshold=sp_.threshold,
            slots=slots,
        )
    )


def build_loss(config: TrainConfig, model: Any, idf: Any) -> Any:
    """The SpladeLoss / CachedSpladeLoss around the base loss, with our regularisers."""
    from sentence_transformers.sparse_encoder import losses

    sp_ = config.sparsity
    siamese = config.student.query_mode == "siamese"
    slots = 1 + config.data.negatives if sp_.per_slot else 1
    kwargs: dict[str, Any] = {
        "loss": _base_loss(config, model),
        "document_regularizer_weight": sp_.lambda_d,
        "document_regularizer": _regularizer(config, idf, slots),
    }
    if siamese and sp_.lambda_q is not None:
        kwargs["query_regularizer_weight"] = sp_.lambda_q
        kwargs["query_regularizer"] = _regularizer(config, idf, 1)
    else:
        kwargs["query_regularizer_weight"] = None
        kwargs["query_regularizer"] = _regularizer(config, idf, 1)  # unused, avoids FlopsLoss
    if config.train.mini_batch_size is not None:
        return losses.CachedSpladeLoss(
            model, mini_batch_size=config.train.mini_batch_size, **kwargs
        )
    with _quiet("sentence_transformers.sparse_encoder.losses.splade", "root"):
        return losses.SpladeLoss(model, **kwargs)


@contextlib.contextmanager
def _quiet(*names: str) -> Any:
    loggers = [logging.getLogger(n if n != "root" else None) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# -- IDF ------------------------------------------------------------------------------------------
def _tokenizer_path(model_dir: Path) -> Path:
    if (model_dir / "tokenizer.json").is_file():
        return model_dir / "tokenizer.json"
    raise InputError("student.model has no tokenizer.json (a fast tokenizer is needed)", model_dir)


def load_idf(config: TrainConfig, corpus: dict[str, str]) -> tuple[Any, str]:
    """(IdfTable, where it came from) for the student's tokenizer."""
    from lsr.encoders.idf_table import IdfTable
    from lsr.encoders.tokenizer import tokenizer_vocabulary

    model_dir = Path(config.student.model)
    tok = _tokenizer_path(model_dir)
    vocab = tokenizer_vocabulary(tok)
    path = Path(config.student.idf) if config.student.idf else model_dir / "idf.json"
    if path.is_file():
        return IdfTable.load(path, vocab), str(path)
    table = IdfTable.compute(corpus.values(), tok, vocab, config.student.document_max_length)
    return table, f"computed from the training corpus ({table.n_docs} documents)"


# -- the student ----------------------------------------------------------------------------------
def build_student(config: TrainConfig, idf_table: Any, device: str) -> Any:
    """The SparseEncoder to train (fast head and Router as configured; mlp and decoder-only
    students: :mod:`lsr.train.students`)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    from lsr.train.splade_head import FastSpladeTransformer, fast_splade_encoder
    from lsr.train.students import build_extended_student

    extended = build_extended_student(config, idf_table, device)
    if extended is not None:
        return extended

    stock = SparseEncoder(config.student.model, device=device, local_files_only=True)
    modules = list(stock)
    if (
        len(modules) != 2
        or not isinstance(modules[0], Transformer)
        or not isinstance(modules[1], SpladePooling)
        or modules[1].pooling_strategy != "max"
    ):
        raise InputError(
            "student.model must load as Transformer(fill-mask) + SpladePooling(max); got "
            + " + ".join(type(m).__name__ for m in modules),
            config.student.model,
        )
    modules[0].max_seq_length = config.student.document_max_length
    if config.student.query_mode == "siamese":
        return fast_splade_encoder(stock) if config.train.fast_head else stock
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding

    tokenizer = copy.deepcopy(modules[0].tokenizer)
    tokenizer.model_max_length = config.student.query_max_length
    weight = torch.tensor(query_side_weights(config, idf_table))
    query = SparseStaticEmbedding(tokenizer, weight=weight, frozen=not config.student.learn_idf)
    if config.train.fast_head:
        document = [
            FastSpladeTransformer.from_transformer(
                modules[0], activation_function=modules[1].activation_function
            )
        ]
    else:
        document = modules
    router = Router.for_query_document([query], document)
    return SparseEncoder(modules=[router], device=device)


def query_side_weights(config: TrainConfig, idf_table: Any) -> np.ndarray:
    """The inference-free query weights to start from: the IDF table's, or (``query_weights``
    binary) 1 for every token but the tokenizer's special tokens."""
    if config.student.query_weights == "idf":
        return np.asarray(idf_table.weights, dtype=np.float32)
    from lsr.encoders.tokenizer import load_tokenizer, special_token_ids

    weights = np.ones(len(idf_table.weights), dtype=np.float32)
    weights[special_token_ids(load_tokenizer(_tokenizer_path(Path(config.student.model))))] = 0.0
    return weights


def stock_student(model: Any) -> Any:
    """The same weights in the stock layout (what is saved and served)."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SpladePooling

    from lsr.train.splade_head import FastSpladeTransformer, stock_splade_encoder

    first = model[0]
    if isinstance(first, FastSpladeTransformer):
        return stock_splade_encoder(model)
    if not isinstance(first, Router):
        return model
    routes = {k: list(v) for k, v in first.sub_modules.items()}
    doc = routes["document"]
    if len(doc) == 1 and isinstance(doc[0], FastSpladeTransformer):
        pooling = SpladePooling("max", activation_function=doc[0].activation_function)
        pooling.embedding_dimension = doc[0].get_embedding_dimension()
        doc = [doc[0].to_transformer(), pooling]
    router = first.__class__.for_query_document(routes["query"], doc)
    out = SparseEncoder(modules=[router], device=str(model.device))
    out.train(model.training)
    return out


def query_weights(model: Any) -> Any | None:
    """The SparseStaticEmbedding weight of an inference-free student (None for siamese)."""
    from sentence_transformers.sparse_encoder.modules import Router

    first = model[0]
    if isinstance(first, Router):
        return first.sub_modules["query"][0].weight
    return None


def save_model(model: Any, target: Path, vocab_source: Path | None = None) -> Path:
    """Save ``model`` in the stock layout to ``target`` (replaced); ``idf.json`` for
    inference-free models (the current, clamped query weights)."""
    from lsr.encoders.idf_table import IdfTable
    from lsr.encoders.tokenizer import tokenizer_vocabulary

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    stock = stock_student(model)
    stock.save(str(tmp), create_model_card=False)
    weight = query_weights(model)
    if weight is not None:
        assert vocab_source is not None
        vocab = tokenizer_vocabulary(vocab_source)
        w = weight.detach().float().clamp_min(0).cpu().numpy()
        IdfTable(vocab, w).save(tmp / "idf.json")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


# -- dev evaluation -------------------------------------------------------------------------------
def exact_run(
    queries: Any, docs: Any, qids: list[str], doc_ids: list[str], depth: int = 100
) -> dict[str, dict[str, float]]:
    """A run from exact sparse dot products: each query's top ``depth`` documents with a
    positive score (ties by position in ``doc_ids``)."""
    scores = (queries @ docs.T).toarray()
    run = {}
    for i, q in enumerate(qids):
        top = np.argsort(-scores[i], kind="stable")[:depth]
        run[q] = {doc_ids[j]: float(scores[i, j]) for j in top if scores[i, j] > 0}
    return run


def evaluate_artifact(model_dir: Path, data: Any) -> dict[str, float]:
    """Dev metrics of a saved model, with lsr's own encoder and metrics (see the module doc)."""
    from lsr.encoders import load_encoder
    from lsr.metrics import evaluate, flops

    dev = data.dev
    encoder = load_encoder(model_dir)
    docs = encoder.encode_document([data.corpus[d] for d in dev.doc_ids], dev.doc_ids)
    qids = sorted(dev.queries)
    queries = encoder.encode_query([dev.queries[q] for q in qids], qids)
    run = exact_run(queries.matrix, docs.matrix, qids, dev.doc_ids)
    ev = evaluate(dev.qrels, run, ("ndcg_cut_10", "recall_100"))
    return {
        "dev_ndcg_cut_10": ev.mean["ndcg_cut_10"],
        "dev_recall_100": ev.mean["recall_100"],
        "doc_nnz": float(np.diff(docs.matrix.indptr).mean()),
        "query_nnz": float(np.diff(queries.matrix.indptr).mean()),
        "flops": flops(queries, docs),
    }


def doc_stats(model_dir: Path, texts: list[str]) -> dict[str, float]:
    """Mean document nnz of a saved model over ``texts`` (lsr's encoder)."""
    from lsr.encoders import load_encoder

    docs = load_encoder(model_dir).encode_document(texts)
    return {"doc_nnz": float(np.diff(docs.matrix.indptr).mean()), "doc_sample": len(texts)}


# -- callbacks ------------------------------------------------------------------------------------
def _callbacks(
    config: TrainConfig,
    loss: Any,
    model: Any,
    data: Any,
    out: Path,
    tok_path: Path,
    state: dict[str, Any],
) -> list[Any]:
    from transformers import TrainerCallback

    from lsr.train.warmup import QuadraticWarmup, warmup_callback

    sp_ = config.sparsity
    if sp_.warmup_steps is not None:
        schedule = QuadraticWarmup(
            warmup_steps=sp_.warmup_steps, count_from_one=sp_.warmup_count_from_one
        )
    else:
        ratio = sp_.warmup_ratio if sp_.warmup_ratio is not None else 1 / 3
        schedule = QuadraticWarmup(warmup_ratio=ratio, count_from_one=sp_.warmup_count_from_one)
    callbacks: list[Any] = [warmup_callback(loss, schedule)]
    metrics_path = out / METRICS

    def write(row: dict[str, Any]) -> None:
        with open(metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    class MetricsLog(TrainerCallback):
        def on_log(self, args, st, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            logs = dict(logs or {})
            if "loss" not in logs and "base_loss" not in logs:
                return
            row = {"step": st.global_step, "epoch": st.epoch}
            row.update({k: v for k, v in logs.items() if isinstance(v, int | float)})
            row["lambda_d"] = loss.document_regularizer_weight
            row["lambda_q"] = loss.query_regularizer_weight
            # the logged *_regularizer_loss parts are λ × value, rounded: the exact values too
            row["document_regularizer_value"] = loss.document_regularizer.pop_mean()
            if loss.query_regularizer_weight is not None:
                row["query_regularizer_value"] = loss.query_regularizer.pop_mean()
            state["last_loss"] = logs.get("loss", state.get("last_loss"))
            write(row)

    callbacks.append(MetricsLog())

    weight = query_weights(model)
    if weight is not None and config.student.learn_idf:

        class ClampIdf(TrainerCallback):
            def on_optimizer_step(self, args, st, control, **kwargs):  # type: ignore[no-untyped-def]
                with torch.no_grad():
                    weight.clamp_(min=0)

        callbacks.append(ClampIdf())

    if data.dev is not None and config.train.eval_steps is not None:
        every, patience = config.train.eval_steps, config.train.early_stopping_patience

        class DevEval(TrainerCallback):
            def on_step_end(self, args, st, control, **kwargs):  # type: ignore[no-untyped-def]
                if st.global_step % every:
                    return
                run_dev_eval(model, out, tok_path, data, st.global_step, state, write)
                if patience is not None and state["bad_evals"] >= patience:
                    control.should_training_stop = True
                    state["stopped_early"] = True
                return control

        callbacks.append(DevEval())
    return callbacks


def run_dev_eval(
    model: Any,
    out: Path,
    tok_path: Path,
    data: Any,
    step: int,
    state: dict[str, Any],
    write: Callable[[dict[str, Any]], None],
) -> dict[str, float]:
    """Save, reload with lsr, evaluate on the dev slice, log, track the best step."""
    was_training = model.training
    model.eval()
    try:
        target = save_model(model, out / DEV_MODEL, tok_path)
        metrics = evaluate_artifact(target, data)
    finally:
        model.train(was_training)
    write({"step": step, "eval": True, **metrics})
    score = metrics["dev_ndcg_cut_10"]
    if state.get("best") is None or score > state["best"]:
        state.update(best=score, best_step=step, best_metrics=metrics, bad_evals=0)
        best = out / BEST_MODEL
        shutil.rmtree(best, ignore_errors=True)
        target.rename(best)
        best_state = {k: state[k] for k in ("best", "best_step", "best_metrics")}
        (out / BEST_STATE).write_text(json.dumps(best_state), encoding="utf-8")
    else:
        state["bad_evals"] = state.get("bad_evals", 0) + 1
    state["last_eval_step"] = step
    state["last_eval"] = metrics
    return metrics


# -- the run --------------------------------------------------------------------------------------
def _resumed_best(out: Path, resume: str | None) -> dict[str, Any]:
    """The best dev evaluation so far when resuming (at or before the checkpoint's step), else
    nothing; a fresh run forgets an earlier run's best model."""
    path = out / BEST_STATE
    if resume is None or not path.is_file() or not (out / BEST_MODEL).is_dir():
        if resume is None:
            path.unlink(missing_ok=True)
            shutil.rmtree(out / BEST_MODEL, ignore_errors=True)
        return {}
    best = json.loads(path.read_text(encoding="utf-8"))
    step = int(Path(resume).name.split("-")[-1]) if Path(resume).name[-1:].isdigit() else None
    if step is None or best.get("best_step") is None or best["best_step"] > step:
        return {}
    return best


def _seed_everything(seed: int) -> None:

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _latest_checkpoint(folder: Path) -> str | None:
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return str(found[-1]) if found else None


def train(config: TrainConfig, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train a student as ``config`` says (see the module docstring); returns a summary."""
    say = progress or (lambda msg: log.info(msg))
    check_paths(config)
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if config.train.threads is not None:
        torch.set_num_threads(config.train.threads)
    precision = resolve_precision(config.train.precision)
    out = Path(config.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume = config.train.resume_from_checkpoint
    if resume == "latest":
        resume = _latest_checkpoint(out / CHECKPOINTS)
        if resume is None:
            raise InputError(
                "train.resume_from_checkpoint latest: no checkpoint", out / CHECKPOINTS
            )
    elif resume is not None and not Path(resume).is_dir():
        raise InputError("train.resume_from_checkpoint: not a directory", resume)
    if resume is None and (out / METRICS).exists():
        (out / METRICS).unlink()

    teachers = None
    if config.loss.teachers is not None:
        from lsr.train.teachers import TeacherScores

        teachers = TeacherScores.load(config.loss.teachers)
    say("building training data (BM25 negatives)" if config.data.mining == "bm25" else "data")
    from lsr.train.data import build_training_data

    data = build_training_data(config, teachers)
    say(
        f"{data.examples} examples from {len(data.train_queries)} queries"
        + (f", {len(data.dev.queries)} dev queries" if data.dev else "")
    )
    tok_path = _tokenizer_path(Path(config.student.model))
    idf_table, idf_source = (None, None)
    if config.needs_idf:
        idf_table, idf_source = load_idf(config, data.corpus)
        say(f"IDF: {idf_source}")
    idf_tensor = (
        torch.tensor(np.asarray(idf_table.weights, dtype=np.float32))
        if idf_table is not None
        else None
    )

    _seed_everything(config.train.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_student(config, idf_table, device)
    loss = build_loss(config, model, idf_tensor)

    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sparse_encoder import (
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
    )

    tr = config.train
    cols = [c for c in data.dataset.column_names if c != "label"]
    router_mapping = None
    lr_mapping = None
    if config.student.query_mode == "inference-free":
        router_mapping = {c: ("query" if c == "query" else "document") for c in cols}
        if config.student.learn_idf and config.student.idf_lr is not None:
            name = next(n for n, p in model.named_parameters() if "sub_modules.query" in n)
            lr_mapping = {name.replace(".", r"\."): config.student.idf_lr}
    no_dups = config.loss.name == "infonce" and config.loss.in_batch_negatives
    args = SparseEncoderTrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=tr.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=tr.lr,
        warmup_steps=float(tr.warmup_lr_ratio),  # a float < 1: a ratio (transformers 5)
        weight_decay=tr.weight_decay,
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps if tr.max_steps is not None else -1,
        seed=tr.seed,
        data_seed=tr.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_num_workers=0,
        logging_steps=tr.logging_steps,
        save_strategy="steps" if tr.save_steps else "no",
        save_steps=tr.save_steps or 500,
        save_total_limit=tr.save_total_limit,
        eval_strategy="no",
        report_to="none",
        batch_sampler=BatchSamplers.NO_DUPLICATES if no_dups else BatchSamplers.BATCH_SAMPLER,
        router_mapping=router_mapping,
        learning_rate_mapping=lr_mapping,
        disable_tqdm=progress is None,
        use_cpu=device == "cpu",
    )
    state: dict[str, Any] = {"bad_evals": 0, "stopped_early": False}
    state.update(_resumed_best(out, resume))
    callbacks = _callbacks(config, loss, model, data, out, tok_path, state)
    trainer = SparseEncoderTrainer(
        model=model,
        args=args,
        train_dataset=data.dataset,
        loss=loss,
        callbacks=callbacks,
    )
    # transformers prints its log dicts to stdout (PrinterCallback, or ProgressCallback via
    # tqdm.write): that would break `--json` and land after our summary. metrics.jsonl has them;
    # the progress bar (stderr) stays.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _QuietProgress(ProgressCallback):
        def on_log(self, *args: Any, **kwargs: Any) -> None:
            return None

    trainer.remove_callback(PrinterCallback)
    if any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_QuietProgress)
    say(
        f"training: {config.loss.name} + {config.sparsity.regularizer}"
        f"{' (reading a)' if config.sparsity.reading_a else ''}, {config.student.query_mode}, "
        f"precision {precision}, fast head {'on' if tr.fast_head else 'off'}"
    )
    output = trainer.train(resume_from_checkpoint=resume)
    steps = int(trainer.state.global_step)

    if data.dev is not None and state.get("last_eval_step") != steps:
        write_row = _appender(out / METRICS)
        run_dev_eval(model, out, tok_path, data, steps, state, write_row)
    model.eval()
    model_step = steps
    final: dict[str, Any] = dict(state.get("last_eval") or {})
    if config.train.final_model == "best" and (out / BEST_MODEL).is_dir() and state.get("best"):
        model_dir = out / MODEL
        shutil.rmtree(model_dir, ignore_errors=True)
        (out / BEST_MODEL).rename(model_dir)
        model_step = state["best_step"]
        final = dict(state["best_metrics"])
    else:
        model_dir = save_model(model, out / MODEL, tok_path)
    if "doc_nnz" not in final:
        sample = [data.corpus[d] for d in sorted(data.corpus)[:64]]
        final.update(doc_stats(model_dir, sample))
    final_loss = state.get("last_loss")
    if final_loss is None:
        final_loss = float(output.training_loss) if output.training_loss is not None else None
    result = TrainResult(
        output_dir=str(out),
        model_dir=str(model_dir),
        steps=steps,
        epochs=float(trainer.state.epoch or 0.0),
        seconds=time.perf_counter() - started,
        examples=data.examples,
        final_loss=final_loss if final_loss is None or math.isfinite(final_loss) else None,
        precision=precision,
        stopped_early=bool(state.get("stopped_early")),
        best_step=state.get("best_step"),
        best_dev_ndcg10=state.get("best"),
        final_metrics=final,
        data={**data.summary, "idf": idf_source},
        model_step=model_step,
    )
    _write_card(config, result, model_dir)
    from lsr.train.plots import plot_metrics

    if (out / METRICS).is_file():
        plot_metrics(out / METRICS, out / "metrics.png")
    (out / "result.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out / DEV_MODEL, ignore_errors=True)
    shutil.rmtree(out / BEST_MODEL, ignore_errors=True)
    return result


def _appender(path: Path) -> Callable[[dict[str, Any]], None]:
    def write(row: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    return write


def _write_card(config: TrainConfig, result: TrainResult, model_dir: Path) -> None:
    import yaml

    cfg = config.model_dump(mode="json")
    (model_dir / "train_config.yaml").write_text(
        yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8"
    )
    st, sp_, lo = config.student, config.sparsity, config.loss
    reg = "IDF-aware FLOPS reading (a)" if sp_.reading_a else sp_.regularizer
    listings = [model_dir / "modules.json", *model_dir.glob("*/router_config.json")]
    custom_module = any("lsr.train." in f.read_text(encoding="utf-8") for f in listings)
    lines = [
        f"# {model_dir.parent.name}: a learned sparse encoder trained with lsr",
        "",
        f"- base model: `{st.model}`; query side: **{st.query_mode}**"
        + (
            f" (IDF {'learned' if st.learn_idf else 'fixed'}; `idf.json` here)"
            if st.query_mode == "inference-free"
            else ""
        ),
        f"- data: `{config.data.beir}` split `{config.data.split}`: {result.data.get('queries')} "
        f"queries, {result.examples} examples, {config.data.negatives} negatives "
        f"({config.data.mining} mining)",
        f"- loss: {lo.name}"
        + (f" (T={lo.temperature})" if lo.temperature is not None else "")
        + (f", teachers `{lo.teachers}`" if lo.teachers else "")
        + f"; regulariser {reg}, λ_d={sp_.lambda_d}, λ_q={sp_.lambda_q}, threshold="
        f"{sp_.threshold}",
        f"- steps: {result.steps} ({result.epochs:.2f} epochs), batch {config.train.batch_size}, "
        f"lr {config.train.lr}, precision {result.precision}, seed {config.train.seed}",
        f"- final loss: {result.final_loss}",
        "- final metrics: "
        + json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in result.final_metrics.items()}
        ),
        "",
        "Load with `lsr.encoders.load_encoder(path)` or `SparseEncoder(path"
        + (", trust_remote_code=True" if custom_module else "")
        + ")` (sentence-transformers). Full configuration: `train_config.yaml`.",
        "",
    ]
    (model_dir / "README.md").write_text("\n".join(lines), encoding="utf-8")
