"""Metadata schema, typed columns and the filter language (lsr.collection.schema / .filters)."""

from __future__ import annotations

import io
import itertools
import json
import math
from dataclasses import FrozenInstanceError
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr.collection.filters import MAX_DEPTH, Filter, parse_filter
from lsr.collection.schema import KINDS, Columns, Schema
from lsr.errors import IndexFormatError, InputError

# ----------------------------------------------------------------------------- the oracle

MISSING = object()


def oracle_condition(value: Any, spec: Any) -> bool:
    """One field condition on one raw metadata value (None = absent), in plain Python."""
    ops = spec if isinstance(spec, dict) else {"eq": spec}
    present = value is not None
    result = True
    for op, arg in ops.items():
        if op == "eq":
            ok = present and value == arg
        elif op == "ne":
            ok = present and value != arg
        elif op == "in":
            ok = present and any(value == a for a in arg)
        elif op == "nin":
            ok = present and all(value != a for a in arg)
        elif op == "gt":
            ok = present and value > arg
        elif op == "gte":
            ok = present and value >= arg
        elif op == "lt":
            ok = present and value < arg
        elif op == "lte":
            ok = present and value <= arg
        elif op == "exists":
            ok = present == arg
        else:
            raise AssertionError(op)
        result = result and ok
    return result


def oracle(filt: dict[str, Any], row: dict[str, Any] | None) -> bool:
    row = row or {}
    result = True
    for key, arg in filt.items():
        if key == "and":
            ok = all(oracle(child, row) for child in arg)
        elif key == "or":
            ok = any(oracle(child, row) for child in arg)
        elif key == "not":
            ok = not oracle(arg, row)
        else:
            ok = oracle_condition(row.get(key), arg)
        result = result and ok
    return result


# ----------------------------------------------------------------------------- strategies

NAMES = ["genre", "year", "draft", "lang", "score", "é", "a b", "x.y"]
KEYWORDS = ["", "a", "b", "ab", "news", "é", "日本", "a\x00", "\x00", "\ud800x"]  # NULs, surrogate
NUMBERS = [0, -0.0, 1, 1.5, -2, 2.0, 3, 1e300, -1e-300, 0.1]
VALUES = {
    "keyword": st.sampled_from(KEYWORDS),
    "number": st.sampled_from(NUMBERS),
    "bool": st.booleans(),
}
RANGE_OPS = ["gt", "gte", "lt", "lte"]

schemas = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(KINDS), min_size=1, max_size=5)


@st.composite
def rows_for(draw: st.DrawFn, schema: dict[str, str]) -> list[dict[str, Any] | None]:
    rows: list[dict[str, Any] | None] = []
    for _ in range(draw(st.integers(0, 25))):
        if draw(st.integers(0, 9)) == 0:
            rows.append(None)
            continue
        row: dict[str, Any] = {}
        for name, kind in schema.items():
            choice = draw(st.integers(0, 5))
            if choice == 0:
                continue  # key missing
            row[name] = None if choice == 1 else draw(VALUES[kind])  # None: absent too
        rows.append(row)
    return rows


@st.composite
def conditions(draw: st.DrawFn, schema: dict[str, str]) -> tuple[str, Any]:
    name = draw(st.sampled_from(sorted(schema)))
    kind = schema[name]
    value = VALUES[kind]
    shape = draw(st.integers(0, 6))
    if shape == 0:
        return name, draw(value)  # shorthand equality
    ops: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["eq", "ne", "in", "nin", "exists", *RANGE_OPS]))
        if op in ("eq", "ne"):
            ops[op] = draw(value)
        elif op in ("in", "nin"):
            ops[op] = draw(st.lists(value, max_size=4))
        elif op == "exists":
            ops[op] = draw(st.booleans())
        elif kind == "number":
            ops[op] = draw(value)
    if not ops:
        ops["exists"] = True
    return name, ops


