"""Build an :class:`~lsr.encoders.base.Encoder` from a checkpoint, and describe it for an index.

Two kinds of checkpoint (a local directory or a Hugging Face hub id):

* **A plain masked-LM / causal-LM checkpoint** (``config.json`` + weights + tokenizer). The model
  sides come from :func:`lsr.encoders.transformer.load_transformer_sides`; an inference-free
  encoder gets an :class:`~lsr.encoders.idf.IdfQueryEncoder` as its query side.
* **A sentence-transformers ``SparseEncoder`` directory** (``modules.json``). Its files are read,
  never its code: ``MLMTransformer`` / ``Transformer(transformer_task="fill-mask")`` +
  ``SpladePooling`` become an ``mlm`` side (model = the directory holding the MLM weights,
  pooling, max length), a ``SparseStaticEmbedding`` becomes the IDF query side (its
  ``model.safetensors`` weights or ``idf.json``), a ``Router`` picks the query and document routes
  (inference-free when the query route is a ``SparseStaticEmbedding``). Anything else is an
  :class:`~lsr.errors.InputError` naming the module type. Settings that this package's encoders
  cannot reproduce (prompts, a non-dot similarity, ``do_lower_case``) are errors too, not silently
  different vectors.

Inference-free flow when no ``idf.json`` is given (``config.idf is None``)::

    config = EncoderConfig(model="…", query_mode="inference-free")
    table = compute_idf(config, corpus_texts)           # tokenizer only: no model, no torch
    encoder = load_encoder(config, idf_table=table)     # document model + IdfQueryEncoder
    ...encode documents, build the index...
    encoder.query.save(index_dir)                       # tokenizer.json + idf.json
    manifest["encoder"] = encoder_manifest(encoder)
    # at query time, in another process:
    query_side = load_query_encoder(manifest["encoder"], index_dir)   # loads no model

Importing this module imports neither torch nor transformers; :func:`load_encoder` does (through
the transformer sides) unless only an IDF side is built.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lsr.encoders.base import Encoder, EncoderConfig, SideConfig, SideEncoder
from lsr.encoders.idf import (
    IdfQueryEncoder,
    IdfTable,
    load_tokenizer,
    tokenizer_file,
    tokenizer_vocabulary,
)
from lsr.errors import InputError
from lsr.vocab import Vocabulary

MANIFEST_FORMAT = "lsr.encoder/1"

_MLM_MODULES = {"MLMTransformer", "Transformer"}
_KNOWN_MODULES = _MLM_MODULES | {"SpladePooling", "SparseStaticEmbedding", "Router", "Asym"}
_TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
_HUGE = 1_000_000  # tokenizer_config model_max_length placeholders (1e30) mean "unset"


# -- reading a sentence-transformers SparseEncoder directory -------------------------------------
@dataclass
class _Module:
    type: str  # the full dotted type as written
    name: str  # class name
    path: Path


@dataclass
class SentenceTransformersLayout:
    """What a SparseEncoder directory says, mapped onto this package's configuration."""

    root: Path
    model_dir: Path  # the directory holding the MLM weights (config.json, *.safetensors)
    query_mode: str  # "siamese" | "inference-free"
    document: dict[str, Any]  # SideConfig fields
    query: dict[str, Any]
    idf: Path | None = None  # SparseStaticEmbedding weights: idf.json or model.safetensors
    query_tokenizer: Path | None = None  # the SparseStaticEmbedding's own tokenizer.json
    modules: list[str] = field(default_factory=list)  # every module type, for the manifest


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read JSON: {exc}", path) from None


def _read_json_if(path: Path) -> dict[str, Any]:
    return _read_json(path) if path.is_file() else {}


