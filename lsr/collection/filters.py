"""Metadata filters: a small JSON filter language compiled to boolean masks over documents.

A filter is a JSON object. Each key is either a field name (a condition on that field) or one
of the logical operators ``and``, ``or``, ``not``; several keys in one object must all hold.

Field conditions::

    {"genre": "news"}                         # shorthand for {"genre": {"eq": "news"}}
    {"genre": {"eq": "news"}}                 # equal
    {"genre": {"ne": "news"}}                 # present and different
    {"genre": {"in": ["news", "blog"]}}       # equal to one of
    {"genre": {"nin": ["news", "blog"]}}      # present and equal to none of
    {"year": {"gte": 2000, "lt": 2010}}       # ranges: gt, gte, lt, lte (numbers only), ANDed
    {"draft": {"exists": false}}              # absent (exists: true = present)

Several operators in one field object must all hold: ``{"year": {"gt": 1990, "ne": 2000}}``.

Logical operators::

    {"and": [{"genre": "news"}, {"year": {"gte": 2000}}]}
    {"or": [{"genre": "news"}, {"lang": {"in": ["en", "fr"]}}]}
    {"not": {"draft": true}}
    {"genre": "news", "year": {"gte": 2000}}  # same as the "and" above

Values must fit the field's kind (see :mod:`lsr.collection.schema`): a keyword field compares
with strings, a number field with finite numbers (a bool is not a number), a bool field with
``true``/``false``; range operators need a number field. ``and``/``or`` take a non-empty list;
filters nest at most 32 levels deep. Any mistake - an unknown field or operator, a kind
mismatch, a null, list or object where a value belongs - is an :class:`~lsr.errors.InputError`
raised by :func:`parse_filter` before any document is looked at.

Absent values: a document without the field (or with null) never matches ``eq``, ``ne``,
``in``, ``nin`` or a range; it matches only ``{"exists": false}``. ``not`` is plain boolean
negation over all documents, so ``{"not": {"year": 2000}}`` also matches documents without
``year`` - the semantics of Elasticsearch's ``must_not`` - while ``{"year": {"ne": 2000}}``
does not.

:func:`parse_filter` returns an immutable :class:`Filter` tree. :meth:`Filter.mask` evaluates it
over :class:`~lsr.collection.schema.Columns` with vectorised numpy (a keyword equality is one
integer comparison over the codes; a value no document has gives an all-False mask without a
scan); :meth:`Filter.matches` evaluates one metadata dict; :meth:`Filter.to_json` gives the
canonical JSON form (explicit operators, sorted and de-duplicated ``in`` lists, numbers as
floats), which :func:`parse_filter` maps back to an equal Filter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lsr.collection.schema import (
    Column,
    Columns,
    KeywordColumn,
    NumberColumn,
    Schema,
    classify,
    describe_value,
    known_fields,
)
from lsr.errors import InputError

MAX_DEPTH = 32
COMPARISONS = ("eq", "ne", "in", "nin")
RANGES = ("gt", "gte", "lt", "lte")
OPERATORS = (*COMPARISONS, *RANGES, "exists")
LOGICAL = ("and", "or", "not")

__all__ = [
    "LOGICAL",
    "MAX_DEPTH",
    "OPERATORS",
    "And",
    "Eq",
    "Exists",
    "Filter",
    "In",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Range",
    "parse_filter",
]

Value = str | float | bool


class Filter(ABC):
    """A compiled, immutable filter; build one with :func:`parse_filter`."""

    __slots__ = ()

    @abstractmethod
    def mask(self, columns: Columns) -> np.ndarray:
        """A fresh bool array of length ``columns.n``: True where the document matches."""

    @abstractmethod
    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        """Whether one document's metadata dict matches (None = no metadata)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The canonical JSON form."""


# ----------------------------------------------------------------------------- helpers


def _column(columns: Columns, field: str, kind: str) -> Column | None:
    stored = columns.schema.get(field)
    if stored is not None and stored != kind:
        raise InputError(
            f"filter: field {field!r} is {stored} in these columns but {kind} in the filter"
        )
    return columns.column(field)