@st.composite
def filters_for(draw: st.DrawFn, schema: dict[str, str], depth: int = 0) -> dict[str, Any]:
    shape = draw(st.integers(0, 6)) if depth < 3 else 0
    if shape <= 1:  # one or several field conditions in one object
        out: dict[str, Any] = {}
        for _ in range(draw(st.integers(1, 3)) if shape else 1):
            name, spec = draw(conditions(schema))
            out[name] = spec
        return out
    children = st.lists(filters_for(schema, depth + 1), min_size=1, max_size=3)
    if shape == 2:
        return {"and": draw(children)}
    if shape == 3:
        return {"or": draw(children)}
    if shape == 4:
        return {"not": draw(filters_for(schema, depth + 1))}
    # logical operators and field conditions mixed in one object
    out = {"not": draw(filters_for(schema, depth + 1)), "or": draw(children)}
    name, spec = draw(conditions(schema))
    out[name] = spec
    return out


def npy_round_trip(columns: Columns, schema: Schema) -> Columns:
    """Through np.save / np.load (no pickle) and JSON, in memory."""
    description, arrays = columns.to_arrays()
    loaded = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        buffer.seek(0)
        loaded[name] = np.load(buffer, allow_pickle=False)
    return Columns.from_arrays(json.loads(json.dumps(description)), loaded, columns.n, schema)


# ----------------------------------------------------------------------------- property test


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_masks_and_matches_agree_with_the_oracle(data: st.DataObject) -> None:
    fields = data.draw(schemas, label="schema")
    rows = data.draw(rows_for(fields), label="rows")
    filters = data.draw(st.lists(filters_for(fields), min_size=1, max_size=4), label="filters")
    schema = Schema.declare(fields)
    assert schema.extend(rows, allow_new_fields=False) == schema

    columns = Columns.from_metadata(rows, schema)
    assert columns.n == len(rows)
    for i, row in enumerate(rows):
        expected = {k: v for k, v in (row or {}).items() if v is not None}
        assert columns.row(i) == expected

    # the same documents, stored other ways
    loaded = npy_round_trip(columns, schema)
    order = np.asarray(data.draw(st.permutations(range(len(rows))), label="order"), dtype=np.int64)
    taken = columns.take(order)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=3), label="cuts"))
    bounds = [0, *cuts, len(rows)]
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        part_rows = rows[lo:hi]
        part_schema = Schema().extend(part_rows)  # older columns: only the fields seen so far
        parts.append((part_rows, Columns.from_metadata(part_rows, part_schema)))
    merged = Columns.concat([part for _, part in parts], schema)
    assert [merged.row(i) for i in range(merged.n)] == [columns.row(i) for i in range(columns.n)]
    assert [taken.row(i) for i in range(taken.n)] == [columns.row(int(i)) for i in order]

    for filt in filters:
        compiled = parse_filter(filt, schema)
        expected = np.array([oracle(filt, row) for row in rows], dtype=bool)
        mask = compiled.mask(columns)
        assert mask.dtype == bool and mask.shape == (len(rows),)
        np.testing.assert_array_equal(mask, expected)
        assert [compiled.matches(row) for row in rows] == expected.tolist()
        np.testing.assert_array_equal(compiled.mask(loaded), expected)
        np.testing.assert_array_equal(compiled.mask(taken), expected[order])
        np.testing.assert_array_equal(compiled.mask(merged), expected)
        for part_rows, part in parts:
            want = np.array([oracle(filt, row) for row in part_rows], dtype=bool)
            np.testing.assert_array_equal(compiled.mask(part), want)

        # canonical JSON: survives json and parses back to an equal filter
        canonical = compiled.to_json()
        again = parse_filter(json.loads(json.dumps(canonical)), schema)
        assert again == compiled and hash(again) == hash(compiled)
        assert again.to_json() == canonical
        assert parse_filter(compiled, schema) == compiled


# ----------------------------------------------------------------------------- filter semantics

DOCS = [
    {"genre": "news", "year": 2000, "draft": False},
    {"genre": "blog", "year": 1999.5},
    None,
    {"genre": "news", "draft": True, "year": None},
    {"year": -3},
]


@pytest.fixture()
def schema() -> Schema:
    return Schema().extend(DOCS)