def _module(type_name: object, path: Path, where: Path) -> _Module:
    if not isinstance(type_name, str) or not type_name:
        raise InputError(f"module without a type: {type_name!r}", where)
    name = type_name.rsplit(".", 1)[-1]
    if not type_name.startswith("sentence_transformers.") or name not in _KNOWN_MODULES:
        raise InputError(
            f"unsupported sentence-transformers module {type_name!r} (supported: MLMTransformer "
            "or Transformer(fill-mask) + SpladePooling, SparseStaticEmbedding, Router)",
            where,
        )
    if not path.resolve().is_relative_to(where.parent.resolve()):
        raise InputError(f"module path {path} leaves the model directory", where)
    return _Module(type_name, name, path)


def _transformer_side(module: _Module) -> tuple[Path, dict[str, Any], dict[str, int | None]]:
    """(model dir, side fields, {"query": n, "document": n} per-task lengths) of an MLM module."""
    config: dict[str, Any] = {}
    for name in _TRANSFORMER_CONFIGS:
        if (module.path / name).is_file():
            config = _read_json(module.path / name)
            break
    default_task = "fill-mask" if module.name == "MLMTransformer" else "feature-extraction"
    task = config.get("transformer_task", default_task)
    if task != "fill-mask":
        raise InputError(
            f"{module.name} with transformer_task={task!r}: only 'fill-mask' (MLM logits) "
            "feeds SpladePooling here",
            module.path,
        )
    if config.get("do_lower_case"):
        raise InputError(f"{module.name}: do_lower_case=True is not supported", module.path)
    if not (module.path / "config.json").is_file():
        raise InputError("no config.json for the MLM weights", module.path)
    length = config.get("max_seq_length")
    if length is None:
        processor = config.get("processor_kwargs") or config.get("tokenizer_args") or {}
        length = processor.get("model_max_length")
    if length is None:
        length = _read_json_if(module.path / "tokenizer_config.json").get("model_max_length")
    if length is None or length >= _HUGE:
        length = _read_json_if(module.path / "config.json").get("max_position_embeddings", 512)
    per_task = {"query": config.get("query_length"), "document": config.get("document_length")}
    return module.path, {"family": "mlm", "max_length": int(length)}, per_task


def _pooling_fields(module: _Module) -> dict[str, Any]:
    config = _read_json_if(module.path / "config.json")
    strategy = config.get("pooling_strategy", "max")
    if strategy not in ("max", "sum"):
        raise InputError(
            f"SpladePooling pooling_strategy {strategy!r} is not supported", module.path
        )
    activation = config.get("activation_function", "relu")
    fields: dict[str, Any] = {"pooling": strategy}
    if activation == "relu":  # log1p(relu(x)): what every mlm side computes
        return fields
    if "activation" in SideConfig.model_fields:  # an encoder that knows other activations
        fields["activation"] = activation
        return fields
    raise InputError(
        f"SpladePooling activation_function {activation!r} is not supported (only 'relu', "
        "i.e. log1p(relu(logits)))",
        module.path,
    )


def _static_fields(module: _Module, root: Path) -> tuple[Path, Path | None, int]:
    """(weights file, tokenizer.json, max_length in word pieces) of a SparseStaticEmbedding."""
    config = _read_json_if(module.path / "config.json")
    weights: Path | None = None
    if isinstance(config.get("path"), str) and config["path"].endswith(".json"):
        for base in (module.path, root):
            if (base / config["path"]).is_file():
                weights = base / config["path"]
                break
        else:
            raise InputError(
                f"SparseStaticEmbedding idf file {config['path']!r} not found", module.path
            )
    else:
        for name in ("model.safetensors", "idf.json"):
            if (module.path / name).is_file():
                weights = module.path / name
                break
    if weights is None:
        found = "pytorch_model.bin" if (module.path / "pytorch_model.bin").is_file() else "nothing"
        raise InputError(
            f"SparseStaticEmbedding weights: need model.safetensors or idf.json, found {found}",
            module.path,
        )
    tok = module.path / "tokenizer.json"
    length = _read_json_if(module.path / "tokenizer_config.json").get("model_max_length")
    if length is None or length >= _HUGE:
        length = 512
    return weights, (tok if tok.is_file() else None), int(length)