def _cell(metadata: Mapping[str, Any] | None, field: str, kind: str) -> Value | None:
    """The stored form of ``metadata[field]``, None when absent; a wrong kind is an error."""
    if not metadata:
        return None
    value = metadata.get(field)
    if value is None:
        return None
    try:
        got, stored = classify(value)
    except ValueError as exc:
        raise InputError(f"metadata: field {field!r}: {exc}") from None
    if got != kind:
        raise InputError(f"metadata: field {field!r} is {kind}, got {describe_value(value)}")
    return stored


def _bool_codes(values: tuple[Value, ...]) -> list[int]:
    return [1 if v else 0 for v in values]


# ----------------------------------------------------------------------------- field nodes


@dataclass(frozen=True, slots=True)
class Eq(Filter):
    field: str
    kind: str
    value: Value

    def mask(self, columns: Columns) -> np.ndarray:
        col = _column(columns, self.field, self.kind)
        if col is None:
            return np.zeros(columns.n, dtype=bool)
        if isinstance(col, KeywordColumn):
            code = col.code_of(self.value)  # type: ignore[arg-type]
            if code < 0:
                return np.zeros(columns.n, dtype=bool)
            return col.codes == code
        if isinstance(col, NumberColumn):
            out = col.values == self.value
            out &= col.present_mask
            return out
        return col.values == (1 if self.value else 0)

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        value = _cell(metadata, self.field, self.kind)
        return value is not None and value == self.value

    def to_json(self) -> dict[str, Any]:
        return {self.field: {"eq": self.value}}


@dataclass(frozen=True, slots=True)
class Ne(Filter):
    """Present and different."""

    field: str
    kind: str
    value: Value

    def mask(self, columns: Columns) -> np.ndarray:
        col = _column(columns, self.field, self.kind)
        if col is None:
            return np.zeros(columns.n, dtype=bool)
        if isinstance(col, KeywordColumn):
            code = col.code_of(self.value)  # type: ignore[arg-type]
            if code < 0:
                return col.codes >= 0
            out = col.codes != code
            out &= col.codes >= 0
            return out
        if isinstance(col, NumberColumn):
            out = col.values != self.value
            out &= col.present_mask
            return out
        return col.values == (0 if self.value else 1)

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        value = _cell(metadata, self.field, self.kind)
        return value is not None and value != self.value

    def to_json(self) -> dict[str, Any]:
        return {self.field: {"ne": self.value}}


def _in_mask(col: Column, values: tuple[Value, ...], n: int, negate: bool) -> np.ndarray:
    """Present and (not, if ``negate``) equal to one of ``values``."""
    if isinstance(col, KeywordColumn):
        codes = col.codes_of(values)  # type: ignore[arg-type]
        if not negate and len(codes) == 0:
            return np.zeros(n, dtype=bool)
        if not negate and len(codes) == 1:
            return col.codes == codes[0]
        k = len(col.values)
        table = np.full(k + 1, negate, dtype=bool)  # slot k answers code -1 (absent)
        table[codes] = not negate
        table[k] = False
        return table[col.codes]
    if isinstance(col, NumberColumn):
        hit = np.isin(col.values, np.asarray(values, dtype=np.float64))
        if negate:
            np.logical_not(hit, out=hit)
        hit &= col.present_mask
        return hit
    table = np.zeros(3, dtype=bool)  # indexes 0, 1 and -1 (absent, slot 2)
    for code in _bool_codes(values):
        table[code] = True
    if negate:
        table[:2] = ~table[:2]
    table[2] = False
    return table[col.values]


@dataclass(frozen=True, slots=True)
class In(Filter):
    field: str
    kind: str
    values: tuple[Value, ...]

    def mask(self, columns: Columns) -> np.ndarray:
        col = _column(columns, self.field, self.kind)
        if col is None:
            return np.zeros(columns.n, dtype=bool)
        return _in_mask(col, self.values, columns.n, negate=False)

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        value = _cell(metadata, self.field, self.kind)
        return value is not None and value in self.values

    def to_json(self) -> dict[str, Any]:
        return {self.field: {"in": list(self.values)}}