@pytest.fixture()
def columns(schema: Schema) -> Columns:
    return Columns.from_metadata(DOCS, schema)


@pytest.mark.parametrize(
    ("filt", "expected"),
    [
        ({"genre": "news"}, [0, 3]),
        ({"genre": {"eq": "nowhere"}}, []),
        ({"genre": {"ne": "news"}}, [1]),  # absent never matches ne
        ({"not": {"genre": "news"}}, [1, 2, 4]),  # not: plain negation, absent included
        ({"genre": {"nin": ["blog"]}}, [0, 3]),
        ({"genre": {"in": []}}, []),
        ({"year": {"gt": 1999, "lte": 2000}}, [0, 1]),
        ({"year": {"gte": 2000.0}}, [0]),
        ({"year": 2000}, [0]),
        ({"draft": {"exists": False}}, [1, 2, 4]),
        ({"draft": {"ne": True}}, [0]),
        ({"genre": "news", "draft": True}, [3]),
        ({"or": [{"year": {"lt": 0}}, {"draft": True}]}, [3, 4]),
        ({"and": [{"genre": {"exists": True}}, {"not": {"year": {"exists": True}}}]}, [3]),
        ({"year": {"gt": 0, "ne": 2000}}, [1]),
    ],
)
def test_filter_semantics(
    filt: dict[str, Any], expected: list[int], schema: Schema, columns: Columns
) -> None:
    compiled = parse_filter(filt, schema)
    assert np.flatnonzero(compiled.mask(columns)).tolist() == expected
    assert [i for i, doc in enumerate(DOCS) if compiled.matches(doc)] == expected


def test_filters_are_immutable_and_canonical(schema: Schema) -> None:
    compiled = parse_filter({"genre": {"in": ["b", "a", "b"]}, "year": {"lt": 3, "gt": -1}}, schema)
    assert compiled.to_json() == {
        "and": [{"genre": {"in": ["a", "b"]}}, {"year": {"gt": -1.0, "lt": 3.0}}]
    }
    assert isinstance(compiled, Filter)
    with pytest.raises(FrozenInstanceError):
        compiled.children = ()  # type: ignore[attr-defined]
    assert parse_filter({"year": -0.0}, schema) == parse_filter({"year": 0}, schema)


def test_nesting_depth_limit(schema: Schema) -> None:
    filt: dict[str, Any] = {"genre": "news"}
    for _ in range(MAX_DEPTH - 1):
        filt = {"not": filt}
    parse_filter(filt, schema)  # 32 levels: fine
    with pytest.raises(InputError, match="nested deeper than 32 levels"):
        parse_filter({"and": [filt]}, schema)


BAD_FILTERS = [
    ({"colour": "red"}, ["unknown field 'colour'", "(known: draft, genre, year)"]),
    ({"$genre": "news"}, ["unknown field '$genre'"]),
    ({"genre": 3}, ["field 'genre' is keyword", "number 3"]),
    ({"year": "2000"}, ["field 'year' is number", "string '2000'"]),
    ({"year": True}, ["field 'year' is number", "bool True"]),
    ({"draft": 1}, ["field 'draft' is bool", "number 1"]),
    ({"year": {"in": [1, "x"]}}, ["field 'year' is number", "string 'x'"]),
    ({"genre": {"gt": "a"}}, ["field 'genre' is keyword", "range operator 'gt' needs a number"]),
    ({"draft": {"lte": 1}}, ["field 'draft' is bool", "range operator 'lte'"]),
    ({"year": {"gt": "1999"}}, ["field 'year' is number", "string '1999'"]),
    ({"year": {"gt": math.nan}}, ["field 'year'", "not a finite number"]),
    ({"year": {"eq": math.inf}}, ["field 'year'", "not a finite number"]),
    ({"year": 10**400}, ["field 'year'", "too large"]),
    ({"genre": None}, ["field 'genre'", "null", '"exists": false']),
    ({"genre": ["a", "b"]}, ["field 'genre'", "a list is not a value", '"in"']),
    ({"genre": {"eq": {"a": 1}}}, ["field 'genre'", "nested object"]),
    ({"genre": {"eq": ["a"]}}, ["field 'genre'", "a list"]),
    ({"genre": {"in": "news"}}, ["field 'genre'", "'in' needs a list"]),
    ({"genre": {"nin": None}}, ["field 'genre'", "'nin' needs a list"]),
    ({"genre": {"like": "n%"}}, ["field 'genre'", "unknown operator 'like'"]),
    ({"genre": {}}, ["field 'genre'", "empty operator object"]),
    ({"draft": {"exists": "yes"}}, ["'exists' needs true or false"]),
    ({"and": []}, ["'and' needs a non-empty list"]),
    ({"or": []}, ["'or' needs a non-empty list"]),
    ({"or": {"genre": "news"}}, ["'or' needs a non-empty list"]),
    ({"not": [{"genre": "news"}]}, ["expected an object", "list"]),
    ({"and": [{"genre": "news"}, "year"]}, ["expected an object", "string 'year'"]),
    ({}, ["empty filter object"]),
    ([{"genre": "news"}], ["expected an object"]),
    (None, ["expected an object", "null"]),
    ({1: "news"}, ["keys must be strings"]),
    ({"genre": {"eq": b"news"}}, ["field 'genre'", "bytes"]),
]