def _route(config: dict[str, Any], task: str, where: Path) -> str:
    """The Router's route for ``task`` on text input (sentence-transformers' priority order)."""
    structure = config.get("structure") or {}
    params = config.get("parameters") or {}
    mappings: dict[tuple[Any, Any], str] = {}
    for key, value in (params.get("route_mappings") or {}).items():
        try:
            parsed = ast.literal_eval(key)
        except (ValueError, SyntaxError):
            continue
        if isinstance(parsed, tuple) and len(parsed) == 2:
            mappings[parsed] = value
    for key in ((task, "text"), (task, None), (None, "text"), (None, None)):
        if key in mappings:
            return mappings[key]
    if task in structure:
        return task
    if "text" in structure:
        return "text"
    default = params.get("default_route")
    if default is None and params.get("allow_empty_key", True) and structure:
        default = next(iter(structure))
    if default not in structure:
        raise InputError(f"Router has no route for {task!r} (routes: {sorted(structure)})", where)
    return default


def read_sentence_transformers(root: str | Path) -> SentenceTransformersLayout:
    """Map a SparseEncoder directory (``modules.json``) onto this package's configuration."""
    root = Path(root)
    modules_json = root / "modules.json"
    entries = _read_json(modules_json)
    if not isinstance(entries, list) or not entries:
        raise InputError("modules.json must be a non-empty list of modules", modules_json)
    top = [
        _module(
            e.get("type") if isinstance(e, dict) else None, root / e.get("path", ""), modules_json
        )
        for e in sorted(entries, key=lambda e: e.get("idx", 0) if isinstance(e, dict) else 0)
    ]
    types = [m.type for m in top]
    routes: dict[str, list[_Module]]
    if top[0].name in ("Router", "Asym"):
        router = top[0]
        config_path = router.path / "router_config.json"
        if not config_path.is_file():
            config_path = router.path / "config.json"  # the legacy Asym layout
        config = _read_json(config_path)
        if not isinstance(config, dict) or "types" not in config or "structure" not in config:
            raise InputError("router config needs 'types' and 'structure'", config_path)
        subs = {
            mid: _module(t, router.path / mid, config_path) for mid, t in config["types"].items()
        }
        types += [m.type for m in subs.values()]
        routes = {}
        for task in ("query", "document"):
            ids = config["structure"].get(_route(config, task, config_path), [])
            missing = [mid for mid in ids if mid not in subs]
            if missing:
                raise InputError(f"Router structure names unknown modules {missing}", config_path)
            routes[task] = [subs[mid] for mid in ids] + top[1:]
    else:
        routes = {"query": top, "document": top}
    if any(m.name in ("Router", "Asym") for ms in routes.values() for m in ms):
        raise InputError("a Router must be the first module and cannot be nested", modules_json)

    sides: dict[str, dict[str, Any]] = {}
    mlm_dirs: dict[str, Path] = {}
    idf = query_tokenizer = None
    for task in ("document", "query"):  # the document side first: its model dir is the fallback
        mods = routes[task]
        names = [m.name for m in mods]
        if names and names[0] in _MLM_MODULES and names[1:] == ["SpladePooling"]:
            model_dir, fields, per_task = _transformer_side(mods[0])
            fields.update(_pooling_fields(mods[1]))
            if per_task[task] is not None:
                fields["max_length"] = int(per_task[task])
            sides[task], mlm_dirs[task] = fields, model_dir
        elif task == "query" and names == ["SparseStaticEmbedding"]:
            idf, query_tokenizer, length = _static_fields(mods[0], root)
            # sentence-transformers tokenises SparseStaticEmbedding input without special tokens
            # and keeps model_max_length word pieces; our max_length counts the special tokens
            # (which are then dropped), so add room for them: the same word pieces are kept
            tok = load_tokenizer(query_tokenizer or tokenizer_file(mlm_dirs.get("document", root)))
            processor = tok.post_processor
            length += processor.num_special_tokens_to_add(False) if processor is not None else 0
            sides[task] = {"family": "idf", "max_length": length}
        else:
            raise InputError(
                f"unsupported {task} route {names or '(empty)'}: expected MLMTransformer/"
                "Transformer + SpladePooling (or SparseStaticEmbedding for queries)",
                root,
            )
    if "query" in mlm_dirs and mlm_dirs["query"].resolve() != mlm_dirs["document"].resolve():
        raise InputError(
            "separate query and document MLM models are not supported (one model per encoder)", root
        )

    st_config = _read_json_if(root / "config_sentence_transformers.json")
    prompts = {k: v for k, v in (st_config.get("prompts") or {}).items() if v}
    if prompts:
        raise InputError(f"prompts are not supported: {prompts}", root)
    similarity = st_config.get("similarity_fn_name")
    if similarity not in (None, "dot"):
        raise InputError(f"similarity {similarity!r} is not supported (sparse search is dot)", root)
    top_k = st_config.get("max_active_dims")
    if top_k is not None:
        for fields in sides.values():
            fields["top_k"] = int(top_k)
    return SentenceTransformersLayout(
        root=root,
        model_dir=mlm_dirs["document"],
        query_mode="inference-free" if idf is not None else "siamese",
        document=sides["document"],
        query=sides["query"],
        idf=idf,
        query_tokenizer=query_tokenizer,
        modules=types,
    )


