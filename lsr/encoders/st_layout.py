"""A sentence-transformers ``SparseEncoder`` directory (``modules.json``) read as lsr settings.

Its files are read, never its code: ``MLMTransformer`` /
``Transformer(transformer_task="fill-mask")`` + ``SpladePooling`` become an ``mlm`` side (model =
the directory holding the MLM weights, pooling, max length), a ``SparseStaticEmbedding`` becomes
the IDF query side (its ``model.safetensors`` weights or ``idf.json``), a ``Router`` picks the
query and document routes (inference-free when the query route is a ``SparseStaticEmbedding``).
lsr's own trained students (``lsr.train.mlp_student.MlpStudent``: an ``mlp`` side;
``lsr.train.decoder_student.CausalSpladeStudent``: an ``mlm`` side over a causal LM, with its
``echo`` setting) are one module each, read from their folder's ``sentence_bert_config.json``.
Anything else is an :class:`~lsr.errors.InputError` naming the module type. Settings that this
package's encoders cannot reproduce (prompts, a non-dot similarity, ``do_lower_case``) are errors
too, not silently different vectors.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsr.encoders.tokenizer import load_tokenizer, tokenizer_file
from lsr.errors import InputError
from lsr.io import read_json, read_json_object

_MLM_MODULES = {"MLMTransformer", "Transformer"}
_KNOWN_MODULES = _MLM_MODULES | {"SpladePooling", "SparseStaticEmbedding", "Router", "Asym"}
# lsr's trained students (lsr.train): full type -> the side's family
_STUDENT_MODULES = {
    "lsr.train.mlp_student.MlpStudent": "mlp",
    "lsr.train.decoder_student.CausalSpladeStudent": "mlm",
}
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
    echo: bool | None = None  # a trained causal student's echo setting (None: lsr's default)


def _module(type_name: object, path: Path, where: Path) -> _Module:
    if not isinstance(type_name, str) or not type_name:
        raise InputError(f"module without a type: {type_name!r}", where)
    name = type_name.rsplit(".", 1)[-1]
    known = type_name.startswith("sentence_transformers.") and name in _KNOWN_MODULES
    if not known and type_name not in _STUDENT_MODULES:
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
            config = read_json(module.path / name)
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
        length = read_json_object(module.path / "tokenizer_config.json").get("model_max_length")
    if length is None or length >= _HUGE:
        length = read_json_object(module.path / "config.json").get("max_position_embeddings", 512)
    per_task = {"query": config.get("query_length"), "document": config.get("document_length")}
    return module.path, {"family": "mlm", "max_length": int(length)}, per_task


def _pooling_fields(module: _Module) -> dict[str, Any]:
    config = read_json_object(module.path / "config.json")
    strategy = config.get("pooling_strategy", "max")
    if strategy not in ("max", "sum"):
        raise InputError(
            f"SpladePooling pooling_strategy {strategy!r} is not supported", module.path
        )
    activation = config.get("activation_function", "relu")
    fields: dict[str, Any] = {"pooling": strategy}
    if activation == "relu":  # log1p(relu(x)): what every mlm side computes
        return fields
    raise InputError(
        f"SpladePooling activation_function {activation!r} is not supported (only 'relu', "
        "i.e. log1p(relu(logits)))",
        module.path,
    )


def _static_fields(module: _Module, root: Path) -> tuple[Path, Path | None, int]:
    """(weights file, tokenizer.json, max_length in word pieces) of a SparseStaticEmbedding."""
    config = read_json_object(module.path / "config.json")
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
    length = read_json_object(module.path / "tokenizer_config.json").get("model_max_length")
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
    entries = read_json(modules_json)
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
        config = read_json(config_path)
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
    echo: bool | None = None
    for task in ("document", "query"):  # the document side first: its model dir is the fallback
        mods = routes[task]
        names = [m.name for m in mods]
        if names and names[0] in _MLM_MODULES and names[1:] == ["SpladePooling"]:
            model_dir, fields, per_task = _transformer_side(mods[0])
            fields.update(_pooling_fields(mods[1]))
            if per_task[task] is not None:
                fields["max_length"] = int(per_task[task])
            sides[task], mlm_dirs[task] = fields, model_dir
        elif len(mods) == 1 and mods[0].type in _STUDENT_MODULES:
            settings = read_json_object(mods[0].path / "sentence_bert_config.json")
            if "max_seq_length" not in settings:
                raise InputError("student module without max_seq_length", mods[0].path)
            family = _STUDENT_MODULES[mods[0].type]
            sides[task] = {"family": family, "max_length": int(settings["max_seq_length"])}
            mlm_dirs[task] = mods[0].path
            if settings.get("echo") is not None:
                echo = bool(settings["echo"])
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

    st_config = read_json_object(root / "config_sentence_transformers.json")
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
        echo=echo,
    )
