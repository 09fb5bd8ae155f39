"""Load an :class:`~lsr.encoders.base.Encoder` (or only its query side) from a checkpoint.

Two kinds of checkpoint (a local directory or a Hugging Face hub id):

* **A plain masked-LM / causal-LM checkpoint** (``config.json`` + weights + tokenizer). The model
  sides come from :func:`lsr.encoders.sides.load_transformer_sides`; an inference-free
  encoder gets an :class:`~lsr.encoders.idf_side.IdfQueryEncoder` as its query side.
* **A sentence-transformers ``SparseEncoder`` directory** (``modules.json``): its files are read
  (never its code) by :mod:`lsr.encoders.st_layout` into the same settings.

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

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lsr.encoders.base import Encoder, SideEncoder
from lsr.encoders.config import EncoderConfig
from lsr.encoders.idf_side import IdfQueryEncoder
from lsr.encoders.idf_table import IdfTable
from lsr.encoders.resolve import ResolvedConfig, model_tokenizer, resolve_config
from lsr.encoders.tokenizer import tokenizer_file, tokenizer_vocabulary
from lsr.errors import InputError
from lsr.extras import require
from lsr.vocab import Vocabulary


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
    if idf_table is not None and not final.inference_free:
        raise InputError("idf_table is only used by inference-free encoders")
    query, document = _model_sides("torch", "transformers")(final)
    assert document is not None
    if final.inference_free:
        query = _query_side_for_idf(resolved, document.vocab, idf_table, document)
    assert query is not None
    return Encoder(final, query, document, origin=_origin(resolved))


def _model_sides(*modules: str) -> Any:
    """:func:`lsr.encoders.sides.load_transformer_sides`, or a clear error when ``modules`` (what
    the caller needs at least: torch; transformers to encode documents) are missing."""
    require("a model-backed encoder (siamese queries, document encoding)", *modules)
    from lsr.encoders.sides import load_transformer_sides

    return load_transformer_sides


def _origin(resolved: ResolvedConfig) -> dict[str, Any]:
    layout = resolved.layout
    return {
        "source": resolved.source,
        "format": "sentence-transformers" if layout is not None else "transformers",
        "local": str(resolved.local.resolve()) if resolved.local is not None else None,
        "st_root": str(layout.root.resolve()) if layout is not None else None,
        "st_modules": list(layout.modules) if layout is not None else None,
    }


def load_query_encoder(
    encoder_manifest: Mapping[str, Any], index_dir: str | Path, *, model: str | None = None
) -> SideEncoder:
    """The query side of the encoder an index was built with (``encoder_manifest`` as stored).

    Inference-free: an :class:`IdfQueryEncoder` from the index's own ``tokenizer.json`` and
    ``idf.json`` (no model loaded, torch not imported), checked against the recorded vocabulary
    and IDF identities. Siamese: the model's query side only (the document side is not built),
    from the absolute path the manifest records (a hub id stays a hub id), or from ``model``
    when given: a copy of the same model elsewhere (its files must match the recorded ones).
    """
    index_dir = Path(index_dir)
    if not isinstance(encoder_manifest, Mapping) or "config" not in encoder_manifest:
        raise InputError("not an encoder manifest (no 'config')", index_dir)
    config = EncoderConfig.model_validate(encoder_manifest["config"])
    if not config.inference_free:
        return _siamese_query_side(encoder_manifest, config, model, index_dir)
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


def _siamese_query_side(
    encoder_manifest: Mapping[str, Any],
    config: EncoderConfig,
    model: str | None,
    index_dir: Path,
) -> SideEncoder:
    from lsr.encoders.manifest import model_files

    recorded = encoder_manifest.get("model") or {}
    if model is None:
        local = recorded.get("local")  # absolute since the index was built; None for a hub id
        if local is not None and not Path(local).is_dir():
            raise InputError(
                f"this siamese index encodes queries with the model at {local} "
                f"(built from {recorded.get('source', local)!r}), which is not there any more: "
                "pass --model (Retriever.open(..., model=)) with the path of a copy of it",
                index_dir,
            )
        resolved = resolve_config(config, model=local) if local is not None else None
    else:
        resolved = resolve_config(config, model=model)
    final = resolved.config if resolved is not None else config
    if model is not None and resolved is not None and resolved.local is not None:
        want = recorded.get("files") or {}
        have = model_files(resolved.local)
        changed = sorted(
            n for n in want if want[n].get("sha256") != (have.get(n) or {}).get("sha256")
        )
        if changed:
            raise InputError(
                f"not the model this index was built with: {', '.join(changed)} differ from "
                "the recorded files",
                model,
            )
    # BERT-family query sides run without transformers (backbone.load_lean_backbone); others
    # ask for it when they load
    query, _ = _model_sides("torch")(final, document=False)
    assert query is not None
    want_vocab = (encoder_manifest.get("vocab") or {}).get("sha256")
    if want_vocab is not None and query.vocab.sha256 != want_vocab:
        raise InputError("the model's vocabulary is not the one the index was built with", model)
    return query