# -- resolving the checkpoint --------------------------------------------------------------------
def _looks_like_hub_id(name: str) -> bool:
    return (
        not name.startswith((".", "/", "~"))
        and name.count("/") <= 1
        and "\\" not in name
        and all(part for part in name.split("/"))
    )


def _hub_snapshot_with_modules(repo_id: str) -> Path | None:
    """The local snapshot of a hub repo with ``modules.json``; None for a plain checkpoint."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    cached = try_to_load_from_cache(repo_id, "modules.json")
    if isinstance(cached, str):
        return Path(cached).parent
    if cached is not None or os.environ.get("HF_HUB_OFFLINE"):
        return None  # known absent, or offline: a plain checkpoint as far as we can tell
    try:
        hf_hub_download(repo_id, "modules.json")
    except LocalEntryNotFoundError:
        return None  # unreachable: transformers will report the real problem
    except EntryNotFoundError:
        return None
    except Exception as exc:
        raise InputError(f"cannot look up {repo_id!r} on the Hugging Face hub: {exc}") from None
    return Path(snapshot_download(repo_id))


def _resolve_source(model: str) -> tuple[Path | None, bool]:
    """(local directory or None for a hub id, whether it is a SparseEncoder directory)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError("a model must be a directory (or a hub id), not a file", path)
        if (path / "modules.json").is_file():
            return path, True
        if not (path / "config.json").is_file():
            raise InputError("not a model directory: no config.json or modules.json", path)
        return path, False
    if not _looks_like_hub_id(model):
        raise InputError("model directory not found", path)
    snapshot = _hub_snapshot_with_modules(model)
    return snapshot, snapshot is not None


def _side(base: SideConfig | dict[str, Any], update: Any) -> SideConfig:
    """``update`` (a SideConfig replaces, a dict updates) applied to ``base``."""
    base_fields = base.model_dump() if isinstance(base, SideConfig) else dict(base)
    if isinstance(update, SideConfig):
        return update
    if isinstance(update, Mapping):
        return SideConfig.model_validate({**base_fields, **update})
    raise InputError(f"a side config must be a SideConfig or a dict, got {update!r}")


def _normalised(config: EncoderConfig) -> EncoderConfig:
    """One spelling of inference-free: ``query_mode="inference-free"`` with an ``idf`` query side
    (either one implies the other, as in :func:`load_transformer_sides`)."""
    if config.query_mode == "inference-free" and config.query.family != "idf":
        query = config.query.model_copy(update={"family": "idf"})
        return config.model_copy(update={"query": query})
    if config.query.family == "idf" and config.query_mode != "inference-free":
        return config.model_copy(update={"query_mode": "inference-free"})
    return config