@dataclass(frozen=True, slots=True)
class NotIn(Filter):
    """Present and equal to none of the values."""

    field: str
    kind: str
    values: tuple[Value, ...]

    def mask(self, columns: Columns) -> np.ndarray:
        col = _column(columns, self.field, self.kind)
        if col is None:
            return np.zeros(columns.n, dtype=bool)
        return _in_mask(col, self.values, columns.n, negate=True)

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        value = _cell(metadata, self.field, self.kind)
        return value is not None and value not in self.values

    def to_json(self) -> dict[str, Any]:
        return {self.field: {"nin": list(self.values)}}


@dataclass(frozen=True, slots=True)
class Range(Filter):
    """A number field within bounds; every bound given must hold."""

    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    kind: ClassVar[str] = "number"

    def _bounds(self) -> list[tuple[str, float]]:
        return [
            (op, bound)
            for op, bound in (
                ("gt", self.gt),
                ("gte", self.gte),
                ("lt", self.lt),
                ("lte", self.lte),
            )
            if bound is not None
        ]

    def mask(self, columns: Columns) -> np.ndarray:
        col = _column(columns, self.field, "number")
        if col is None:
            return np.zeros(columns.n, dtype=bool)
        assert isinstance(col, NumberColumn)
        out = col.present_mask.copy()
        values = col.values
        for op, bound in self._bounds():
            if op == "gt":
                out &= values > bound
            elif op == "gte":
                out &= values >= bound
            elif op == "lt":
                out &= values < bound
            else:
                out &= values <= bound
        return out

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        value = _cell(metadata, self.field, "number")
        if value is None:
            return False
        for op, bound in self._bounds():
            if op == "gt" and not value > bound:
                return False
            if op == "gte" and not value >= bound:
                return False
            if op == "lt" and not value < bound:
                return False
            if op == "lte" and not value <= bound:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {self.field: dict(self._bounds())}


@dataclass(frozen=True, slots=True)
class Exists(Filter):
    field: str
    kind: str
    exists: bool = True

    def mask(self, columns: Columns) -> np.ndarray:
        col = _column(columns, self.field, self.kind)
        if col is None:
            return np.full(columns.n, not self.exists, dtype=bool)
        out = col.present()
        if not self.exists:
            np.logical_not(out, out=out)
        return out

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        return (_cell(metadata, self.field, self.kind) is not None) == self.exists

    def to_json(self) -> dict[str, Any]:
        return {self.field: {"exists": self.exists}}


# ----------------------------------------------------------------------------- logical nodes


@dataclass(frozen=True, slots=True)
class And(Filter):
    children: tuple[Filter, ...]

    def mask(self, columns: Columns) -> np.ndarray:
        out = self.children[0].mask(columns)
        for child in self.children[1:]:
            if not out.any():
                break
            out &= child.mask(columns)
        return out

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        return all(child.matches(metadata) for child in self.children)

    def to_json(self) -> dict[str, Any]:
        return {"and": [child.to_json() for child in self.children]}


@dataclass(frozen=True, slots=True)
class Or(Filter):
    children: tuple[Filter, ...]

    def mask(self, columns: Columns) -> np.ndarray:
        out = self.children[0].mask(columns)
        for child in self.children[1:]:
            if out.all():
                break
            out |= child.mask(columns)
        return out

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        return any(child.matches(metadata) for child in self.children)

    def to_json(self) -> dict[str, Any]:
        return {"or": [child.to_json() for child in self.children]}


@dataclass(frozen=True, slots=True)
class Not(Filter):
    """Boolean negation over all documents (absent fields included)."""

    child: Filter

    def mask(self, columns: Columns) -> np.ndarray:
        out = self.child.mask(columns)
        np.logical_not(out, out=out)
        return out

    def matches(self, metadata: Mapping[str, Any] | None) -> bool:
        return not self.child.matches(metadata)

    def to_json(self) -> dict[str, Any]:
        return {"not": self.child.to_json()}


# ----------------------------------------------------------------------------- parsing


def _value_kind(value: Any) -> str:
    """How a filter value reads in messages: ``string 'x'``, ``number 3``, ``bool True``."""
    if value is None:
        return "null"
    try:
        kind, _ = classify(value)
    except ValueError:
        if isinstance(value, Mapping):
            return f"object {describe_value(value)}"
        if isinstance(value, list | tuple):
            return f"list {describe_value(value)}"
        return describe_value(value)
    name = {"keyword": "string", "number": "number", "bool": "bool"}[kind]
    return f"{name} {describe_value(value)}"


