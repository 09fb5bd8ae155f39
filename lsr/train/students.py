"""Students beyond the stock SPLADE layout: uniCOIL-style ``mlp`` students and decoder-only
(causal LM) SPLADE students, each one sentence-transformers module of our own.

Both modules tokenize exactly as lsr's model-backed sides do (:mod:`lsr.encoders.transformer_side`):
the text's tokens without special tokens, truncated to the window width, between the tokenizer's
own special tokens (``prefix + x + suffix``), or with echo embeddings ``prefix + x + x + suffix``
pooling the second copy only; right padding with an attention mask. Special-token columns are
zeroed in the output, as lsr does. So lsr's encoder over the saved files gives the same vectors as
the module in eval mode.

Saved layout (``SparseEncoder.save``): the module in its own folder (``0_MlpStudent``, or
``document_0_MlpStudent`` behind a Router for inference-free students) holding a plain
transformers checkpoint (``config.json``, weights, tokenizer), ``sentence_bert_config.json``
(``max_seq_length``, ``echo``) and, for mlp, ``lsr_mlp_head.safetensors``. lsr's own reader of
sentence-transformers directories (:mod:`lsr.encoders.st_layout`) reads these modules' settings
(never their code), so ``lsr.encoders.load_encoder(path)`` loads any trained model.
sentence-transformers loads it with ``SparseEncoder(path, trust_remote_code=True)`` (the module
classes are imported from this package).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from sentence_transformers.base.modules.input_module import InputModule

from lsr.errors import InputError

__all__ = [
    "StudentModule",
    "build_extended_student",
    "is_causal_checkpoint",
]

MODULE_CONFIG = "sentence_bert_config.json"


def is_causal_checkpoint(model_dir: str | Path) -> bool:
    """Whether ``model_dir/config.json`` describes a decoder-only LM (lsr's rule)."""
    from types import SimpleNamespace

    from lsr.encoders.backbone import is_causal_lm

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text(encoding="utf-8"))
    return is_causal_lm(SimpleNamespace(**data)) if isinstance(data, dict) else False


def is_peft(model: Any) -> bool:
    """Whether ``model`` is a peft wrapper."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft comes with the train extra
        return False
    return isinstance(model, PeftModel)


class StudentModule(InputModule):
    """A transformers model and its tokenizer that tokenize as lsr does and write a sparse
    ``sentence_embedding`` [batch, vocabulary]; subclasses score (:meth:`forward`)."""

    config_keys: ClassVar[list[str]] = ["max_seq_length", "echo"]
    pool_specials: ClassVar[bool] = False  # without echo, pool the special positions too (mlm)
    config_file_name: str = MODULE_CONFIG
    save_in_root: bool = False

    def __init__(
        self, model: Any, tokenizer: Any, *, max_seq_length: int = 256, echo: bool = False
    ) -> None:
        super().__init__()
        from lsr.encoders.backbone import _special_template

        self.model = model
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.echo = bool(echo)
        self.prefix, self.suffix = _special_template(tokenizer)
        self.n_cols = len(tokenizer.get_vocab())
        room = self.max_seq_length - len(self.prefix) - len(self.suffix)
        self.width = room // 2 if echo else room
        if self.width < 1:
            raise InputError(f"max length {max_seq_length} leaves no room for text")
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        keep = torch.ones(self.n_cols)
        special = [int(i) for i in tokenizer.all_special_ids if 0 <= int(i) < self.n_cols]
        keep[special] = 0.0
        self.register_buffer("keep_cols", keep, persistent=False)

    @property
    def causal(self) -> bool:
        from lsr.encoders.backbone import is_causal_lm

        return is_causal_lm(self.base_config())

    def base_config(self) -> Any:
        return self.model.config

    def preprocess(
        self, inputs: Any, prompt: str | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and pool_mask (the positions lsr pools), right-padded."""
        texts = [str(t) for t in inputs]
        if prompt:
            texts = [prompt + t for t in texts]
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)[
            "input_ids"
        ]
        seqs, spans = [], []
        for tokens in encoded:
            part = list(tokens[: self.width])
            n = len(part)
            body = part + part if self.echo else part
            seqs.append(self.prefix + body + self.suffix)
            if not self.echo and self.pool_specials:
                spans.append((0, len(seqs[-1])))
            else:
                lo = len(self.prefix) + (n if self.echo else 0)
                spans.append((lo, lo + n))
        length = max((len(s) for s in seqs), default=1)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        pool = torch.zeros((len(seqs), length), dtype=torch.bool)
        for row, (seq, (lo, hi)) in enumerate(zip(seqs, spans, strict=True)):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
            pool[row, lo:hi] = True
        return {"input_ids": ids, "attention_mask": attention, "pool_mask": pool}

    def model_kwargs(self, features: dict[str, Any]) -> dict[str, Any]:
        """The model's inputs from ``features`` (no cache for causal LMs)."""
        out = {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]}
        if self.causal:
            out["use_cache"] = False
        return out

    def get_embedding_dimension(self) -> int:
        return self.n_cols

    def get_sentence_embedding_dimension(self) -> int:
        return self.n_cols

    # saving ----------------------------------------------------------------------------------
    def inner_model(self) -> Any:
        """The transformers model (under a peft wrapper: the one with the adapters injected)."""
        return self.model.get_base_model() if is_peft(self.model) else self.model

    def plain_model(self) -> Any:
        """The transformers model to save: LoRA adapters merged into a copy of the weights."""
        if not is_peft(self.model):
            return self.model
        return copy.deepcopy(self.model).merge_and_unload()

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any):
        self.plain_model().save_pretrained(output_path, safe_serialization=safe_serialization)
        self.tokenizer.save_pretrained(output_path)
        self.save_config(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs: Any,
    ) -> StudentModule:
        path = cls.load_dir_path(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        if path is None:
            raise InputError(f"no {cls.__name__} folder {subfolder!r}", model_name_or_path)
        settings = json.loads((Path(path) / MODULE_CONFIG).read_text(encoding="utf-8"))
        return cls.from_pretrained(path, **settings)

    @classmethod
    def from_pretrained(cls, path: str | Path, **settings: Any) -> StudentModule:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_seq_length={self.max_seq_length}, echo={self.echo}, "
            f"architecture={type(self.model).__name__})"
        )


