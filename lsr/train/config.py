"""The training configuration: one :class:`TrainConfig`, read from YAML, every field described.

Sections (each rejects unknown keys)::

    student:      the model to start from and how queries are encoded
    data:         the BEIR directory, the split, negatives and how they are mined
    loss:         the ranking loss (InfoNCE, MarginMSE, KL) and its teacher labels
    sparsity:     the regulariser (FLOPS, IDF-FLOPS reading (b), L1, reading (a)), λ, warm-up
    train:        batch sizes, learning rate, steps, precision, output, evaluation, early stopping

``load_config(path, overrides)`` reads the YAML file and applies ``key=value`` overrides with
dotted keys (``loss.name=kl``, ``train.max_steps=3``); values are parsed as YAML scalars.
Validation only checks the configuration itself and that the files it names exist
(:func:`check_paths`); nothing here imports torch.

IDF-aware FLOPS has two readings (see :mod:`lsr.train.regularizers`): ``sparsity.regularizer:
idf_flops`` is reading (b) (IDF inside the FLOPS sum, any query mode); ``sparsity.reading_a:
true`` is reading (a), the authors' code: an inference-free IDF query side and plain FLOPS on
documents. ``reading_a`` fills in ``student.query_mode: inference-free`` and ``sparsity.regularizer:
flops`` when they are not given and is an error when they are given otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lsr.errors import InputError

__all__ = [
    "DataConfig",
    "LoraSettings",
    "LossConfig",
    "SparsityConfig",
    "StudentConfig",
    "TrainConfig",
    "TrainingConfig",
    "apply_overrides",
    "check_paths",
    "format_validation_error",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class LoraSettings(_Section):
    """LoRA adapters (peft) for a decoder-only student; merged into the weights when saved."""

    r: int = Field(16, ge=1, description="Rank of the adapters.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapters' input.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt (e.g. [q_proj, k_proj, v_proj, o_proj]); None: peft's "
        "default for the architecture.",
    )


class StudentConfig(_Section):
    """The student model."""

    model: str = Field(
        description="Path of the base model: a masked-LM checkpoint (config.json, weights, "
        "tokenizer), a decoder-only causal LM checkpoint (SPLADE over its lm_head, echo "
        "embeddings) or a sentence-transformers SparseEncoder directory with Transformer + "
        "SpladePooling modules."
    )
    query_mode: Literal["siamese", "inference-free"] = Field(
        "siamese",
        description="siamese: queries go through the same MLM model as documents. "
        "inference-free: documents through the MLM model, queries are token presence × IDF "
        "(a SparseStaticEmbedding behind a Router), no model at query time.",
    )
    idf: str | None = Field(
        None,
        description="idf.json ({token: weight}) for the inference-free query side and for "
        "idf_flops. None: the model directory's idf.json if there is one, else computed from the "
        "training corpus (BM25 IDF, lsr.encoders.compute_idf).",
    )
    query_weights: Literal["idf", "binary"] = Field(
        "idf",
        description="Inference-free query side: idf (token presence × the IDF table) or binary "
        "(token presence × 1, special tokens 0: the query is a bag of word pieces; the IDF table "
        "is then only used by idf_flops). binary cannot be learned.",
    )
    learn_idf: bool = Field(
        False,
        description="Train the inference-free query weights (initialised from the IDF). They are "
        "clamped to >= 0 after every optimizer step (projection).",
    )
    idf_lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the learned IDF weights (None: train.lr). Only with "
        "learn_idf.",
    )
    document_max_length: int = Field(
        256,
        ge=8,
        description="Tokens per document (special tokens included); siamese queries use it too.",
    )
    query_max_length: int = Field(
        64,
        ge=4,
        description="Word pieces per query on the inference-free query side.",
    )
    family: Literal["mlm", "mlp"] = Field(
        "mlm",
        description="mlm: SPLADE over the LM head's vocabulary logits (expansion). mlp: "
        "uniCOIL-style, relu(Linear(hidden, 1)(h_t)) per input token max-pooled per token id, "
        "no expansion (lsr's mlp family; the head is saved as lsr_mlp_head.safetensors). Both "
        "siamese and inference-free (the document side is mlp).",
    )
    echo: bool | None = Field(
        None,
        description="Echo embeddings for decoder-only (causal LM) students: the text is repeated "
        "and only the second copy is pooled, as lsr encodes causal LMs. None: on for causal LMs; "
        "true on a bidirectional model is an error.",
    )
    lora: LoraSettings | None = Field(
        None,
        description="Train LoRA adapters (peft) instead of every weight: decoder-only (causal LM) "
        "students only. The saved model has the adapters merged (loads without peft). None: full "
        "fine-tuning.",
    )


class DataConfig(_Section):
    """Training data: a BEIR directory."""

    beir: str = Field(description="BEIR directory: corpus.jsonl(.gz), queries.jsonl(.gz), qrels/.")
    mode: Literal["qrels", "title_abstract"] = Field(
        "qrels",
        description="qrels: queries and qrels of the split. title_abstract: self-supervised, for "
        "corpora without queries: every document with a non-empty title gives a pair (title -> "
        "the document's text without its title); negatives are BM25-mined with the title as the "
        "query (the document itself excluded) over the title-less texts; dev_queries holds out "
        "titles the same way. Needs only corpus.jsonl (split, min_relevance unused).",
    )
    split: str = Field("train", description="Qrels split to train on (qrels/<split>.tsv).")
    negatives: int = Field(
        1, ge=0, le=64, description="Hard negatives per training example (columns negative_1..n)."
    )
    mining: Literal["bm25", "none"] = Field(
        "bm25",
        description="Where hard negatives come from. bm25: our BM25 (bm25s) over the corpus, every "
        "known positive of the query excluded, sampled with the seed from the top mining_depth. "
        "none: no negative columns (InfoNCE with in-batch negatives only; negatives must be 0).",
    )
    mining_depth: int = Field(
        100, ge=1, description="BM25 candidates per query that negatives are sampled from."
    )
    skip_top: int = Field(
        0,
        ge=0,
        description="BM25 ranks skipped before sampling (unjudged near-duplicates of positives).",
    )
    min_relevance: int = Field(
        1, ge=1, description="Qrels grade at or above which a document is a positive."
    )
    max_queries: int | None = Field(
        None, ge=1, description="Train on the first N queries of the split (sorted ids; all: None)."
    )
    dev_queries: int = Field(
        0,
        ge=0,
        description="Queries of the split held out (chosen with the seed) for dev evaluation "
        "during training; 0: no dev evaluation.",
    )
    dev_depth: int = Field(
        50,
        ge=1,
        description="Dev slice: every positive of the dev queries plus their BM25 top dev_depth.",
    )


class LossConfig(_Section):
    """The ranking loss."""

    name: Literal["infonce", "marginmse", "kl"] = Field(
        "infonce",
        description="infonce: SparseMultipleNegativesRankingLoss (or own-candidates cross-entropy "
        "without in-batch negatives). marginmse: SparseMarginMSELoss on teacher margins. kl: "
        "SparseDistillKLDivLoss on teacher scores.",
    )
    in_batch_negatives: bool = Field(
        True,
        description="InfoNCE only: also score every other example's documents in the batch "
        "(needs no duplicate texts in a batch: the no-duplicates batch sampler is used).",
    )
    scale: float = Field(
        1.0,
        gt=0,
        description="InfoNCE: multiplier of the dot-product scores before the softmax.",
    )
    temperature: float | None = Field(
        None,
        gt=0,
        description="KL only (required): softmax temperature of student and teacher (the loss is "
        "multiplied by T², as sentence-transformers does). The reference uses 1.0.",
    )
    teachers: str | None = Field(
        None,
        description="Directory of precomputed teacher scores (lsr.train.teachers.TeacherScores) "
        "for marginmse / kl: labels of each example's positive and negatives. Examples whose "
        "documents have no teacher score are dropped (negatives are sampled among the "
        "teacher's candidates).",
    )


class SparsityConfig(_Section):
    """The sparsity regulariser and its weights."""

    regularizer: Literal["flops", "idf_flops", "l1"] = Field(
        "flops",
        description="flops: Σ_j (mean_i w_ij)². idf_flops: IDF-aware FLOPS reading (b), "
        "Σ_j (mean_i w_ij · idf_j)². l1: mean_i Σ_j w_ij.",
    )
    reading_a: bool = Field(
        False,
        description="IDF-aware FLOPS reading (a), the authors' code: inference-free IDF queries + "
        "plain FLOPS on documents (sets query_mode and regularizer; conflicting values are "
        "an error).",
    )
    lambda_d: float = Field(
        1e-3, ge=0, description="Maximum weight λ_d of the document regulariser."
    )
    lambda_q: float | None = Field(
        None,
        ge=0,
        description="Maximum weight λ_q of the query regulariser (siamese only; None: none). "
        "Inference-free queries get no regulariser.",
    )
    threshold: int | None = Field(
        None,
        ge=0,
        description="ℓ0 mask: only vectors with more than this many non-zero terms are "
        "regularised (None: all).",
    )
    per_slot: bool = Field(
        False,
        description="Document FLOPS per candidate slot (positives, first negatives, ...) summed, "
        "as the reference code does; false: one mean over all documents (sentence-transformers).",
    )
    warmup_steps: int | None = Field(
        None,
        ge=0,
        description="Quadratic warm-up of λ over this many optimizer steps (absolute T).",
    )
    warmup_ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Quadratic warm-up over this fraction of the total steps (default 1/3 when "
        "neither warmup_steps nor warmup_ratio is given).",
    )
    warmup_count_from_one: bool = Field(
        False,
        description="λ(step) uses step + 1 (the reference code: the first step already has λ/T²).",
    )

    @model_validator(mode="after")
    def _one_warmup(self) -> SparsityConfig:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("give warmup_steps or warmup_ratio, not both")
        return self


class TrainingConfig(_Section):
    """Engineering: batches, optimiser, steps, precision, output, evaluation."""

    output_dir: str = Field(description="Where the model, checkpoints, metrics and card go.")
    batch_size: int = Field(16, ge=1, description="Training examples per optimizer step.")
    mini_batch_size: int | None = Field(
        None,
        ge=1,
        description="Embed each batch in mini-batches of this many texts (CachedSpladeLoss, "
        "GradCache): bounded memory, regulariser still on the full batch. None: SpladeLoss.",
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Must be 1: FLOPS is not additive over micro-batches (use mini_batch_size).",
    )
    lr: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW, linear decay).")
    warmup_lr_ratio: float = Field(
        0.0, ge=0, lt=1, description="Learning-rate warm-up as a fraction of the total steps."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: float = Field(1.0, gt=0, description="Epochs over the training examples.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    seed: int = Field(42, description="Seed for mining, data order, initialisation and dropout.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX) or a GPU "
        "with bf16, fp16 AMP on other GPUs, else fp32. fp16 needs a GPU.",
    )
    save_steps: int | None = Field(
        None, ge=1, description="Write a trainer checkpoint every N steps (None: none)."
    )
    save_total_limit: int | None = Field(
        2, ge=1, description="Keep at most this many trainer checkpoints."
    )
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="Dev evaluation every N steps (needs data.dev_queries > 0; None: at the end "
        "only when there are dev queries).",
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many dev evaluations without a better dev nDCG@10 (needs "
        "eval_steps).",
    )
    final_model: Literal["best", "last"] = Field(
        "best",
        description="Which weights become <output_dir>/model when there is dev evaluation: best "
        "(the dev evaluation with the highest nDCG@10; earliest on ties) or last (the weights at "
        "the end of training). Without dev evaluation it is always the last.",
    )
    logging_steps: int = Field(1, ge=1, description="Write a metrics line every N steps.")
    fast_head: bool = Field(
        True,
        description="Train with the chunked max-pool head (lsr.train.splade_head); the saved "
        "model is the stock layout either way.",
    )
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads (None: torch's default)."
    )
    resume_from_checkpoint: str | None = Field(
        None,
        description="A checkpoint-N directory (or 'latest' for the newest in output_dir) to "
        "resume from.",
    )


class TrainConfig(_Section):
    """Everything ``lsr train`` needs."""

    student: StudentConfig = Field(description="The student model.")
    data: DataConfig = Field(description="Training data.")
    loss: LossConfig = Field(default_factory=LossConfig, description="The ranking loss.")
    sparsity: SparsityConfig = Field(
        default_factory=SparsityConfig, description="Sparsity regulariser."
    )
    train: TrainingConfig = Field(description="Engineering settings.")

    @model_validator(mode="before")
    @classmethod
    def _reading_a(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        sparsity = data.get("sparsity")
        if not isinstance(sparsity, dict) or not sparsity.get("reading_a"):
            return data
        student = data.get("student")
        if isinstance(student, dict):
            mode = student.get("query_mode", "inference-free")
            if mode != "inference-free":
                raise ValueError(
                    "sparsity.reading_a needs student.query_mode inference-free, got " + repr(mode)
                )
            data = {**data, "student": {**student, "query_mode": "inference-free"}}
        reg = sparsity.get("regularizer", "flops")
        if reg != "flops":
            raise ValueError(f"sparsity.reading_a uses plain FLOPS, got regularizer {reg!r}")
        return {**data, "sparsity": {**sparsity, "regularizer": "flops"}}

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        loss, data, sp, tr, st = self.loss, self.data, self.sparsity, self.train, self.student
        if tr.gradient_accumulation_steps != 1:
            raise ValueError(
                "train.gradient_accumulation_steps must be 1: FLOPS over micro-batches is not the "
                "full-batch FLOPS; use train.mini_batch_size (CachedSpladeLoss) for memory"
            )
        if data.mining == "none" and data.negatives:
            raise ValueError("data.mining none gives no hard negatives: set data.negatives 0")
        if loss.name in ("marginmse", "kl"):
            if loss.teachers is None:
                raise ValueError(f"loss {loss.name} needs loss.teachers (precomputed scores)")
            if data.negatives < 1 or data.mining == "none":
                raise ValueError(f"loss {loss.name} needs data.negatives >= 1 and mining bm25")
        elif loss.teachers is not None:
            raise ValueError("loss.teachers is only used by marginmse and kl")
        if loss.name == "kl" and loss.temperature is None:
            raise ValueError("loss kl needs an explicit loss.temperature (the reference uses 1.0)")
        if loss.name != "kl" and loss.temperature is not None:
            raise ValueError("loss.temperature is only used by kl")
        if loss.name == "infonce" and not loss.in_batch_negatives and data.negatives < 1:
            raise ValueError(
                "infonce without in-batch negatives needs data.negatives >= 1 (nothing to rank)"
            )
        if st.query_mode == "inference-free" and sp.lambda_q:
            raise ValueError("inference-free queries have no query regulariser: unset lambda_q")
        if st.query_mode == "siamese" and (st.learn_idf or st.idf_lr is not None):
            raise ValueError("student.learn_idf / idf_lr need query_mode inference-free")
        if st.query_weights == "binary" and st.query_mode != "inference-free":
            raise ValueError("student.query_weights binary needs query_mode inference-free")
        if st.query_weights == "binary" and sp.reading_a:
            raise ValueError(
                "sparsity.reading_a is IDF query weights: query_weights binary conflicts"
            )
        if st.query_weights == "binary" and st.learn_idf:
            raise ValueError("student.query_weights binary is fixed: unset learn_idf")
        if st.idf_lr is not None and not st.learn_idf:
            raise ValueError("student.idf_lr needs student.learn_idf true")
        if tr.early_stopping_patience is not None and tr.eval_steps is None:
            raise ValueError("train.early_stopping_patience needs train.eval_steps")
        if tr.eval_steps is not None and data.dev_queries == 0:
            raise ValueError("train.eval_steps needs data.dev_queries > 0")
        if tr.mini_batch_size is not None and tr.mini_batch_size > tr.batch_size:
            raise ValueError("train.mini_batch_size is larger than train.batch_size")
        return self

    @model_validator(mode="after")
    def _students_and_data(self) -> TrainConfig:
        if self.loss.teachers is not None and self.data.mode != "qrels":
            raise ValueError("loss.teachers (scores per query id) needs data.mode qrels")
        return self

    @property
    def needs_idf(self) -> bool:
        """An IDF table is needed (inference-free queries or IDF-aware FLOPS (b))."""
        return (
            self.student.query_mode == "inference-free" or self.sparsity.regularizer == "idf_flops"
        )


# -- reading ------------------------------------------------------------------------------------
def format_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid training config: " + "; ".join(parts)


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` overrides with dotted keys applied to a nested dict (a copy)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value, got {item!r}")
        path = key.strip().split(".")
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"--set {key}: {part!r} is not a section")
            node = child
        node[path[-1]] = _parse_value(value)
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    data: dict[str, Any] | None = None,
) -> TrainConfig:
    """Read a YAML file (or take ``data``), apply overrides, validate. InputError (one line)."""
    import yaml

    raw: Any = {} if data is None else data
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found", path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"not valid YAML: {first}", path) from None
    if not isinstance(raw, dict):
        raise InputError("a training config is a YAML mapping of sections", path)
    raw = apply_overrides(raw, list(overrides))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc)) from None


def check_paths(config: TrainConfig) -> None:
    """Check the files the config names exist (before any model loads); InputError otherwise."""
    model = Path(config.student.model)
    if not model.is_dir():
        raise InputError("student.model: not a directory (models load from local paths)", model)
    if not (model / "config.json").is_file() and not (model / "modules.json").is_file():
        raise InputError("student.model: no config.json or modules.json (not a model)", model)
    if config.student.idf is not None and not Path(config.student.idf).is_file():
        raise InputError("student.idf: file not found", config.student.idf)
    _check_student_kind(config)
    beir = Path(config.data.beir)
    if not beir.is_dir():
        raise InputError("data.beir: not a directory", beir)
    from lsr.corpus import corpus_file, qrels_path, queries_file

    corpus_file(beir)
    if config.data.mode == "qrels":
        queries_file(beir)
        qrels_path(beir, config.data.split)
    if config.loss.teachers is not None:
        teachers = Path(config.loss.teachers)
        if not (teachers / "manifest.json").is_file():
            raise InputError("loss.teachers: no manifest.json (not teacher scores)", teachers)


def _check_student_kind(config: TrainConfig) -> None:
    """LoRA and echo need a decoder-only (causal LM) student (read from its config.json)."""
    import json

    from lsr.encoders.backbone import is_causal_lm

    st = config.student
    if st.lora is None and not st.echo:
        return
    path = Path(st.model) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    from types import SimpleNamespace

    causal = isinstance(data, dict) and is_causal_lm(SimpleNamespace(**data))
    if st.lora is not None and not causal:
        raise InputError(
            "student.lora needs a decoder-only (causal LM) student; this config.json is not one",
            path,
        )
    if st.echo and not causal:
        raise InputError("student.echo is for decoder-only (causal LM) students", path)
