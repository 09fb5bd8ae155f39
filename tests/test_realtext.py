"""The real-text collection generator (eval/realtext.py) on small inline WordNet and dictd files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from eval import realtext
from eval.realtext import Doc
from lsr.corpus import load_beir

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
NOUN = (
    LICENSE + "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known"
    " or inferred to have its own distinct existence (living or nonliving)  \n"
    "00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 | a general concept"
    " formed by extracting common features from specific examples  \n"
    "09213565 17 n 02 bank 0 bank_building 0 000 | sloping land (especially the slope beside a"
    ' body of water); "they pulled the canoe up on the bank"  \n'
)
VERB = "00016380 29 v 01 drowse 0 000 01 + 02 00 | be on the verge of sleeping  \n"
ADJ = (
    LICENSE
    + "00034924 00 s 02 activated 0 active(a) 0 000 | (military) set up and placed on active"
    ' assignment; "a newly activated unit"  \n'
)
ADV = "00014882 02 r 01 well d 000 | with prudence or propriety  \n"

ENTRIES = [
    (
        ["00-database-info"],
        "00-database-info\n   This file was converted from the original database.\n",
    ),
    (
        ["Abacus", "Abaci", "Abacus harmonicus"],
        'Abacus \\Ab"a*cus\\ ([a^]b"[.a]*k[u^]s), n.; E. pl. {Abacuses}; L.\n'
        "   pl. {Abaci} (-s[imac]). [L. abacus, abax, Gr. 'a`bax]\n"
        "   1. A table or tray strewn with sand, anciently used for\n"
        "      drawing, calculating, etc. [Obs.]\n"
        "      [1913 Webster]\n"
        "\n"
        "            Abacus of sand the children used.     --Shak.\n"
        "      [1913 Webster]\n"
        "\n"
        "   2. A calculating frame; it is still employed in China.\n"
        "      [1913 Webster]\n"
        "\n"
        "   Note: The Roman abacus had grooves\n"
        "         for counters.\n"
        "         [1913 Webster]\n"
        "\n"
        "   3. (Arch.)\n"
        "      (a) The uppermost member of the capital of a\n"
        "          column. See {Column}.\n"
        "      (b) A tablet in mosaic work.\n"
        "          [1913 Webster]\n"
        "\n"
        "   {Abacus harmonicus} (Mus.), an ancient diagram of the\n"
        "      keys of an instrument. --Crabb.\n"
        "      [1913 Webster]\n"
        "\n",
    ),
    (
        ["Aeronaut"],
        'Aeronaut \\A["e]r"o*naut\\, n. [F. a[\'e]ronaute.]\n'
        '   An a["e]ronaut flies at 45[deg]; as, a bold aeronaut.\n'
        '   --Holland. -- {A`["e]r*o*naut"ic*al}, a.\n'
        "   [1913 Webster] Bank\n",  # the next entry's headword leaked into this span
    ),
    (
        ["Bank", "Banc"],
        "Banc \\Banc\\, Bank \\Bank\\, n. [OF. banc.]\n"
        "   A bench; a seat of judgment.\n"
        "   [1913 Webster]\n"
        'Banker \\Bank"er\\, n.\n'  # a second entry inside the same span
        "   One who keeps a bank.\n"
        "   [1913 Webster]\n",
    ),
]


def _b64(value: int) -> str:
    digits = ""
    while True:
        digits = _B64[value % 64] + digits
        value //= 64
        if not value:
            return digits


def write_sources(root: Path) -> tuple[Path, Path, Path]:
    """Tiny WordNet data files and a gzip'd dictd dictionary; returns (wordnet, index, dict)."""
    wordnet = root / "wordnet"
    wordnet.mkdir()
    for name, text in (("noun", NOUN), ("verb", VERB), ("adj", ADJ), ("adv", ADV)):
        (wordnet / f"data.{name}").write_text(text, encoding="utf-8")
    data = b""
    index_lines = []
    for heads, text in ENTRIES:
        raw = text.encode("utf-8")
        for head in heads:
            index_lines.append(f"{head}\t{_b64(len(data))}\t{_b64(len(raw))}\n")
        data += raw
    index = root / "gcide.index"
    index.write_text("".join(sorted(index_lines)), encoding="utf-8")
    dictionary = root / "gcide.dict.dz"
    dictionary.write_bytes(gzip.compress(data, mtime=0))
    return wordnet, index, dictionary