@dataclass
class ResolvedConfig:
    """The final configuration and where it came from (see :func:`resolve_config`)."""

    config: EncoderConfig
    source: str  # what the caller named
    layout: SentenceTransformersLayout | None
    local: Path | None  # local directory of config.model (None: a hub id)


def resolve_config(config: EncoderConfig | str | Path, **overrides: Any) -> ResolvedConfig:
    """The final :class:`EncoderConfig`: a SparseEncoder directory's settings under the caller's.

    Fields the caller set (explicitly in ``config``, or as ``overrides``) win over what a
    SparseEncoder directory says; a side given as a dict updates the directory's side field by
    field, a SideConfig replaces it.
    """
    if isinstance(config, str | Path):
        config = EncoderConfig(model=str(config))
    if not isinstance(config, EncoderConfig):
        raise TypeError(f"expected an EncoderConfig or a model path, got {type(config).__name__}")
    unknown = sorted(set(overrides) - set(EncoderConfig.model_fields))
    if unknown:
        raise InputError(f"unknown encoder settings: {', '.join(unknown)}")
    explicit = {name: getattr(config, name) for name in config.model_fields_set}
    explicit.update(overrides)
    source = str(explicit.get("model", config.model))
    local, is_st = _resolve_source(source)
    if not is_st:
        data = config.model_dump()
        for name, value in overrides.items():
            data[name] = _side(data[name], value) if name in ("query", "document") else value
        final = _normalised(EncoderConfig.model_validate(data))
        return ResolvedConfig(final, source, None, local)

    assert local is not None
    layout = read_sentence_transformers(local)
    data: dict[str, Any] = {
        "model": str(layout.model_dir),
        "query_mode": layout.query_mode,
        "query": SideConfig.model_validate(layout.query),
        "document": SideConfig.model_validate(layout.document),
        "idf": str(layout.idf) if layout.idf is not None else None,
    }
    for name, value in explicit.items():
        if name == "model":
            continue
        data[name] = _side(data[name], value) if name in ("query", "document") else value
    for name in EncoderConfig.model_fields:
        data.setdefault(name, getattr(config, name))
    if data["query_mode"] == "siamese" and layout.query_mode == "inference-free":
        raise InputError("this SparseEncoder has no query model: it is inference-free", local)
    final = _normalised(EncoderConfig.model_validate(data))
    return ResolvedConfig(final, source, layout, layout.model_dir)


def model_tokenizer(model: str) -> Path:
    """``tokenizer.json`` of a model: a local directory, a SparseEncoder directory or a hub id."""
    local, is_st = _resolve_source(model)
    if is_st and local is not None:
        local = read_sentence_transformers(local).model_dir
    if local is not None:
        return tokenizer_file(local)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, "tokenizer.json"))
    except Exception as exc:
        raise InputError(f"no tokenizer.json for {model!r}: {exc}") from None


def compute_idf(
    config: EncoderConfig | str | Path, texts: Iterable[str], **overrides: Any
) -> IdfTable:
    """IDF over ``texts`` with the model's tokenizer, truncated at the document side's max length.

    Only the tokenizer is loaded (no model, no torch). See :meth:`IdfTable.compute`.
    """
    resolved = resolve_config(config, **overrides)
    tok = (
        tokenizer_file(resolved.local)
        if resolved.local is not None
        else model_tokenizer(resolved.config.model)
    )
    return IdfTable.compute(texts, tok, max_length=resolved.config.document.max_length)


