"""A real-text benchmark collection: WordNet glosses and GCIDE definitions, with headword queries.

Both sources install offline from Debian (``apt-get install wordnet-base dict-gcide``):

* **WordNet 3.0** (``/usr/share/wordnet/data.{noun,verb,adj,adv}``): one document per synset, id
  ``wn:<pos>:<offset>`` (pos ``n``/``v``/``a``/``r`` from the file; adjective satellites are
  ``a``). Title: the synset's lemmas (underscores as spaces, adjective markers such as ``(a)``
  removed) joined by ``", "``; text: the gloss with its example sentences.
* **GCIDE** (``/usr/share/dictd/gcide.{index,dict.dz}``, dictd format: index lines
  ``headword TAB base64 offset TAB base64 length`` into the dictzip (gzip) text). An *entry* is a
  distinct (offset, length) span, numbered ``n`` from 0 in file order (the ``00-database-*``
  metadata spans are skipped). Its header (headwords with ``\\pronunciation\\``, part of speech,
  etymology in brackets, a leading domain label) is removed. An entry with numbered senses
  (``1.``, ``2.``, ...) gives one document per sense; sub-senses ``(a)``, ``(b)`` and ``Note:``
  paragraphs stay with their sense. A phrase sub-entry (a paragraph opening with ``{Bank
  swallow}, ...``) gives its own document titled by its phrase(s). An entry that yields one
  document gets id ``gcide:<n>``, one that yields several gets ``gcide:<n>.<k>`` (``k`` from 1 in
  entry order). Markup is stripped: source tags (``[1913 Webster]``, ``[WordNet 1.5]``, ...),
  braces of cross references, quotation paragraphs with their ``--Author.`` citations (and inline
  citations), and accent codes (``[a^]``, ``["e]``, ``[ae]``, ... become plain letters).

Output is a BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``). Titles are
the headwords, and the text does **not** repeat them: ``lsr.corpus`` (``iter_corpus`` /
``load_beir``) indexes a document as ``title + " " + text``, so the indexed text of every document
starts with its headword(s) exactly once. A loader that drops titles loses the headword.

Queries imitate MS MARCO's definition questions: a seeded sample of headwords (normalized:
lowercase, accents and adjective markers removed) that have at least one document, each phrased
by one of :data:`TEMPLATES` ("what is X", "X definition", "define X", "meaning of X"). Every
document whose title lists X is relevant (grade 1): all WordNet senses and all GCIDE senses of X.
Because titles are in the indexed text, X always occurs in the relevant documents, but X also
occurs in the text of many non-relevant ones (cross references, examples, other headwords'
definitions), so the query is not answered by exact matching alone; headwords with more than
``max_relevant`` documents (default 50) are not sampled, nor are taxon names such as "genus
homo" (see :func:`make_queries`). Sampled headwords are not removed from the corpus.

The same sources, arguments and seed give byte-identical files. Run::

    python -m eval.realtext --out eval/work/realtext [--max-docs N] [--queries 1000] [--seed 0]

**Vectors** (:func:`encode`): the ``encode`` subcommand writes the collection's splade-tiny
vectors in the layout of ``shared/data/vectors/scifact-splade-tiny``: ``docs.jsonl.gz`` (every
document, title + " " + text as :func:`lsr.corpus.iter_corpus` gives it, in corpus order),
``queries-siamese.jsonl.gz`` (the model's query side), ``queries-idf.jsonl.gz`` (inference-free:
an IDF table computed over the encoded documents' texts, tokenised and truncated as the document
side sees them, the convention of :mod:`lsr.encoders.idf_table`), JsonVectorCollection lines
``{"id", "vector"}`` with weights rounded to 4 decimals (a weight that rounds to 0 is dropped),
and ``README.json`` (settings, counts, timings, machine), written last. Documents are encoded in
chunks whose vectors are kept under ``<out>/.parts/`` until all are done, so an interrupted run
resumes where it stopped; every output file is written to a temporary name and renamed. ::

    python -m eval.realtext encode --corpus eval/work/realtext --out eval/work/realtext-splade-tiny
        [--model ../shared/models/splade-tiny] [--doc-max-length 128] [--max-docs N]
        [--batching invariant|padded] [--batch-size 32]

On these short texts (27 tokens on average) lsr's default ``invariant`` batching (one forward
pass per text) is about 3.5x slower on 2 CPU cores than ``--batching padded`` (length-sorted
batches of 32: 839 vs 237 docs/s on an evenly spread 5,000, where the two agreed to 4 decimals
on 4,889 documents and differed by 0.0001 at most); the full collection was encoded padded, at
956 docs/s (325 s). ``--max-docs N`` times an evenly spread subset before a full run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORDNET_DIR = Path("/usr/share/wordnet")
GCIDE_INDEX = Path("/usr/share/dictd/gcide.index")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
WORDNET_FILES = (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r"))
TEMPLATES = ("what is {}", "{} definition", "define {}", "meaning of {}")


@dataclass(frozen=True)
class Doc:
    """One document: its id, title (headwords), text, and the normalized headwords it defines."""

    doc_id: str
    title: str
    text: str
    heads: tuple[str, ...]


def normalize_headword(word: str) -> str:
    """Query/match key of a headword: no accents, lowercase, ``_`` as space, single spaces."""
    word = unicodedata.normalize("NFKD", word.replace("_", " "))
    word = "".join(c for c in word if not unicodedata.combining(c))
    return " ".join(word.lower().split())


def _collapse(text: str) -> str:
    return " ".join(text.split())


# -- WordNet -------------------------------------------------------------------------------------
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_wordnet_line(line: str, pos: str) -> Doc | None:
    """A ``data.<pos>`` line as a document; ``None`` for the license header lines."""
    if not line or line.startswith(" "):
        return None
    fields, _, gloss = line.partition(" | ")
    parts = fields.split()
    offset, w_cnt = parts[0], int(parts[3], 16)
    lemmas: list[str] = []
    for word in parts[4 : 4 + 2 * w_cnt : 2]:
        lemma = _ADJ_MARKER.sub("", word).replace("_", " ")
        if lemma not in lemmas:
            lemmas.append(lemma)
    heads = tuple(dict.fromkeys(normalize_headword(w) for w in lemmas))
    return Doc(f"wn:{pos}:{offset}", ", ".join(lemmas), _collapse(gloss), heads)


def iter_wordnet(directory: Path = WORDNET_DIR) -> Iterator[Doc]:
    """Every synset of ``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``, in file order."""
    for name, pos in WORDNET_FILES:
        with open(directory / f"data.{name}", encoding="utf-8") as handle:
            for line in handle:
                doc = parse_wordnet_line(line.rstrip("\n"), pos)
                if doc is not None:
                    yield doc


# -- dictd / GCIDE -------------------------------------------------------------------------------
_B64 = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


def decode_b64_number(text: str) -> int:
    """dictd's base64 number (most significant digit first, ``A`` = 0)."""
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def read_dictd_spans(index_path: Path) -> list[tuple[int, int]]:
    """The distinct (offset, length) spans of a dictd index, by offset; metadata spans skipped."""
    heads: dict[tuple[int, int], list[str]] = {}
    with open(index_path, encoding="utf-8") as handle:
        for line in handle:
            head, offset, length = line.rstrip("\n").split("\t")
            span = (decode_b64_number(offset), decode_b64_number(length))
            heads.setdefault(span, []).append(head)
    return sorted(s for s, h in heads.items() if not all(w.startswith("00-") for w in h))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # three GCIDE entries hold stray cp1252 quotes
        return raw.decode("cp1252", errors="replace")