def scatter_max(
    weights: torch.Tensor, input_ids: torch.Tensor, pool: torch.Tensor, n_cols: int
) -> torch.Tensor:
    """[B, L] token weights -> [B, n_cols]: the max weight per token id over pooled positions."""
    ok = pool & (input_ids < n_cols)
    w = torch.where(ok, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
    index = torch.where(ok, input_ids, torch.zeros_like(input_ids))
    out = torch.zeros(weights.shape[0], n_cols, dtype=weights.dtype, device=weights.device)
    return out.scatter_reduce(1, index, w, reduce="amax", include_self=True)


# -- building ------------------------------------------------------------------------------------
def build_extended_student(config: Any, idf_table: Any, device: str) -> Any | None:
    """The SparseEncoder for an mlp or decoder-only student (None: the stock SPLADE path)."""
    st = config.student
    causal = is_causal_checkpoint(st.model)
    if st.family == "mlm" and not causal:
        return None
    echo = causal if st.echo is None else st.echo
    if echo and not causal:
        raise InputError("student.echo is for decoder-only (causal LM) students", st.model)
    if st.lora is not None and not causal:
        raise InputError("student.lora needs a decoder-only (causal LM) student", st.model)
    module: StudentModule
    if st.family == "mlp":
        from lsr.train.mlp_student import MlpStudent

        module = MlpStudent.from_pretrained(
            st.model, max_seq_length=st.document_max_length, echo=echo
        )
    else:
        from lsr.train.decoder_student import CausalSpladeStudent

        module = CausalSpladeStudent.from_pretrained(
            st.model, max_seq_length=st.document_max_length, echo=echo
        )
    if st.lora is not None:
        from lsr.train.decoder_student import apply_lora

        apply_lora(module, st.lora)
    return _encoder(module, config, idf_table, device)


def _encoder(module: StudentModule, config: Any, idf_table: Any, device: str) -> Any:
    from sentence_transformers import SparseEncoder

    if config.student.query_mode == "siamese":
        return SparseEncoder(modules=[module], device=device)
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding

    tokenizer = copy.deepcopy(module.tokenizer)
    tokenizer.model_max_length = config.student.query_max_length
    from lsr.train.trainer import query_side_weights

    weight = torch.tensor(query_side_weights(config, idf_table))
    query = SparseStaticEmbedding(tokenizer, weight=weight, frozen=not config.student.learn_idf)
    router = Router.for_query_document([query], [module])
    return SparseEncoder(modules=[router], device=device)
