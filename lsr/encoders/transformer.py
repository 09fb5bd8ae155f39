"""Hugging Face backbones as encoder sides: SPLADE (``mlm``), uniCOIL-style (``mlp``), ``binary``.

``load_transformer_sides(config)`` returns ``(query_side, document_side)``; the query side is None
for inference-free encoders (the IDF side is built elsewhere). Both sides share one backbone.

Every side tokenizes without truncation and cuts each text into *windows* (passes): the text's
tokens between the tokenizer's own special tokens, at most ``max_length`` tokens per pass.
``stride=None`` keeps the first window and counts the text in ``stats.truncated``; otherwise
consecutive windows overlap by ``stride`` tokens, at most ``max_chunks`` of them (a text cut
there is counted too), and the window vectors are pooled per ``chunk_pooling`` (max, or mean
counting absent terms as 0). Windows are batched longest first with dynamic padding and the
vectors are returned in input order.

``mlm``: ``pool_t log1p(relu(logits[t]))`` over the vocabulary, max or sum over positions, with
the special-token *columns* zeroed. The reference vectors of splade-tiny (``special_tokens:
"zeroed"``) keep the [CLS]/[SEP] *positions* in the pooling: excluding them moves weights by up
to 0.2, keeping them matches to the 4 decimals stored; the zeroed columns are never positive for
that model. So windows pool every real position, special ones included, and the columns of the
tokenizer's special tokens are removed from the output.

Decoder-only backbones (``ForCausalLM``, is_decoder, llama/mistral/qwen2/...) load as causal LMs.
With echo embeddings (``EncoderConfig.echo``; None means on for causal LMs) a pass is
``specials + x + x`` and only the positions of the second copy are pooled, so every pooled token
has attended to the whole window; a window then holds ``(max_length - specials) // 2`` tokens.
Padding is on the right with an attention mask: under a causal mask no real token attends to a
pad, positions stay 0..n-1, and a pad token id is not needed.

``mlp``: one weight per input token, ``relu(Linear(hidden, 1)(h_t))`` (ReLU as in uniCOIL: a 0
drops the token, softplus would keep every token), a term's weight is the max (or sum) over its
positions; special-token positions are not scored. The head loads from ``lsr_mlp_head.safetensors``
(tensors ``weight`` [1, hidden] and ``bias`` [1]) in the model directory; without it a seeded
random head is created, a warning is logged and ``side.random_head`` is True.

``binary``: weight 1.0 for every non-special token present (no model; ``pooling`` is ignored).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lsr.encoders.base import EncoderConfig, SideConfig, SideEncoder
from lsr.encoders.splade import LMHeadSplit, pool_reference, pool_screened, pool_tiled
from lsr.errors import InputError
from lsr.vocab import Vocabulary

logger = logging.getLogger(__name__)

MLP_HEAD_FILE = "lsr_mlp_head.safetensors"
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


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """``auto``: CUDA when available (bf16 where supported, else fp16), CPU float32."""
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise InputError(f"bad device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    if dtype == "auto":
        if dev.type == "cuda":
            return dev, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return dev, torch.float32
    return dev, getattr(torch, dtype)


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
    from transformers import AutoConfig, AutoTokenizer

    path = Path(model).expanduser()
    hub_id = model.count("/") <= 1 and not model.startswith((".", "/", "~"))
    if not hub_id and not path.is_dir():
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


# -- windows -------------------------------------------------------------------------------------
@dataclass
class Windows:
    """Passes over the texts: token ids, which text, and the pooled position range [lo, hi)."""

    text: list[int] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    lo: list[int] = field(default_factory=list)
    hi: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def window_spans(
    n_tokens: int, width: int, stride: int | None, max_chunks: int | None
) -> tuple[list[tuple[int, int]], bool]:
    """Content spans [start, stop) of a text of ``n_tokens`` cut into windows of ``width``.

    Consecutive windows overlap by ``stride`` tokens (the last one may be shorter); ``stride``
    None keeps the first window only. Returns the spans and whether tokens were lost.
    """
    if n_tokens <= width:
        return [(0, n_tokens)], False
    if stride is None:
        return [(0, width)], True
    step = width - stride
    spans = []
    start = 0
    while True:
        spans.append((start, min(start + width, n_tokens)))
        if start + width >= n_tokens:
            break
        start += step
    if max_chunks is not None and len(spans) > max_chunks:
        return spans[:max_chunks], True
    return spans, False


# -- sides ---------------------------------------------------------------------------------------
class TransformerSide(SideEncoder):
    """Tokenize, cut into windows, batch by length, pool windows into texts (subclasses score)."""

    pool_specials = False  # pool special-token positions (mlm without echo: the reference does)

    def __init__(self, backbone: Backbone, config: SideConfig, *, echo: bool = False) -> None:
        super().__init__(backbone.vocab, config)
        self.backbone = backbone
        self.echo = echo
        room = config.max_length - backbone.n_special
        self.width = room // 2 if echo else room
        if self.width < 1:
            raise InputError(
                f"max_length {config.max_length} leaves no room for text next to "
                f"{backbone.n_special} special tokens"
                + (" (echo doubles the text)" if echo else "")
            )
        if config.stride is not None and config.stride >= self.width:
            raise InputError(
                f"stride {config.stride} must be smaller than the {self.width} text tokens "
                "of a window"
            )
        limit = backbone.max_positions
        if backbone.model is not None and limit is not None and config.max_length > limit:
            raise InputError(
                f"max_length {config.max_length} exceeds the model's {limit} positions"
            )
        n_cols = len(self.vocab)
        keep = np.ones(n_cols, dtype=bool)
        keep[backbone.special_ids] = False
        self.keep_cols = keep

    # windows -------------------------------------------------------------------------------
    def windows(self, texts: Sequence[str]) -> Windows:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        tok = self.backbone.tokenizer
        encoded = tok(
            list(texts),
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        prefix, suffix = self.backbone.prefix, self.backbone.suffix
        out = Windows()
        cfg = self.config
        for i, tokens in enumerate(encoded):
            spans, lost = window_spans(len(tokens), self.width, cfg.stride, cfg.max_chunks)
            self.stats.truncated += int(lost)
            for start, stop in spans:
                part = list(tokens[start:stop])
                n = len(part)
                if self.echo:
                    ids = prefix + part + part + suffix
                    lo, hi = len(prefix) + n, len(prefix) + 2 * n
                elif self.pool_specials:
                    ids = prefix + part + suffix
                    lo, hi = 0, len(ids)
                else:
                    ids = prefix + part + suffix
                    lo, hi = len(prefix), len(prefix) + n
                out.text.append(i)
                out.ids.append(ids)
                out.lo.append(lo)
                out.hi.append(hi)
        self.stats.chunks += len(out)
        self.stats.tokens += sum(len(ids) for ids in out.ids)
        return out

    def _tensors(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask and pooled-position mask, right-padded to the longest."""
        length = max(len(windows.ids[m]) for m in members)
        ids = torch.full((len(members), length), self.backbone.pad_id, dtype=torch.long)
        attention = torch.zeros((len(members), length), dtype=torch.long)
        pool = torch.zeros((len(members), length), dtype=torch.bool)
        for row, m in enumerate(members):
            seq = windows.ids[m]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
            pool[row, windows.lo[m] : windows.hi[m]] = True
        dev = self.backbone.device
        return ids.to(dev), attention.to(dev), pool.to(dev)

    # encoding ------------------------------------------------------------------------------
    def _score(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row in ``members``, term id, weight) of each window's vector, pooled over positions."""
        raise NotImplementedError

    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        windows = self.windows(texts)
        order = sorted(range(len(windows)), key=lambda w: -len(windows.ids[w]))
        rows, cols, vals = [], [], []
        bar = tqdm(total=len(windows), unit="pass", disable=not progress, leave=False)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                members = order[start : start + batch_size]
                r, c, v = self._score(windows, members)
                rows.append(np.asarray(members, dtype=np.int64)[r])
                cols.append(c)
                vals.append(v)
                bar.update(len(members))
        bar.close()
        row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        col = np.concatenate(cols).astype(np.int64) if cols else np.zeros(0, np.int64)
        val = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
        keep = (val > 0) & (col < len(self.vocab))
        keep[keep] &= self.keep_cols[col[keep]]
        per_window = reduce_coo(row[keep], col[keep], val[keep], (len(windows), len(self.vocab)))
        return pool_windows(per_window, np.asarray(windows.text), len(texts), self.config)