def iter_dictd_entries(index_path: Path, dict_path: Path) -> Iterator[tuple[int, str]]:
    """``(entry number, entry text)`` for each span of a dictd dictionary (``.dict`` or ``.dz``)."""
    opener = gzip.open if dict_path.suffix in (".dz", ".gz") else open
    with opener(dict_path, "rb") as handle:
        data = handle.read()
    spans = read_dictd_spans(index_path)
    for n, (offset, length) in enumerate(spans):
        entry = _decode(data[offset : offset + length]).rstrip()
        if n + 1 < len(spans):  # some spans end with the next entry's headword: cut it
            start = spans[n + 1][0]
            following = _decode(data[start : start + 200]).split("\\", 1)[0].strip()
            if following and "\n" not in following and entry.endswith(following):
                entry = entry[: -len(following)].rstrip()
        yield n, entry


_SOURCE = (
    r"(?:1913 Webster|Webster 1913 Suppl\.|Webster 1913|WordNet(?: [\d.]+| sense \d+)?|PJC\.?"
    r"|AS|RDH|RHUD|MI11|Century Dict\.(?: \d+)?)"
)
_SOURCE_TAG = re.compile(rf"\[\s*{_SOURCE}(?:\s*\+?\s*{_SOURCE})*\s*\]")
_NAMED_CODES = {
    "ae": "ae", "AE": "AE", "oe": "oe", "OE": "OE", "ng": "ng", "th": "th", "eth": "th",
    "thorn": "th", "add": "a", "udd": "u", "asl": "a", "imac": "i", "aum": "a", "yogh": "y",
    "deg": "°", "root": "√", "sect": "§", "pounds": "£", "sharp": "♯", "flat": "♭",
    "dsdot": "", "bprime": "'", "prime": "'", "bar": "", "sec": "″", "min": "′",
}  # fmt: skip
_ACCENT_CODE = re.compile(r"\[([=.\-~\"'`^,*]?)([A-Za-z]{1,2})(\^?)\]")
_NAMED_CODE = re.compile(r"\[([A-Za-z]+)\]")
_CITATION = re.compile(r"\s*--(?=[A-Z0-9])[^\n]*")
# Run-on derived forms with stress marks: "-- Ab`sent-mind"ed*ness, n.".
_DERIVATIVE = re.compile(
    r"(?:--\s*)?\b[\w-]*\w[*\"`]\w[\w*\"`-]*\s*(?:\([^()]*\)\s*)?,\s*(?:[a-z]{1,5}\.\s?){1,3}"
)
_SYN_DASH = re.compile(r"Syn\.\s*-+\s*")