def _scalar(field: str, kind: str, op: str, value: Any) -> Value:
    """A comparison value for ``field``, converted to its stored form."""
    if value is None:
        raise InputError(
            f"filter: field {field!r}: {op!r} cannot compare with null "
            f'(use {{"exists": false}} for absent values)'
        )
    try:
        got, stored = classify(value)
    except ValueError as exc:
        raise InputError(f"filter: field {field!r}: {op!r} value {exc}") from None
    if got != kind:
        raise InputError(
            f"filter: field {field!r} is {kind}, cannot compare it with {_value_kind(value)}"
        )
    return stored


def _condition(field: str, kind: str, spec: Any) -> Filter:
    if not isinstance(spec, Mapping):
        if isinstance(spec, list | tuple):
            raise InputError(
                f"filter: field {field!r}: a list is not a value; "
                f'use {{"in": [...]}} to match any of several values'
            )
        return Eq(field, kind, _scalar(field, kind, "eq", spec))
    if not spec:
        raise InputError(f"filter: field {field!r}: empty operator object {{}}")
    clauses: list[Filter] = []
    bounds: dict[str, float] = {}
    for op, value in spec.items():
        if op in ("eq", "ne"):
            stored = _scalar(field, kind, op, value)
            clauses.append(Eq(field, kind, stored) if op == "eq" else Ne(field, kind, stored))
        elif op in ("in", "nin"):
            if not isinstance(value, list | tuple):
                raise InputError(
                    f"filter: field {field!r}: {op!r} needs a list of values, "
                    f"got {_value_kind(value)}"
                )
            stored_values = {_scalar(field, kind, op, v) for v in value}
            ordered = tuple(sorted(stored_values))  # type: ignore[type-var]
            clauses.append(In(field, kind, ordered) if op == "in" else NotIn(field, kind, ordered))
        elif op in RANGES:
            if kind != "number":
                raise InputError(
                    f"filter: field {field!r} is {kind}; range operator {op!r} needs a number field"
                )
            bounds[op] = _scalar(field, kind, op, value)  # type: ignore[assignment]
        elif op == "exists":
            if not isinstance(value, bool):
                raise InputError(
                    f"filter: field {field!r}: 'exists' needs true or false, "
                    f"got {_value_kind(value)}"
                )
            clauses.append(Exists(field, kind, value))
        else:
            raise InputError(
                f"filter: field {field!r}: unknown operator {describe_value(op)} "
                f"(operators: {', '.join(OPERATORS)})"
            )
    if bounds:
        clauses.append(Range(field, **bounds))
    return clauses[0] if len(clauses) == 1 else And(tuple(clauses))


def _parse(obj: Any, schema: Schema, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise InputError(f"filter: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(obj, Mapping):
        raise InputError(f"filter: expected an object, got {_value_kind(obj)}")
    if not obj:
        raise InputError("filter: empty filter object {}")
    clauses: list[Filter] = []
    for key, value in obj.items():
        if not isinstance(key, str):
            raise InputError(f"filter: keys must be strings, got {describe_value(key)}")
        if key in ("and", "or"):
            if not isinstance(value, list | tuple) or not value:
                raise InputError(
                    f"filter: {key!r} needs a non-empty list of filters, got {_value_kind(value)}"
                )
            children = tuple(_parse(child, schema, depth + 1) for child in value)
            clauses.append(And(children) if key == "and" else Or(children))
        elif key == "not":
            clauses.append(Not(_parse(value, schema, depth + 1)))
        else:
            kind = schema.get(key)
            if kind is None:
                raise InputError(
                    f"filter: unknown field {describe_value(key)} (known: {known_fields(schema)})"
                )
            clauses.append(_condition(key, kind, value))
    return clauses[0] if len(clauses) == 1 else And(tuple(clauses))


def parse_filter(obj: Any, schema: Schema) -> Filter:
    """Validate a JSON filter against ``schema`` and compile it (see the module docstring).

    A :class:`Filter` is accepted too and re-checked against ``schema``.
    """
    if isinstance(obj, Filter):
        obj = obj.to_json()
    return _parse(obj, schema, 1)
