"""A Hugging Face tokenizer and model, loaded once and shared by the sides that use them.

Decoder-only backbones (``ForCausalLM``, is_decoder, llama/mistral/qwen2/...) load as causal LMs.
With echo embeddings (``EncoderConfig.echo``; None means on for causal LMs) a pass is
``specials + x + x`` and only the positions of the second copy are pooled, so every pooled token
has attended to the whole window; a window then holds ``(max_length - specials) // 2`` tokens.
Padding is on the right with an attention mask: under a causal mask no real token attends to a
pad, positions stay 0..n-1, and a pad token id is not needed.

:func:`load_lean_backbone` is the query side's start-up path for BERT/DistilBERT checkpoints: the
tokenizer from ``tokenizer.json`` through ``tokenizers`` and the model from
:mod:`lsr.encoders.bert_forward`, without importing transformers, where that gives exactly what
:func:`load_backbone` gives (else None, and callers load with transformers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer

from lsr.encoders.device import resolve_device
from lsr.encoders.projection import LMHeadSplit
from lsr.encoders.resolve import looks_like_hub_id
from lsr.errors import InputError
from lsr.extras import require
from lsr.vocab import Vocabulary

logger = logging.getLogger(__name__)


CAUSAL_MODEL_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
        "gemma2", "gemma3_text", "phi", "phi3", "gpt2", "gpt_neox", "gptj", "falcon", "olmo",
        "olmo2", "smollm3", "stablelm", "starcoder2", "granite", "cohere", "opt", "bloom",
    }
)  # fmt: skip
Projection = Literal["auto", "screened", "tiled", "reference"]


# -- backbone ------------------------------------------------------------------------------------
def is_causal_lm(config: Any) -> bool:
    """Whether a transformers config describes a decoder-only (causal) language model."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    if getattr(config, "is_decoder", False):
        return True
    if any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or ()):
        return True
    return getattr(config, "model_type", None) in CAUSAL_MODEL_TYPES


def _vocabulary(model: str, tokenizer: Any) -> Vocabulary:
    """The tokenizer's vocabulary; from the directory's files when local (same identity as
    ``Vocabulary.load(model_dir)``, which indexes use), else from the loaded tokenizer."""
    if Path(model).is_dir():
        try:
            return Vocabulary.load(model)
        except InputError:
            pass
    by_id = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise InputError(f"tokenizer of {model!r}: vocabulary ids are not contiguous from 0")
    return Vocabulary([t for t, _ in by_id], frozen=True, source=model)


@dataclass
class Backbone:
    """A tokenizer, optionally a model, and what sides need to know about them."""

    name: str
    tokenizer: Any
    vocab: Vocabulary
    model: torch.nn.Module | None = None  # an LM (mlm), or the base encoder (mlp only)
    kind: str | None = None  # "lm" | "base" | None (tokenizer only)
    missing_keys: list[str] = field(default_factory=list)  # randomly initialised at load
    causal: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    prefix: list[int] = field(default_factory=list)  # special tokens before a text's tokens
    suffix: list[int] = field(default_factory=list)  # ... and after
    special_ids: list[int] = field(default_factory=list)
    pad_id: int = 0
    max_positions: int | None = None
    _head: LMHeadSplit | None = None

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.suffix)

    @property
    def is_lm(self) -> bool:
        return self.kind == "lm"

    def base(self) -> torch.nn.Module:
        """The encoder that returns hidden states (the LM's base model when an LM is loaded)."""
        if self.model is None:
            raise RuntimeError("this backbone has no model")
        return self.model.base_model if self.is_lm else self.model

    def head(self) -> LMHeadSplit:
        if self._head is None:
            assert self.model is not None
            self._head = LMHeadSplit(self.model)
        return self._head

    def forward_kwargs(self) -> dict[str, Any]:
        return {"use_cache": False} if self.causal else {}

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids: no special tokens added, no truncation."""
        if isinstance(self.tokenizer, Tokenizer):  # the lean backbone: tokenizers alone
            return [
                e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            ]
        return self.tokenizer(
            texts,
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]


def _special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around a single text (e.g. [CLS] ... [SEP])."""
    probe = "lsr probe text"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare) :])
    return [], []