def _greek(name: str) -> str | None:
    case = "CAPITAL" if name[0].isupper() else "SMALL"
    try:
        return unicodedata.lookup(f"GREEK {case} LETTER {name.upper()}")
    except KeyError:
        return None


def _named(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _NAMED_CODES:
        return _NAMED_CODES[name]
    greek = _greek(name) if len(name) > 1 else None
    return greek if greek is not None else match.group(0)


def _accent(match: re.Match[str]) -> str:
    if match.group(1) or match.group(3):
        return match.group(2)
    return _NAMED_CODES.get(match.group(2), match.group(0))


def clean_markup(text: str) -> str:
    """GCIDE body text as plain text: no source tags, citations, braces or accent codes."""
    text = _SOURCE_TAG.sub(" ", text).replace("{", "").replace("}", "")
    text = _DERIVATIVE.sub(" ", text)
    text = _CITATION.sub(" ", text)
    text = _ACCENT_CODE.sub(_accent, text)
    text = _NAMED_CODE.sub(_named, text)
    text = _SYN_DASH.sub("", text)
    return _collapse(text.replace("Syn:", "Synonyms:"))


# The header: headwords each followed by \pron\, then grammar, etymology and labels, in any order.
_HEADWORD = re.compile(r"\s*([^\\\n(){}\[\],;]+?)\s*\\[^\\]*\\")
_HEADER_TOKEN = re.compile(
    r"\s+|[,;:.&]|\{[^{}]*\}|\((?:[^()]|\([^()]*\))*\)"
    r"|(?:n|v|a|adj|adv|prep|conj|interj|pron|pl|sing|t|i|superl|compar|fem|masc"
    r"|pref|suff|abbr|poss|inf|obs|E|L|F|Gr|OE|AS|NL|It|Sp|G|Lat|prop|sing)\.(?=\W)"
    r"|(?:or|and|also|sing|pl)(?=\W)"
)


def _bracket_end(text: str, start: int) -> int:
    """End of the balanced ``[...]`` group opening at ``start`` (``start`` when unbalanced)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
    return start


def split_header(entry: str) -> tuple[list[str], str]:
    """An entry's headwords and its body (the text after the header)."""
    lines = entry.split("\n")
    first = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if first is None:  # no header line: not an entry
        return [], ""
    text = "\n".join(lines[first:])
    heads: list[str] = []
    pos = 0
    while pos < len(text):
        match = _HEADWORD.match(text, pos)
        if match:
            for word in re.split(r",\s*|\s+or\s+", match.group(1)):
                if word.strip() and word.strip() != "or":
                    heads.append(word.strip())
            pos = match.end()
            continue
        if text.startswith("[", pos):
            end = _bracket_end(text, pos)
            if end > pos:
                pos = end
                continue
        match = _HEADER_TOKEN.match(text, pos)
        if not match or not match.group(0):
            break
        pos = match.end()
    if not heads:  # no \pron\: the first line up to a comma is the headword
        head = lines[first].split(",")[0].strip()
        return ([head] if head else []), "\n".join(lines[first + 1 :])
    return heads, text[pos:]


_SENSE = re.compile(r"^\s{0,4}(\d+)\.\s+")
_SUBSENSE = re.compile(r"^\s*\([a-z]\)\s")
_SUBENTRY = re.compile(
    r"^((?:\{[^{}]+\}\s*(?:\([^()]*\)\s*)?(?:,|\bor\b)?\s*)+?)(?:\([^()]*\)\s*)?,\s*(.*)$", re.S
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def split_body(body: str) -> tuple[list[str], list[tuple[list[str], str]]]:
    """A GCIDE body as (senses, sub-entries): the text of each sense (unnumbered text before the
    first numbered sense counts as a sense when non-empty) and each sub-entry's phrases and text.

    Quotation paragraphs (indented 9+ columns after a blank or source-tag line) are dropped."""
    # Everything after the last source tag is the next entry's headword, leaked into this span.
    tags = list(_SOURCE_TAG.finditer(body))
    if tags:
        body = body[: tags[-1].end()]
    blocks: list[tuple[str, list[str]]] = [("sense", [])]  # (kind, lines)
    after_break, in_quote = True, False
    for i, raw in enumerate(body.split("\n")):
        indent = 3 if i == 0 else _indent(raw)
        tagged = _SOURCE_TAG.search(raw)
        line = _SOURCE_TAG.sub("", raw)
        if not line.strip():
            after_break, in_quote = True, False
            continue
        stripped = line.strip()
        opener = _SENSE.match(line) or _SUBSENSE.match(line)
        if in_quote or (after_break and indent >= 9 and not opener and i > 0):
            in_quote = not tagged
            after_break = bool(tagged)
            continue
        sense = _SENSE.match(line) if indent <= 4 else None
        if sense:
            blocks.append(("sense", [line[sense.end() :]]))
        elif after_break and indent <= 4 and stripped.startswith("{"):
            blocks.append(("sub", [stripped]))
        else:
            blocks[-1][1].append(stripped.removeprefix("Note:"))
        after_break = bool(tagged)
    senses: list[str] = []
    subs: list[tuple[list[str], str]] = []
    for kind, block_lines in blocks:
        joined = "\n".join(block_lines)
        if kind == "sub":
            match = _SUBENTRY.match(joined)
            if match:
                phrases = [clean_markup(p) for p in re.findall(r"\{([^{}]+)\}", match.group(1))]
                text = clean_markup(match.group(2))
                if text and phrases:
                    subs.append((phrases, text))
                continue
            if senses:  # not a phrase definition: part of the preceding sense
                senses[-1] = _collapse(f"{senses[-1]} {clean_markup(joined)}")
                continue
        senses.append(clean_markup(joined))
    return [s for s in senses if s], subs


_TAG_TAIL = re.compile(rf"({_SOURCE_TAG.pattern})[ \t]+(?=\S)")
_ENTRY_START = re.compile(r"^(?=[^\s\\][^\n]*\\[^\\\n]+\\)", re.M)
_WORDY = re.compile(r"\w")


def parse_gcide_entry(n: int, entry: str) -> list[Doc]:
    """The documents of GCIDE entry ``n``: one per sense and one per phrase sub-entry.

    A few dictd spans hold more than one dictionary entry (a new header line, or text after a
    source tag on its line); each is parsed on its own and numbered on."""
    parts: list[tuple[str, str, tuple[str, ...]]] = []
    for chunk in _ENTRY_START.split(_TAG_TAIL.sub(r"\1\n", entry)):
        heads, body = split_header(chunk)
        title = ", ".join(clean_markup(h) for h in heads)
        if not title or not chunk.strip():
            continue
        senses, subs = split_body(body)
        keys = tuple(dict.fromkeys(normalize_headword(clean_markup(h)) for h in heads))
        parts.extend((title, text, keys) for text in senses if _WORDY.search(text))
        for phrases, text in subs:
            if _WORDY.search(text):
                pkeys = tuple(dict.fromkeys(normalize_headword(p) for p in phrases))
                parts.append((", ".join(phrases), text, pkeys))
    if len(parts) == 1:
        return [Doc(f"gcide:{n}", *parts[0])]
    return [Doc(f"gcide:{n}.{k}", *part) for k, part in enumerate(parts, start=1)]


def iter_gcide(index_path: Path = GCIDE_INDEX, dict_path: Path = GCIDE_DICT) -> Iterator[Doc]:
    """Every GCIDE document, in entry order."""
    for n, entry in iter_dictd_entries(index_path, dict_path):
        yield from parse_gcide_entry(n, entry)


# -- queries and output --------------------------------------------------------------------------
_QUERYABLE = re.compile(r"^[a-z][a-z' -]*[a-z]$")
_TAXON = re.compile(
    r"^(?:(?:sub|super|infra)?(?:kingdom|phylum|division|class|order|family|genus|tribe) )"
)  # WordNet's "family Pteroclididae", "genus Homo": no one asks "what is genus homo"


def make_queries(
    docs: list[Doc],
    n_queries: int,
    seed: int,
    *,
    max_relevant: int = 50,
    max_words: int = 3,
) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """``n_queries`` seeded headword queries and their qrels (judged doc ids in corpus order).

    Candidates: headwords of at least 3 characters (``a-z``, space, hyphen, apostrophe), at most
    ``max_words`` words, not a WordNet taxon name ("genus homo"), with 1 to ``max_relevant``
    documents."""
    by_head: dict[str, list[str]] = {}
    for doc in docs:
        for head in doc.heads:
            by_head.setdefault(head, []).append(doc.doc_id)
    candidates = sorted(
        h
        for h, ids in by_head.items()
        if len(h) >= 3 and _QUERYABLE.match(h) and not _TAXON.match(h)
        and len(h.split()) <= max_words
        and len(ids) <= max_relevant
    )  # fmt: skip
    rng = random.Random(seed)
    chosen = rng.sample(candidates, min(n_queries, len(candidates)))
    queries, qrels = [], {}
    width = len(str(max(len(chosen) - 1, 0)))
    for i, head in enumerate(chosen):
        qid = f"q{i:0{width}d}"
        queries.append((qid, rng.choice(TEMPLATES).format(head)))
        qrels[qid] = by_head[head]
    return queries, qrels


def write_beir(
    out: Path,
    docs: Iterable[Doc],
    queries: list[tuple[str, str]],
    qrels: dict[str, list[str]],
) -> None:
    """``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` under ``out``."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        for doc in docs:
            record = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        for qid, text in queries:
            handle.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8", newline="\n") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, _ in queries:
            for doc_id in qrels[qid]:
                handle.write(f"{qid}\t{doc_id}\t1\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(
    out: Path,
    *,
    wordnet_dir: Path = WORDNET_DIR,
    gcide_index: Path = GCIDE_INDEX,
    gcide_dict: Path = GCIDE_DICT,
    max_docs: int | None = None,
    n_queries: int = 1000,
    seed: int = 0,
    max_relevant: int = 50,
) -> dict[str, float]:
    """Parse both sources, sample queries, write the BEIR directory; returns summary numbers.

    With ``max_docs``, a seeded random subset of that many documents (kept in corpus order) is
    written and queries are drawn from its headwords."""
    start = time.perf_counter()
    docs = list(iter_wordnet(wordnet_dir))
    n_wordnet = len(docs)
    _log(f"realtext: {n_wordnet} WordNet synsets ({time.perf_counter() - start:.1f} s)")
    docs.extend(iter_gcide(gcide_index, gcide_dict))
    _log(f"realtext: {len(docs) - n_wordnet} GCIDE documents ({time.perf_counter() - start:.1f} s)")
    if max_docs is not None and max_docs < len(docs):
        keep = sorted(random.Random(f"docs-{seed}").sample(range(len(docs)), max_docs))
        docs = [docs[i] for i in keep]
    queries, qrels = make_queries(docs, n_queries, seed, max_relevant=max_relevant)
    write_beir(Path(out), docs, queries, qrels)
    lengths = [len(f"{d.title} {d.text}".split()) for d in docs]
    return {
        "docs": len(docs),
        "wordnet_docs": sum(d.doc_id.startswith("wn:") for d in docs),
        "queries": len(queries),
        "judgements": sum(len(v) for v in qrels.values()),
        "mean_words": statistics.fmean(lengths) if lengths else 0.0,
        "median_words": statistics.median(lengths) if lengths else 0.0,
        "seconds": time.perf_counter() - start,
    }


# -- vectors -------------------------------------------------------------------------------------
SHARED = Path(os.environ.get("LSR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SPLADE_TINY = SHARED / "models" / "splade-tiny"
VECTOR_FILES = {
    "docs": "docs.jsonl.gz",
    "siamese": "queries-siamese.jsonl.gz",
    "inference-free": "queries-idf.jsonl.gz",
}
DECIMALS = 4  # what the stored SciFact vectors print


def spread_positions(n: int, k: int | None) -> list[int]:
    """``k`` positions spread evenly over ``range(n)``, ascending (all of them when ``k`` is None
    or at least ``n``): a subset with the whole collection's mix of sources and lengths."""
    if k is None or k >= n:
        return list(range(n))
    return [i * n // k for i in range(k)]


def chunk_spans(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive chunks of at most ``size`` items covering ``range(n)``."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def vector_lines(batch: Any, decimals: int = DECIMALS) -> Iterator[tuple[str, int]]:
    """Each row of a SparseBatch as a JsonVectorCollection line (weights rounded to ``decimals``,
    weights that round to 0 dropped, terms in id order) and its number of terms."""
    matrix = batch.matrix.tocsr()
    matrix.sort_indices()
    tokens = batch.vocab.tokens
    indptr, indices, data = matrix.indptr.tolist(), matrix.indices.tolist(), matrix.data.tolist()
    for row, doc_id in enumerate(batch.ids):
        lo, hi = indptr[row], indptr[row + 1]
        vector = {}
        for t, w in zip(indices[lo:hi], data[lo:hi], strict=True):
            w = round(w, decimals)
            if w > 0:
                vector[tokens[t]] = w
        line = json.dumps({"id": doc_id, "vector": vector}, ensure_ascii=False)
        yield line + "\n", len(vector)


def write_vectors(path: Path, batches: Iterable[Any], decimals: int = DECIMALS) -> list[int]:
    """Write batches as one gzip JsonVectorCollection file, atomically; returns terms per row."""
    from lsr.io import atomic_write

    terms: list[int] = []

    def write(tmp: Path) -> None:
        terms.clear()
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6, newline="\n") as handle:
            for batch in batches:
                for line, n in vector_lines(batch, decimals):
                    handle.write(line)
                    terms.append(n)

    atomic_write(path, write)
    return terms


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)
    return {
        "mean": statistics.fmean(ordered),
        "p50": float(ordered[len(ordered) // 2]),
        "p99": float(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]),
        "max": float(ordered[-1]),
    }


def _machine() -> dict[str, Any]:
    import platform

    import torch

    from lsr.encoders.device import cpu_has_native_bf16, usable_cpus

    return {
        "cpus": usable_cpus(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "load_average_at_start": list(os.getloadavg()),
    }


def encode(
    corpus: Path,
    out: Path,
    *,
    model: str | Path = SPLADE_TINY,
    doc_max_length: int = 128,
    query_max_length: int = 64,
    max_docs: int | None = None,
    chunk: int = 10_000,
    batching: str = "invariant",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Encode a BEIR directory's documents and queries into ``out`` (see the module docstring).

    ``max_docs`` encodes an evenly spread subset (corpus order kept): a quick measurement whose
    docs/s extrapolates to the whole collection. Returns the manifest (also ``README.json``).
    """
    from lsr.corpus import iter_corpus, load_queries
    from lsr.encoders import compute_idf, load_encoder
    from lsr.io import atomic_write
    from lsr.sparse import read_npz, write_npz

    started = time.perf_counter()
    machine = _machine()
    corpus, out = Path(corpus), Path(out)
    everything = list(iter_corpus(corpus))
    keep = spread_positions(len(everything), max_docs)
    ids = [everything[i][0] for i in keep]
    texts = [everything[i][1] for i in keep]
    n_corpus = len(everything)
    del everything
    queries = load_queries(corpus)
    overrides: dict[str, Any] = {
        "document": {"max_length": doc_max_length, "batching": batching},
        "query": {"max_length": query_max_length},
        "batch_size": batch_size,  # windows per forward pass with batching="padded"
    }
    encoder = load_encoder(str(model), **overrides)
    _log(f"encode: {len(ids):,} documents, {len(queries):,} queries, model {model}")

    out.mkdir(parents=True, exist_ok=True)
    parts = out / ".parts"
    settings = {
        "model": str(Path(model).resolve()) if Path(model).exists() else str(model),
        "doc_max_length": doc_max_length,
        "batching": batching,
        "batch_size": batch_size,
        "chunk": chunk,
        "docs": len(ids),
        "first_last": [ids[0], ids[-1]] if ids else [],
        "corpus_bytes": (corpus / "corpus.jsonl").stat().st_size
        if (corpus / "corpus.jsonl").exists()
        else None,
    }
    settings_path = parts / "settings.json"
    if parts.exists() and (
        not settings_path.exists() or json.loads(settings_path.read_text()) != settings
    ):
        _log(f"encode: {parts} holds parts of another run: removed")
        shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    settings_path.write_text(json.dumps(settings))

    spans = chunk_spans(len(ids), chunk)
    done = resumed = 0
    run_seconds = 0.0
    for k, (lo, hi) in enumerate(spans):
        part, stats = parts / f"docs-{k:05d}.npz", parts / f"docs-{k:05d}.json"
        if part.exists() and stats.exists():
            resumed += hi - lo
            done += hi - lo
            continue
        t0 = time.perf_counter()
        before = (encoder.document.stats.truncated, encoder.document.stats.tokens)
        batch = encoder.encode_document(texts[lo:hi], ids[lo:hi])
        seconds = time.perf_counter() - t0
        atomic_write(part, lambda tmp, b=batch: write_npz(b, tmp))
        record = {
            "docs": hi - lo,
            "seconds": seconds,
            "truncated": encoder.document.stats.truncated - before[0],
            "tokens": encoder.document.stats.tokens - before[1],
        }
        atomic_write(stats, lambda tmp, r=record: tmp.write_text(json.dumps(r)))
        done += hi - lo
        run_seconds += seconds
        rate = (done - resumed) / run_seconds
        eta = (len(ids) - done) / rate if rate else 0.0
        _log(
            f"encode: {done:,}/{len(ids):,} docs ({100 * done / len(ids):.0f}%), "
            f"chunk {(hi - lo) / seconds:,.0f} docs/s, run {rate:,.0f} docs/s, "
            f"ETA {eta / 60:.1f} min"
        )
    records = [json.loads((parts / f"docs-{k:05d}.json").read_text()) for k in range(len(spans))]
    doc_seconds = sum(r["seconds"] for r in records)

    t0 = time.perf_counter()
    doc_terms = write_vectors(
        out / VECTOR_FILES["docs"],
        (read_npz(parts / f"docs-{k:05d}.npz") for k in range(len(spans))),
    )
    write_seconds = time.perf_counter() - t0
    _log(f"encode: wrote {out / VECTOR_FILES['docs']} ({write_seconds:.0f} s)")

    qids, qtexts = list(queries), list(queries.values())
    t0 = time.perf_counter()
    siamese = encoder.encode_query(qtexts, qids)
    siamese_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = compute_idf(str(model), texts, query_mode="inference-free", **overrides)
    idf_seconds = time.perf_counter() - t0
    idf_side = load_encoder(
        str(model), query_mode="inference-free", idf_table=table, **overrides
    ).query
    t0 = time.perf_counter()
    idf_queries = idf_side.encode(qtexts, qids)
    idf_query_seconds = time.perf_counter() - t0
    query_terms = {
        "siamese": write_vectors(out / VECTOR_FILES["siamese"], [siamese]),
        "inference-free": write_vectors(out / VECTOR_FILES["inference-free"], [idf_queries]),
    }
    shutil.rmtree(parts)

    manifest: dict[str, Any] = {
        "model": Path(str(model)).name,
        "model_path": settings["model"],
        "doc_max_length": doc_max_length,
        "query_max_length": query_max_length,
        "pooling": encoder.config.document.pooling,
        "activation": "log1p(relu(logits))",
        "special_tokens": "zeroed",
        "idf": "ln((N - df + 0.5)/(df + 0.5) + 1), df over tokenized docs truncated to "
        "doc_max_length",
        "batching": batching,
        "batch_size": batch_size if batching == "padded" else None,
        "decimals": DECIMALS,
        "corpus": str(corpus),
        "docs": len(ids),
        "docs_in_corpus": n_corpus,
        "max_docs": max_docs,
        "queries": len(qids),
        "files": VECTOR_FILES,
        "doc_terms": _spread(doc_terms),
        "postings": sum(doc_terms),
        "query_terms": {mode: _spread(v) for mode, v in query_terms.items()},
        "doc_tokens_with_specials": sum(r["tokens"] for r in records),
        "docs_truncated": sum(r["truncated"] for r in records),
        "idf_n_docs": table.n_docs,
        "seconds": {
            "encode_docs": doc_seconds,
            "write_docs": write_seconds,
            "encode_queries_siamese": siamese_seconds,
            "compute_idf": idf_seconds,
            "encode_queries_idf": idf_query_seconds,
            "total_this_run": time.perf_counter() - started,
        },
        "docs_per_second": len(ids) / doc_seconds if doc_seconds else 0.0,
        "resumed_docs": resumed,
        "machine": machine,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    atomic_write(
        out / "README.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    )
    return manifest


def encode_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eval.realtext encode",
        description="Encode a BEIR directory with splade-tiny (documents, siamese and IDF queries)",
    )
    parser.add_argument("--corpus", type=Path, required=True, help="BEIR directory to encode")
    parser.add_argument("--out", type=Path, required=True, help="vectors directory to write")
    parser.add_argument("--model", default=str(SPLADE_TINY))
    parser.add_argument("--doc-max-length", type=int, default=128)
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument(
        "--max-docs", type=int, default=None, help="an evenly spread subset (a timing run)"
    )
    parser.add_argument("--chunk", type=int, default=10_000, help="documents per resumable part")
    parser.add_argument("--batching", choices=("invariant", "padded"), default="invariant")
    parser.add_argument("--batch-size", type=int, default=32, help="with --batching padded")
    args = parser.parse_args(argv)
    m = encode(
        args.corpus,
        args.out,
        model=args.model,
        doc_max_length=args.doc_max_length,
        query_max_length=args.query_max_length,
        max_docs=args.max_docs,
        chunk=args.chunk,
        batching=args.batching,
        batch_size=args.batch_size,
    )
    sec = m["seconds"]
    print(
        f"realtext encode: {m['docs']:,} docs in {sec['encode_docs']:.1f} s "
        f"({m['docs_per_second']:,.0f} docs/s on {m['machine']['cpus']} cores, "
        f"{m['docs_truncated']} truncated), {m['doc_terms']['mean']:.1f} terms/doc, "
        f"{m['postings']:,} postings; {m['queries']} queries: siamese "
        f"{m['query_terms']['siamese']['mean']:.1f} terms, inference-free "
        f"{m['query_terms']['inference-free']['mean']:.1f} terms; "
        f"{sec['total_this_run']:.0f} s in all -> {args.out}"
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["encode"]:
        encode_main(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="BEIR directory to write")
    parser.add_argument("--max-docs", type=int, default=None, help="seeded subset of documents")
    parser.add_argument("--queries", type=int, default=1000, help="number of queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-relevant", type=int, default=50, help="most judged docs a query")
    parser.add_argument("--wordnet-dir", type=Path, default=WORDNET_DIR)
    parser.add_argument("--gcide-index", type=Path, default=GCIDE_INDEX)
    parser.add_argument("--gcide-dict", type=Path, default=GCIDE_DICT)
    args = parser.parse_args(argv)
    s = build(
        args.out,
        wordnet_dir=args.wordnet_dir,
        gcide_index=args.gcide_index,
        gcide_dict=args.gcide_dict,
        max_docs=args.max_docs,
        n_queries=args.queries,
        seed=args.seed,
        max_relevant=args.max_relevant,
    )
    print(
        f"realtext: {s['docs']} docs ({s['wordnet_docs']} WordNet), {s['queries']} queries "
        f"({s['judgements']} judgements), mean {s['mean_words']:.1f} words/doc "
        f"(median {s['median_words']:g}), {s['seconds']:.1f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