@pytest.fixture()
def sources(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_sources(tmp_path)


def test_decode_b64_number() -> None:
    assert realtext.decode_b64_number("A") == 0
    assert realtext.decode_b64_number("BA") == 64
    for value in (0, 5, 63, 64, 4097, 39952096):
        assert realtext.decode_b64_number(_b64(value)) == value


def test_wordnet_parsing(sources: tuple[Path, Path, Path]) -> None:
    docs = list(realtext.iter_wordnet(sources[0]))
    assert [d.doc_id for d in docs] == [
        "wn:n:00001740",
        "wn:n:00002137",
        "wn:n:09213565",
        "wn:v:00016380",
        "wn:a:00034924",
        "wn:r:00014882",
    ]
    abstraction, bank, activated = docs[1], docs[2], docs[4]
    assert abstraction.title == "abstraction, abstract entity"
    assert abstraction.heads == ("abstraction", "abstract entity")
    assert abstraction.text.startswith("a general concept formed")
    assert bank.text.endswith('"they pulled the canoe up on the bank"')
    assert activated.title == "activated, active"  # the (a) marker is dropped
    assert activated.heads == ("activated", "active")
    assert realtext.parse_wordnet_line(LICENSE.rstrip("\n"), "n") is None


def test_clean_markup() -> None:
    text = 'A {bench} in a["e]rial [=a]ngles of 45[deg]. "Banked well." --Holland.\n[1913 Webster]'
    assert realtext.clean_markup(text) == 'A bench in aerial angles of 45°. "Banked well."'
    assert realtext.clean_markup("Fit, as land. [R.] --R. Trumbull.") == "Fit, as land. [R.]"
    assert realtext.clean_markup('Apt. -- {Cap"tious*ly}, adv.') == "Apt."
    assert realtext.clean_markup("Syn: one, ane\n [WordNet 1.5 +PJC]") == "Synonyms: one, ane"


def test_gcide_parsing(sources: tuple[Path, Path, Path]) -> None:
    _, index, dictionary = sources
    assert len(realtext.read_dictd_spans(index)) == 3  # deduplicated, metadata skipped
    docs = {d.doc_id: d for d in realtext.iter_gcide(index, dictionary)}
    assert list(docs) == [
        "gcide:0.1",
        "gcide:0.2",
        "gcide:0.3",
        "gcide:0.4",
        "gcide:1",
        "gcide:2.1",
        "gcide:2.2",
    ]
    first, second, third, sub = (docs[f"gcide:0.{k}"] for k in (1, 2, 3, 4))
    assert first == Doc(
        "gcide:0.1",
        "Abacus",
        "A table or tray strewn with sand, anciently used for drawing, calculating, etc. [Obs.]",
        ("abacus",),
    )  # the header, the quotation and its citation are gone
    assert second.text == (
        "A calculating frame; it is still employed in China. "
        "The Roman abacus had grooves for counters."
    )  # the note stays with its sense
    assert third.text == (
        "(Arch.) (a) The uppermost member of the capital of a column. See Column. "
        "(b) A tablet in mosaic work."
    )
    assert (sub.title, sub.heads) == ("Abacus harmonicus", ("abacus harmonicus",))
    assert sub.text == "an ancient diagram of the keys of an instrument."
    aeronaut = docs["gcide:1"]
    assert aeronaut.title == "Aeronaut"
    assert aeronaut.text == "An aeronaut flies at 45°; as, a bold aeronaut."
    assert (docs["gcide:2.1"].title, docs["gcide:2.1"].heads) == ("Banc, Bank", ("banc", "bank"))
    assert docs["gcide:2.1"].text == "A bench; a seat of judgment."
    assert (docs["gcide:2.2"].title, docs["gcide:2.2"].text) == ("Banker", "One who keeps a bank.")
    for doc in docs.values():
        assert not any(c in doc.text for c in "{}\\") and "Webster" not in doc.text


def _word(n: int) -> str:
    return "w" + chr(97 + n // 26) + chr(97 + n % 26)


def _docs(n_heads: int) -> list[Doc]:
    docs = []
    for h in range(n_heads):
        for k in range(h % 3 + 1):
            docs.append(Doc(f"d{h}.{k}", _word(h), "text", (_word(h),)))
    docs.append(Doc("num", "1", "one", ("1",)))  # not queryable: not alphabetic
    docs.append(Doc("taxon", "genus Homo", "humans", ("genus homo",)))  # not queryable: a taxon
    docs += [Doc(f"big{i}", "big", "often", ("bigword",)) for i in range(5)]
    return docs


def test_make_queries_deterministic_and_judged() -> None:
    docs = _docs(40)
    queries, qrels = realtext.make_queries(docs, 10, seed=3, max_relevant=4)
    assert (queries, qrels) == realtext.make_queries(docs, 10, seed=3, max_relevant=4)
    assert queries != realtext.make_queries(docs, 10, seed=4, max_relevant=4)[0]
    assert [q for q, _ in queries] == [f"q{i}" for i in range(10)]
    by_head: dict[str, list[str]] = {}
    for doc in docs:
        for head in doc.heads:
            by_head.setdefault(head, []).append(doc.doc_id)
    for qid, text in queries:
        head = _head_of(text)
        assert head in by_head and head not in ("1", "bigword", "genus homo")  # filters apply
        assert qrels[qid] == by_head[head]  # every document of the headword, in corpus order
    everything, _ = realtext.make_queries(docs, 1000, seed=0, max_relevant=4)
    assert len(everything) == 40  # all candidates, no more


def _head_of(query: str) -> str:
    for template in realtext.TEMPLATES:
        prefix, suffix = template.split("{}")
        if query.startswith(prefix) and query.endswith(suffix):
            return query[len(prefix) : len(query) - len(suffix)]
    raise AssertionError(query)


def test_build_writes_a_loadable_deterministic_beir_directory(
    sources: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    wordnet, index, dictionary = sources
    kwargs = dict(wordnet_dir=wordnet, gcide_index=index, gcide_dict=dictionary, n_queries=5)
    summary = realtext.build(tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    realtext.build(tmp_path / "b", **kwargs)  # type: ignore[arg-type]
    names = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert summary["docs"] == 13 and summary["wordnet_docs"] == 6 and summary["queries"] == 5
    data = load_beir(tmp_path / "a")
    records = [json.loads(line) for line in (tmp_path / "a" / "corpus.jsonl").open()]
    assert data.corpus == {r["_id"]: f"{r['title']} {r['text']}" for r in records}
    assert len(data.queries) == 5 and data.unknown_qrels_docs == 0
    titles = {r["_id"]: r["title"].lower() for r in records}
    for qid, text in data.queries.items():
        head = _head_of(text)
        judged = {d for d, r in data.qrels[qid].items() if r == 1}
        assert judged == {d for d, t in titles.items() if head in t.split(", ")}
    subset = realtext.build(tmp_path / "c", max_docs=7, **kwargs)  # type: ignore[arg-type]
    assert subset["docs"] == 7
    assert load_beir(tmp_path / "c").unknown_qrels_docs == 0


@pytest.mark.skipif(
    not (realtext.WORDNET_DIR / "data.noun").is_file() or not realtext.GCIDE_DICT.is_file(),
    reason="wordnet-base / dict-gcide not installed",
)
def test_installed_packages_give_300k_documents() -> None:
    wordnet = sum(1 for _ in realtext.iter_wordnet())
    gcide = sum(1 for _ in realtext.iter_gcide())
    assert wordnet == 117659
    assert wordnet + gcide >= 300_000


# -- encode (vectors) ----------------------------------------------------------------------------
def test_spread_positions_and_chunk_spans() -> None:
    assert realtext.spread_positions(5, None) == [0, 1, 2, 3, 4]
    assert realtext.spread_positions(5, 9) == [0, 1, 2, 3, 4]
    assert realtext.spread_positions(10, 3) == [0, 3, 6]
    assert realtext.spread_positions(310_496, 5000)[-1] < 310_496
    assert realtext.chunk_spans(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert realtext.chunk_spans(0, 2) == []
    with pytest.raises(ValueError):
        realtext.chunk_spans(3, 0)


def test_vector_lines_round_and_drop_zeros() -> None:
    import numpy as np
    import scipy.sparse as sp

    from lsr.sparse import SparseBatch
    from lsr.vocab import Vocabulary

    vocab = Vocabulary(["a", "b", "c"])
    matrix = sp.csr_matrix(np.array([[0.123456, 0.00004, 2.0], [0, 0, 0]], dtype=np.float32))
    lines = list(realtext.vector_lines(SparseBatch(["x", "y"], matrix, vocab)))
    assert [n for _, n in lines] == [2, 0]
    assert json.loads(lines[0][0]) == {"id": "x", "vector": {"a": 0.1235, "c": 2.0}}
    assert json.loads(lines[1][0]) == {"id": "y", "vector": {}}


def test_encode_writes_the_vectors_layout_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lsr.sparse import read_jsonl
    from lsr.vocab import Vocabulary
    from tests.conftest import save_tiny_bert_mlm

    model = save_tiny_bert_mlm(tmp_path / "model")
    beir = tmp_path / "beir"
    docs = [
        Doc(f"d{i}", f"head{i}", "a calculating frame " * (i + 1), (f"head{i}",)) for i in range(5)
    ]
    realtext.write_beir(beir, docs, [("q0", "what is abacus"), ("q1", "define frame")], {
        "q0": ["d0"],
        "q1": ["d1", "d2"],
    })  # fmt: skip
    kwargs = dict(model=model, doc_max_length=16, chunk=2)

    fresh = realtext.encode(beir, tmp_path / "fresh", **kwargs)  # type: ignore[arg-type]
    assert fresh["docs"] == 5 and fresh["queries"] == 2 and fresh["resumed_docs"] == 0
    # "headN" is 2 word pieces, each repeat 3: only d4 (17 + 2 special tokens) exceeds 16
    assert fresh["docs_truncated"] == 1
    assert fresh["idf_n_docs"] == 5 and fresh["doc_max_length"] == 16
    vocab = Vocabulary.load(model)
    out = tmp_path / "fresh"
    assert json.loads((out / "README.json").read_text()) == fresh
    assert not (out / ".parts").exists()
    assert read_jsonl(out / "docs.jsonl.gz", vocab).ids == [f"d{i}" for i in range(5)]
    idf = read_jsonl(out / "queries-idf.jsonl.gz", vocab)
    assert idf.ids == ["q0", "q1"]  # IDF over the 5 documents: "frame" is in all, "define" none
    assert idf.to_dicts()[1] == pytest.approx({"define": 2.4849, "frame": 0.087}, abs=1e-6)
    assert read_jsonl(out / "queries-siamese.jsonl.gz", vocab).ids == ["q0", "q1"]

    # interrupted after the documents were encoded: the rerun reuses their parts
    resumed_out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        patch.setattr(realtext, "write_vectors", _fail)
        with pytest.raises(RuntimeError):
            realtext.encode(beir, resumed_out, **kwargs)  # type: ignore[arg-type]
    assert len(list((resumed_out / ".parts").glob("docs-*.npz"))) == 3
    assert not (resumed_out / "README.json").exists()
    resumed = realtext.encode(beir, resumed_out, **kwargs)  # type: ignore[arg-type]
    assert resumed["resumed_docs"] == 5
    for name in ("docs.jsonl.gz", "queries-siamese.jsonl.gz", "queries-idf.jsonl.gz"):
        assert gzip.decompress((out / name).read_bytes()) == gzip.decompress(
            (resumed_out / name).read_bytes()
        )

    subset = realtext.encode(beir, tmp_path / "subset", max_docs=2, **kwargs)  # type: ignore[arg-type]
    assert subset["docs"] == 2 and subset["docs_in_corpus"] == 5
    assert read_jsonl(tmp_path / "subset" / "docs.jsonl.gz", vocab).ids == ["d0", "d2"]


def _fail(*args: object, **kwargs: object) -> list[int]:
    raise RuntimeError("interrupted")