# -- loading -------------------------------------------------------------------------------------
def _query_side_for_idf(
    resolved: ResolvedConfig,
    doc_vocab: Vocabulary,
    idf_table: IdfTable | None,
    document: SideEncoder,
) -> IdfQueryEncoder:
    config = resolved.config
    layout = resolved.layout
    tok_path: Path | None = None
    if layout is not None and layout.query_tokenizer is not None:
        tok_path = layout.query_tokenizer
    elif resolved.local is not None and (resolved.local / "tokenizer.json").is_file():
        tok_path = resolved.local / "tokenizer.json"
    tokenizer: Any = tok_path
    if tokenizer is None:  # a hub model, or a directory with only vocab.txt: the fast tokenizer
        hf_tokenizer = getattr(getattr(document, "backbone", None), "tokenizer", None)
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        tokenizer = backend if backend is not None else model_tokenizer(config.model)
    vocab = tokenizer_vocabulary(tokenizer)
    if vocab != doc_vocab:
        raise InputError(
            f"the query tokenizer's vocabulary ({len(vocab):,} tokens) is not the document "
            f"model's ({len(doc_vocab):,})",
            tok_path,
        )
    if idf_table is None:
        if config.idf is None:
            raise InputError(
                "an inference-free encoder needs IDF weights: set config.idf (idf.json) or pass "
                "idf_table=compute_idf(config, corpus_texts)"
            )
        idf_table = IdfTable.load(config.idf, vocab)
    elif idf_table.vocab != vocab:
        raise InputError("idf_table was computed over another vocabulary")
    return IdfQueryEncoder(tokenizer, idf_table, config.query)


def load_encoder(
    config: EncoderConfig | str | Path,
    *,
    idf_table: IdfTable | None = None,
    **overrides: Any,
) -> Encoder:
    """An :class:`Encoder` for ``config`` (or a model path / hub id with ``overrides``).

    ``overrides`` are :class:`EncoderConfig` fields (``query_mode="inference-free"``,
    ``document={"max_length": 512}``, ...). For inference-free encoders the query side is an
    :class:`IdfQueryEncoder` over ``idf_table`` if given, else over ``config.idf`` (``idf.json``
    or a SparseStaticEmbedding ``model.safetensors``); with neither it is an InputError (compute
    the table first: :func:`compute_idf`). The returned encoder carries ``encoder.origin``, what
    :func:`encoder_manifest` records about where it came from.
    """
    resolved = resolve_config(config, **overrides)
    final = resolved.config
    if idf_table is not None and final.query_mode != "inference-free":
        raise InputError("idf_table is only used by inference-free encoders")
    from lsr.encoders.transformer import load_transformer_sides

    query, document = load_transformer_sides(final)
    if final.query_mode == "inference-free":
        query = _query_side_for_idf(resolved, document.vocab, idf_table, document)
    elif query is None:
        raise InputError("the transformer sides returned no query side for a siamese encoder")
    encoder = Encoder(final, query, document)
    encoder.origin = {  # type: ignore[attr-defined]
        "source": resolved.source,
        "format": "sentence-transformers" if resolved.layout is not None else "transformers",
        "local": str(resolved.local.resolve()) if resolved.local is not None else None,
        "st_root": str(resolved.layout.root.resolve()) if resolved.layout is not None else None,
        "st_modules": list(resolved.layout.modules) if resolved.layout is not None else None,
    }
    return encoder