def load_backbone(
    model: str, *, device: str = "auto", dtype: str = "auto", need: str | None = "lm"
) -> Backbone:
    """Load a tokenizer and (``need`` = "lm" | "base" | None) a model, once.

    ``lm``: AutoModelForCausalLM for decoder-only configs, else AutoModelForMaskedLM; ``base``:
    AutoModel (hidden states). Raises InputError for a path or hub id that cannot be loaded.
    """
    require(f"loading {model!r} with transformers", "transformers")
    from transformers import AutoConfig, AutoTokenizer

    path = Path(model).expanduser()
    if not path.is_dir() and not looks_like_hub_id(model):
        raise InputError("model directory not found", model)
    if path.is_dir():
        model = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load a tokenizer from {model!r}: {exc}") from None
    vocab = _vocabulary(model, tokenizer)
    prefix, suffix = _special_template(tokenizer)
    special = sorted({int(i) for i in tokenizer.all_special_ids if 0 <= int(i) < len(vocab)})
    pad = tokenizer.pad_token_id
    backbone = Backbone(
        name=model,
        tokenizer=tokenizer,
        vocab=vocab,
        prefix=prefix,
        suffix=suffix,
        special_ids=special,
        pad_id=int(pad) if pad is not None else 0,
    )
    if need is None:
        return backbone
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load a model config from {model!r}: {exc}") from None
    backbone.causal = is_causal_lm(config)
    backbone.device, backbone.dtype = resolve_device(device, dtype)
    backbone.max_positions = getattr(config, "max_position_embeddings", None)
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    if need == "lm":
        cls = AutoModelForCausalLM if backbone.causal else AutoModelForMaskedLM
    else:
        cls = AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: lsr reports its own progress
    try:
        net, info = cls.from_pretrained(model, dtype=backbone.dtype, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load {cls.__name__} from {model!r}: {exc}") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        logger.warning(
            "%s: %d weights missing from the checkpoint were RANDOMLY INITIALISED: %s",
            model,
            len(missing),
            ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),
        )
    backbone.missing_keys = missing
    backbone.model = net.to(backbone.device).eval()
    backbone.kind = need
    return backbone


def load_lean_backbone(model: str, *, device: str = "auto", dtype: str = "auto") -> Backbone | None:
    """:func:`load_backbone` (``need="lm"``) for a local BERT/DistilBERT masked LM on the CPU,
    without transformers; None (logged at debug level) where the result could differ.

    The tokenizer is ``tokenizer.json`` when :func:`~lsr.encoders.tokenizer.bert_special_tokens`
    says transformers would tokenize alike, the model a :class:`~lsr.encoders.bert_forward.PlainMlm`
    (bit-identical logits, checked on the CPU only: other devices use transformers).
    """
    import json

    from lsr.encoders.bert_forward import load_mlm
    from lsr.encoders.tokenizer import bert_special_tokens, load_tokenizer

    path = Path(model).expanduser()
    try:
        if not path.is_dir():
            raise ValueError("not a local directory")
        run_on, run_as = resolve_device(device, dtype)
        if run_on.type != "cpu":
            raise ValueError(f"device {run_on}")
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("config.json is not an object")
        named = bert_special_tokens(path)
        vocab = Vocabulary.load(path)
        tokenizer = load_tokenizer(path)
        ids = {key: tokenizer.token_to_id(text) for key, text in named.items()}
        if any(i is None or not 0 <= i < len(vocab) for i in ids.values()):
            raise ValueError(f"special tokens outside the vocabulary: {ids}")
        net = load_mlm(path, config, run_on, run_as)
    except (ValueError, OSError, InputError) as exc:
        logger.debug("%s: loading with transformers (%s)", model, exc)
        return None
    return Backbone(
        name=str(path),
        tokenizer=tokenizer,
        vocab=vocab,
        model=net,
        kind="lm",
        device=run_on,
        dtype=run_as,
        prefix=[ids["cls_token"]],
        suffix=[ids["sep_token"]],
        special_ids=sorted(set(ids.values())),
        pad_id=ids["pad_token"],
        max_positions=net.shape.positions,
    )


def find_model_file(model: str, name: str) -> str | None:
    """``name`` in a local model directory, or in the local Hugging Face cache for a hub id."""
    if Path(model).is_dir():
        path = Path(model) / name
        return str(path) if path.exists() else None
    try:
        from transformers.utils import cached_file

        return cached_file(
            model, name, local_files_only=True, _raise_exceptions_for_missing_entries=False
        )
    except (OSError, ValueError):
        return None