@pytest.mark.parametrize(("filt", "fragments"), BAD_FILTERS)
def test_filter_errors(filt: Any, fragments: list[str], schema: Schema) -> None:
    with pytest.raises(InputError) as info:
        parse_filter(filt, schema)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_field_lists_are_abbreviated() -> None:
    many = Schema.declare({f"f{i:03d}": "bool" for i in range(50)})
    with pytest.raises(InputError, match=r"known: f000, f001, .* \(30 more\)"):
        parse_filter({"zz": True}, many)
    with pytest.raises(InputError, match=r"unknown field 'x' \(known: none\)"):
        parse_filter({"x": 1}, Schema())


def test_matches_rejects_mistyped_metadata(schema: Schema) -> None:
    compiled = parse_filter({"year": 2000}, schema)
    assert not compiled.matches({})
    assert not compiled.matches(None)
    with pytest.raises(InputError, match="field 'year' is number, got '2000'"):
        compiled.matches({"year": "2000"})
    with pytest.raises(InputError, match=r"field 'year'.*a list"):
        compiled.matches({"year": [2000]})


def test_mask_on_columns_of_another_kind(schema: Schema) -> None:
    compiled = parse_filter({"year": 1}, schema)
    other = Schema.declare({"year": "keyword"})
    with pytest.raises(InputError, match="field 'year' is keyword in these columns"):
        compiled.mask(Columns.from_metadata([{"year": "x"}], other))


def test_mask_on_columns_without_the_field(schema: Schema) -> None:
    older = Columns.from_metadata([{"genre": "news"}, {}], Schema.declare({"genre": "keyword"}))
    assert parse_filter({"year": 1}, schema).mask(older).tolist() == [False, False]
    assert parse_filter({"draft": {"exists": False}}, schema).mask(older).tolist() == [True, True]
    assert parse_filter({"not": {"year": {"lt": 5}}}, schema).mask(older).tolist() == [True, True]
    empty = Columns.from_metadata([], schema)
    assert parse_filter({"genre": "news"}, schema).mask(empty).shape == (0,)


# ----------------------------------------------------------------------------- schema


def test_schema_inference_keeps_first_kinds_and_order() -> None:
    base = Schema()
    batch = [None, {"b": None}, {"year": 1999, "title": "x"}, {"flag": False, "b": 2.5}]
    grown = base.extend(batch)
    assert dict(grown) == {"year": "number", "title": "keyword", "flag": "bool", "b": "number"}
    assert list(grown.fields) == ["year", "title", "flag", "b"]
    assert len(base) == 0  # unchanged
    assert grown.extend([{"year": 2.5}, {}]) is grown  # nothing new
    assert Schema.from_json(json.loads(json.dumps(grown.to_json()))) == grown
    assert hash(Schema.from_json(grown.to_json())) == hash(grown)
    with pytest.raises(TypeError):
        grown.fields["year"] = "bool"  # type: ignore[index]