def load_query_encoder(encoder_manifest: Mapping[str, Any], index_dir: str | Path) -> SideEncoder:
    """The query side of the encoder an index was built with (``encoder_manifest`` as stored).

    Inference-free: an :class:`IdfQueryEncoder` from the index's own ``tokenizer.json`` and
    ``idf.json`` (no model loaded, torch not imported), checked against the recorded vocabulary
    and IDF identities. Siamese: the model's query side (the model is loaded).
    """
    index_dir = Path(index_dir)
    if not isinstance(encoder_manifest, Mapping) or "config" not in encoder_manifest:
        raise InputError("not an encoder manifest (no 'config')", index_dir)
    config = EncoderConfig.model_validate(encoder_manifest["config"])
    if config.query_mode == "siamese":
        return load_encoder(config).query
    files = encoder_manifest.get("files") or {}
    tok = index_dir / files.get("tokenizer", "tokenizer.json")
    idf = index_dir / files.get("idf", "idf.json")
    for path in (tok, idf):
        if not path.is_file():
            raise InputError("missing from the index: inference-free queries need it", path)
    query = IdfQueryEncoder.from_files(tok, idf, config.query)
    want_vocab = (encoder_manifest.get("vocab") or {}).get("sha256")
    if want_vocab is not None and query.vocab.sha256 != want_vocab:
        raise InputError(
            "tokenizer.json does not match the vocabulary the index was built with", tok
        )
    want_idf = (encoder_manifest.get("idf") or {}).get("sha256")
    if want_idf is not None and query.idf.sha256 != want_idf:
        raise InputError("idf.json does not match the IDF table the index was built with", idf)
    return query


# -- describing ----------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (memoised on path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _model_files(directory: Path) -> dict[str, dict[str, Any]]:
    names = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix == ".safetensors")
    names += [directory / n for n in ("config.json", "tokenizer.json") if (directory / n).is_file()]
    return {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in names}


def _side_info(side: SideEncoder) -> dict[str, Any]:
    return {
        "family": side.config.family,
        "encoder": type(side).__name__,
        "random_head": getattr(side, "random_head", None),
    }


def encoder_manifest(encoder: Encoder) -> dict[str, Any]:
    """A JSON-able description of ``encoder`` for an index manifest.

    Shape::

        {"format": "lsr.encoder/1",
         "config": EncoderConfig dump (model = the resolved local directory or hub id),
         "model": {"source": what the caller named, "format": "transformers" |
                   "sentence-transformers", "local": absolute directory or None (hub id),
                   "hub_id": id or None, "files": {name: {"bytes", "sha256"}} (safetensors,
                   config.json, tokenizer.json of a local model; {} for a hub id),
                   "sentence_transformers": {"root", "modules"} or None},
         "vocab": {"size", "sha256"},
         "sides": {"query": {"family", "encoder", "random_head"}, "document": {...}},
         "idf": {"sha256", "nonzero", "n_docs", "source"} or None (siamese),
         "files": {"tokenizer": "tokenizer.json", "idf": "idf.json"} or None (siamese):
                  what the index directory must hold for load_query_encoder}
    """
    config = encoder.config
    origin = getattr(encoder, "origin", None) or {}
    local = origin.get("local")
    if local is None and Path(config.model).is_dir():
        local = str(Path(config.model).resolve())
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "config": config.model_dump(mode="json"),
        "model": {
            "source": origin.get("source", config.model),
            "format": origin.get("format", "transformers"),
            "local": local,
            "hub_id": None if local is not None else config.model,
            "files": _model_files(Path(local)) if local is not None else {},
            "sentence_transformers": (
                {"root": origin["st_root"], "modules": origin["st_modules"]}
                if origin.get("st_root")
                else None
            ),
        },
        "vocab": {"size": len(encoder.vocab), "sha256": encoder.vocab.sha256},
        "sides": {"query": _side_info(encoder.query), "document": _side_info(encoder.document)},
        "idf": None,
        "files": None,
    }
    if isinstance(encoder.query, IdfQueryEncoder):
        table = encoder.query.idf
        manifest["idf"] = {
            "sha256": table.sha256,
            "nonzero": int((table.weights != 0).sum()),
            "n_docs": table.n_docs,
            "source": table.source,
        }
        manifest["files"] = {"tokenizer": "tokenizer.json", "idf": "idf.json"}
    return manifest


__all__ = [
    "ResolvedConfig",
    "SentenceTransformersLayout",
    "compute_idf",
    "encoder_manifest",
    "file_sha256",
    "load_encoder",
    "load_query_encoder",
    "model_tokenizer",
    "read_sentence_transformers",
    "resolve_config",
]