def reduce_coo(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int], how: str = "max"
) -> sp.csr_matrix:
    """CSR from triplets, duplicates (row, col) combined by ``how`` (max or sum)."""
    if how == "sum" or rows.size == 0:
        out = sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float32)
        out.sum_duplicates()
        return out
    key = rows.astype(np.int64) * shape[1] + cols
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    best = np.maximum.reduceat(vals, starts)
    key = key[starts]
    return sp.csr_matrix(
        (best.astype(np.float32), (key // shape[1], key % shape[1])), shape=shape, dtype=np.float32
    )


def pool_windows(
    per_window: sp.csr_matrix, text_of: np.ndarray, n_texts: int, config: SideConfig
) -> sp.csr_matrix:
    """Window vectors -> text vectors: max or mean across a text's windows."""
    if per_window.shape[0] == n_texts and np.array_equal(text_of, np.arange(n_texts)):
        return per_window
    coo = per_window.tocoo()
    rows = text_of[coo.row]
    shape = (n_texts, per_window.shape[1])
    if config.chunk_pooling == "max":
        return reduce_coo(rows, coo.col, coo.data, shape, "max")
    summed = reduce_coo(rows, coo.col, coo.data, shape, "sum")
    counts = np.bincount(text_of, minlength=n_texts).astype(np.float32)
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(counts, 1)) @ summed, dtype=np.float32)