@pytest.mark.parametrize(
    ("batch", "fragments"),
    [
        ([{}, {"year": 1}, {}, {"year": "abc"}], ["document 3: field 'year' is number, got 'abc'"]),
        ([{"year": 1}, {"year": True}], ["document 1: field 'year' is number, got True"]),
        ([{"flag": True}, {"flag": 0}], ["document 1: field 'flag' is bool, got 0"]),
        ([{"t": "a"}, {"t": 1.5}], ["document 1: field 't' is keyword, got 1.5"]),
        ([{"t": {"a": 1}}], ["document 0: field 't'", "nested object"]),
        ([{"t": ["a"]}], ["document 0: field 't'", "list"]),
        ([{"t": math.nan}], ["document 0: field 't'", "not a finite number"]),
        ([{"t": -math.inf}], ["document 0: field 't'", "not a finite number"]),
        ([{}, {1: "a"}], ["document 1: field names must be strings", "1 (int)"]),
        ([{"": 1}], ["document 0: field names must be non-empty"]),
        ([{"$t": 1}], ["document 0: field name '$t' must not start with '$'"]),
        ([{"x" * 129: 1}], ["document 0: field name", "longer than 128 characters"]),
        ([{"and": 1}], ["document 0: field name 'and' is reserved"]),
        ([{}, ["t", 1]], ["document 1: metadata must be an object"]),
        ([{"t": b"raw"}], ["document 0: field 't'", "bytes"]),
    ],
)
def test_schema_extend_errors(batch: list[Any], fragments: list[str]) -> None:
    base = Schema.declare({"year": "number"})
    with pytest.raises(InputError) as info:
        base.extend(batch)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert dict(base) == {"year": "number"}


def test_schema_declared_and_strict() -> None:
    schema = Schema.declare({"year": "number", "genre": "keyword"})
    assert schema.extend([{"year": 3, "genre": "a"}], allow_new_fields=False) is schema
    with pytest.raises(InputError, match=r"document 0: unknown field 'lang' \(known: genre, yea"):
        schema.extend([{"lang": "en"}], allow_new_fields=False)
    with pytest.raises(InputError, match="field 'year' has unknown kind 'integer'"):
        Schema.declare({"year": "integer"})
    with pytest.raises(InputError, match="must not start with"):
        Schema.declare({"$year": "number"})
    with pytest.raises(InputError, match="schema: expected"):
        Schema.from_json({"year": "number"})
    with pytest.raises(InputError, match="schema: expected"):
        Schema.declare(["year"])  # type: ignore[arg-type]


def test_numpy_scalars_are_accepted() -> None:
    rows = [{"n": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "s": np.str_("x")}]
    schema = Schema().extend(rows)
    assert dict(schema) == {"n": "number", "f": "number", "b": "bool", "s": "keyword"}
    assert Columns.from_metadata(rows, schema).row(0) == {"n": 3.0, "f": 0.5, "b": True, "s": "x"}


# ----------------------------------------------------------------------------- columns


def test_from_metadata_checks_values(schema: Schema) -> None:
    with pytest.raises(InputError, match="document 1: field 'year' is number, got 'x'"):
        Columns.from_metadata([{}, {"year": "x"}], schema)
    with pytest.raises(InputError, match="document 0: unknown field 'lang'"):
        Columns.from_metadata([{"lang": "en"}], schema)
    with pytest.raises(InputError, match="document 1: metadata must be an object"):
        Columns.from_metadata([None, ["year", 1]], schema)