class SpladeSide(TransformerSide):
    """``family="mlm"``: SPLADE over the LM's vocabulary logits (see module docstring).

    ``projection``: ``screened`` (CPU float32 with native bf16: bf16 bound, exact float32
    recompute of candidate terms), ``tiled`` (exact, vocabulary blocks; GPU), ``reference``
    (full logits, the plain computation), ``auto`` (screened where it applies, else tiled).
    Every path but ``reference`` needs ``LMHeadSplit.check`` to pass at load (it falls back).
    """

    def __init__(
        self,
        backbone: Backbone,
        config: SideConfig,
        *,
        echo: bool = False,
        projection: Projection = "auto",
    ) -> None:
        if not backbone.is_lm:
            raise InputError(f"{backbone.name!r}: family 'mlm' needs a model with an LM head")
        self.pool_specials = not echo
        super().__init__(backbone, config, echo=echo)
        self.projection = self._choose(projection)

    def _choose(self, projection: Projection) -> str:
        if projection == "reference":
            return projection
        backbone = self.backbone
        try:
            head = backbone.head()
            probe = torch.tensor([backbone.prefix + [backbone.pad_id] * 3 + backbone.suffix])
            probe = probe.to(backbone.device)
            error = head.check(input_ids=probe, attention_mask=torch.ones_like(probe))
        except (TypeError, RuntimeError) as exc:
            logger.warning(
                "%s: cannot split the LM head (%s); using full logits", backbone.name, exc
            )
            return "reference"
        if not error <= 1e-3:
            logger.warning(
                "%s: the LM head does more than one linear projection (|diff| %.3g); "
                "using full logits",
                backbone.name,
                error,
            )
            return "reference"
        native_bf16 = backbone.device.type == "cpu" and cpu_has_native_bf16()
        if projection == "auto":
            cpu_fp32 = backbone.device.type == "cpu" and backbone.dtype == torch.float32
            return "screened" if cpu_fp32 and native_bf16 else "tiled"
        return projection

    def _score(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, attention, pool = self._tensors(windows, members)
        inputs = {"input_ids": ids, "attention_mask": attention, **self.backbone.forward_kwargs()}
        n_cols = len(self.vocab)
        pooling = self.config.pooling
        if self.projection == "reference":
            logits = self.backbone.model(**inputs).logits[..., :n_cols]
            return _dense_triplets(pool_reference(logits, pool, pooling))
        head = self.backbone.head()
        hidden = head.hidden(**inputs)
        weight, bias = head.weight[:n_cols], head.bias[:n_cols]
        if self.projection == "tiled":
            return _dense_triplets(pool_tiled(hidden, pool, weight, bias, pooling))
        w_bf16, norms = head.screen_weights()
        keep = torch.from_numpy(self.keep_cols).to(hidden.device)
        r, c, v = pool_screened(
            hidden.float(), pool, weight.float(), bias.float(), w_bf16[:n_cols], norms[:n_cols],
            pooling, keep,
        )  # fmt: skip
        return r.cpu().numpy(), c.cpu().numpy(), v.cpu().numpy()


def _dense_triplets(dense: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = torch.nonzero(dense > 0, as_tuple=True)
    return rows.cpu().numpy(), cols.cpu().numpy(), dense[rows, cols].float().cpu().numpy()


_NATIVE_BF16: bool | None = None


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 matmuls natively (else they are emulated, slow)."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        try:
            _NATIVE_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _NATIVE_BF16 = False
        if _NATIVE_BF16 and Path("/proc/cpuinfo").exists():  # oneDNN also says yes for AVX512 core
            flags = Path("/proc/cpuinfo").read_text(errors="ignore")
            _NATIVE_BF16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return _NATIVE_BF16


class MlpSide(TransformerSide):
    """``family="mlp"``: ``relu(Linear(hidden, 1)(h_t))`` per input token, no expansion."""

    def __init__(self, backbone: Backbone, config: SideConfig, *, echo: bool = False) -> None:
        if backbone.model is None:
            raise InputError(f"{backbone.name!r}: family 'mlp' needs a model")
        super().__init__(backbone, config, echo=echo)
        hidden = int(backbone.base().config.hidden_size)
        self.head = torch.nn.Linear(hidden, 1)
        self.head_path = _find_file(backbone.name, MLP_HEAD_FILE)
        self.random_head = self.head_path is None
        if self.head_path is not None:
            from safetensors.torch import load_file

            try:
                state = load_file(self.head_path)
                self.head.load_state_dict({k: state[k] for k in ("weight", "bias")})
            except (OSError, KeyError, RuntimeError, ValueError) as exc:
                raise InputError(f"bad MLP head: {exc}", self.head_path) from None
        else:
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                self.head.weight.normal_(0.0, 0.02, generator=generator)
                self.head.bias.zero_()
            logger.warning(
                "%s: no %s; the mlp head is RANDOMLY INITIALISED (train it before use)",
                backbone.name,
                MLP_HEAD_FILE,
            )
        self.stats.extra["random_head"] = self.random_head
        self.head.to(device=backbone.device, dtype=backbone.dtype).eval()

    def save_head(self, directory: str | Path) -> Path:
        """Write the head where ``MlpSide`` looks for it: ``directory/lsr_mlp_head.safetensors``."""
        from safetensors.torch import save_file

        path = Path(directory) / MLP_HEAD_FILE
        state = {
            k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()
        }
        save_file(state, str(path), metadata={"activation": "relu"})
        return path

    def token_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [...] float32 weights."""
        return torch.relu(self.head(hidden)).squeeze(-1).float()

    def _score(
        self, windows: Windows, members: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, attention, pool = self._tensors(windows, members)
        base = self.backbone.base()
        hidden = base(
            input_ids=ids, attention_mask=attention, **self.backbone.forward_kwargs()
        ).last_hidden_state
        weights = self.token_weights(hidden[pool]).cpu().numpy()
        rows = torch.nonzero(pool, as_tuple=True)[0].cpu().numpy()
        terms = ids[pool].cpu().numpy()
        ok = terms < len(self.vocab)
        shape = (len(members), len(self.vocab))
        coo = reduce_coo(rows[ok], terms[ok], weights[ok], shape, self.config.pooling).tocoo()
        return coo.row, coo.col, coo.data


class BinarySide(TransformerSide):
    """``family="binary"``: 1.0 for every non-special token present; tokenizer only."""

    def _encode(self, texts: Sequence[str], batch_size: int, progress: bool) -> sp.csr_matrix:
        windows = self.windows(texts)
        cols = np.fromiter(
            (t for ids, lo, h in zip(windows.ids, windows.lo, windows.hi, strict=True)
             for t in ids[lo:h]),
            dtype=np.int64,
        )  # fmt: skip
        windows_of = np.repeat(
            np.arange(len(windows)), [h - lo for lo, h in zip(windows.lo, windows.hi, strict=True)]
        )
        keep = cols < len(self.vocab)
        keep[keep] &= self.keep_cols[cols[keep]]
        shape = (len(windows), len(self.vocab))
        ones = np.ones(int(keep.sum()), dtype=np.float32)
        per_window = reduce_coo(windows_of[keep], cols[keep], ones, shape, "max")
        return pool_windows(per_window, np.asarray(windows.text), len(texts), self.config)


def _find_file(model: str, name: str) -> str | None:
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


# -- factory -------------------------------------------------------------------------------------
MODEL_FAMILIES = ("mlm", "mlp")


def load_transformer_sides(
    config: EncoderConfig, *, projection: Projection = "auto"
) -> tuple[SideEncoder | None, SideEncoder]:
    """(query side, document side) for ``config``; the query side is None for inference-free
    encoders (``query_mode="inference-free"`` or ``query.family="idf"``). One backbone is loaded
    and shared by both sides. ``projection`` picks SPLADE's vocabulary projection (SpladeSide)."""
    doc_cfg = config.document
    if doc_cfg.family == "idf":
        raise InputError("the document side cannot be 'idf' (idf is a query-side lookup)")
    want_query = config.query_mode != "inference-free" and config.query.family != "idf"
    families = {doc_cfg.family} | ({config.query.family} if want_query else set())
    need = "lm" if "mlm" in families else "base" if "mlp" in families else None
    backbone = load_backbone(config.model, device=config.device, dtype=config.dtype, need=need)
    echo = bool(config.echo) if config.echo is not None else backbone.causal

    def make(side: SideConfig) -> SideEncoder:
        if side.family == "mlm":
            return SpladeSide(backbone, side, echo=echo, projection=projection)
        if side.family == "mlp":
            return MlpSide(backbone, side, echo=echo)
        return BinarySide(backbone, side)

    document = make(doc_cfg)
    query = make(config.query) if want_query else None
    if isinstance(query, MlpSide) and isinstance(document, MlpSide):
        query.head = document.head  # siamese: one head too
        query.random_head, query.head_path = document.random_head, document.head_path
    return query, document