def test_columns_round_trip_through_memory_maps(tmp_path, schema: Schema, columns: Columns) -> None:
    description, arrays = columns.to_arrays()
    assert all(name.startswith("meta.") and "/" not in name for name in arrays)
    assert all(array.dtype != object for array in arrays.values())
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array, allow_pickle=False)
    (tmp_path / "columns.json").write_text(json.dumps(description))
    mapped = {
        name: np.load(tmp_path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        for name in arrays
    }
    grown = schema.extend([{"lang": "en", "score": 1.0, "ok": True}])  # fields added since
    loaded = Columns.from_arrays(
        json.loads((tmp_path / "columns.json").read_text()), mapped, len(DOCS), grown
    )
    assert [loaded.row(i) for i in range(loaded.n)] == [columns.row(i) for i in range(columns.n)]
    for filt in ({"genre": {"nin": ["blog"]}}, {"year": {"gt": 0}}, {"not": {"draft": False}}):
        compiled = parse_filter(filt, grown)
        np.testing.assert_array_equal(compiled.mask(loaded), compiled.mask(columns))
    for field in ("lang", "score", "ok"):
        assert not parse_filter({field: {"exists": True}}, grown).mask(loaded).any()
        assert parse_filter({"not": {field: {"exists": True}}}, grown).mask(loaded).all()
    # merging old memory-mapped columns with new in-memory ones
    fresh = Columns.from_metadata([{"lang": "en", "genre": "zzz"}], grown)
    merged = Columns.concat([loaded, fresh], grown)
    assert merged.row(5) == {"lang": "en", "genre": "zzz"}
    assert parse_filter({"genre": "news"}, grown).mask(merged).tolist() == [1, 0, 0, 1, 0, 0]


def test_from_arrays_reports_damage(schema: Schema, columns: Columns) -> None:
    description, arrays = columns.to_arrays()
    n = columns.n
    missing = {k: v for k, v in arrays.items() if k != "meta.0.codes"}
    with pytest.raises(IndexFormatError, match=r"'meta\.0\.codes' is missing"):
        Columns.from_arrays(description, missing, n, schema)
    with pytest.raises(IndexFormatError, match="entries, expected"):
        Columns.from_arrays(description, arrays, n + 1, schema)
    bad_codes = {**arrays, "meta.0.codes": np.full(n, 7, dtype=np.int32)}
    with pytest.raises(IndexFormatError, match="codes out of range"):
        Columns.from_arrays(description, bad_codes, n, schema)
    wrong_dtype = {**arrays, "meta.0.codes": arrays["meta.0.codes"].astype(np.int64)}
    with pytest.raises(IndexFormatError, match="expected 1-d int32"):
        Columns.from_arrays(description, wrong_dtype, n, schema)
    with pytest.raises(IndexFormatError, match="stored as keyword but the schema says number"):
        Columns.from_arrays(description, arrays, n, Schema.declare({"genre": "number"}))
    with pytest.raises(IndexFormatError, match="unsupported format"):
        Columns.from_arrays({**description, "format": 99}, arrays, n, schema)


def test_take_and_concat(schema: Schema, columns: Columns) -> None:
    taken = columns.take(np.array([4, 1, 1]))
    blog = {"genre": "blog", "year": 1999.5}
    assert [taken.row(i) for i in range(3)] == [{"year": -3.0}, blog, blog]
    assert taken.column("draft") is None  # no document left with the field
    assert taken.column("genre").values.tolist() == ["blog"]  # dictionary compacted
    assert columns.take(np.zeros(0, dtype=np.int64)).n == 0
    with pytest.raises(ValueError, match="positions must lie"):
        columns.take(np.array([5]))
    with pytest.raises(ValueError, match="integer"):
        columns.take(np.array([0.5]))
    assert Columns.concat([], schema).n == 0
    with pytest.raises(ValueError, match="does not fit"):
        Columns.concat([columns], Schema.declare({"genre": "keyword"}))
    with pytest.raises(IndexError):
        columns.row(len(DOCS))


def test_keyword_storage_keeps_odd_strings() -> None:
    odd = ["", "\x00", "a\x00", "\ud800", "x" * 10_000, "日本語"]
    rows = [{"s": s} for s in odd]
    schema = Schema().extend(rows)
    loaded = npy_round_trip(Columns.from_metadata(rows, schema), schema)
    assert [loaded.row(i)["s"] for i in range(len(odd))] == odd
    for i, s in enumerate(odd):
        assert np.flatnonzero(parse_filter({"s": s}, schema).mask(loaded)).tolist() == [i]
