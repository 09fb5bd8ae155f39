"""The metadata schema of a collection and its columnar, per-segment storage.

Every document may carry a flat metadata object: field name -> value, where a value is a
string (kind ``"keyword"``), a finite int or float (kind ``"number"``, stored and compared as
float64, so integers past 2**53 round; a bool is *not* a number) or a bool (kind ``"bool"``).
``None`` (JSON null) or a missing key means the field is absent from that document. Nested
objects and lists are not supported.

:class:`Schema` maps each field name to its kind. It grows by inference
(:meth:`Schema.extend`: a new field takes the kind of the first value seen) or is declared up
front (:meth:`Schema.declare`); either way a later value of another kind is an
:class:`~lsr.errors.InputError` naming the document, the field, its kind and the value.

:class:`Columns` holds the metadata of ``n`` documents, in a fixed order, as typed numpy
columns, so that a filter (:mod:`lsr.collection.filters`) becomes a few vectorised comparisons:

* keyword: ``codes`` (int32, -1 = absent) into ``values``, the sorted distinct strings;
* number: ``values`` (float64, NaN where absent) and ``present`` (bool);
* bool: ``values`` (int8: -1 absent, 0 false, 1 true).

A field that no document of a :class:`Columns` has is not stored at all and reads as absent
everywhere, so columns written before a field existed keep working under a grown schema.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from lsr.errors import IndexFormatError, InputError

Kind = Literal["keyword", "number", "bool"]
KINDS: tuple[str, ...] = ("keyword", "number", "bool")
MAX_FIELD_NAME = 128
RESERVED_NAMES = frozenset({"and", "or", "not"})  # the filter language's logical operators
COLUMNS_FORMAT = 1

__all__ = [
    "COLUMNS_FORMAT",
    "KINDS",
    "MAX_FIELD_NAME",
    "RESERVED_NAMES",
    "BoolColumn",
    "Column",
    "Columns",
    "KeywordColumn",
    "Kind",
    "NumberColumn",
    "Schema",
    "classify",
    "describe_value",
    "field_name_problem",
]


# ----------------------------------------------------------------------------- values


def describe_value(value: Any, limit: int = 60) -> str:
    """A short, quoted rendering of a user value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(value: Any) -> tuple[Kind, str | float | bool]:
    """The kind of one non-null metadata value and its stored form.

    Raises ValueError with a reason (to be wrapped with context by the caller) for a value no
    kind accepts: a list, an object, a non-finite or overlarge number, bytes, ...
    """
    if isinstance(value, bool | np.bool_):
        return "bool", bool(value)
    if isinstance(value, str):
        return "keyword", str(value)
    if isinstance(value, int | float | np.integer | np.floating):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"{describe_value(value)} is too large for a float64 number") from None
        if not math.isfinite(number):
            raise ValueError(f"{describe_value(value)} is not a finite number")
        return "number", number + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, Mapping):
        what = "a nested object"
    elif isinstance(value, list | tuple | set | frozenset | np.ndarray):
        what = "a list"
    else:
        what = f"a {type(value).__name__}"
    raise ValueError(
        f"{describe_value(value)} is {what}; values must be strings, numbers or booleans"
    )


def field_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a field name, or None when it can."""
    if not isinstance(name, str):
        return f"field names must be strings, got {describe_value(name)} ({type(name).__name__})"
    if not name:
        return "field names must be non-empty"
    if len(name) > MAX_FIELD_NAME:
        return f"field name {describe_value(name)} is longer than {MAX_FIELD_NAME} characters"
    if name.startswith("$"):
        return f"field name {name!r} must not start with '$'"
    if name in RESERVED_NAMES:
        return f"field name {name!r} is reserved by the filter language (and, or, not)"
    return None


def known_fields(names: Sequence[str] | Mapping[str, Any], limit: int = 20) -> str:
    """``"a, b, c"`` (sorted, abbreviated past ``limit``) for 'unknown field' messages."""
    ordered = sorted(names)
    if not ordered:
        return "none"
    if len(ordered) > limit:
        return ", ".join(ordered[:limit]) + f", ... ({len(ordered) - limit} more)"
    return ", ".join(ordered)


# ----------------------------------------------------------------------------- schema


class Schema(Mapping[str, str]):
    """An immutable mapping field name -> kind ("keyword", "number" or "bool"), in the order
    fields were first seen or declared."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, str] | None = None) -> None:
        checked: dict[str, str] = {}
        for name, kind in (fields or {}).items():
            problem = field_name_problem(name)
            if problem is not None:
                raise InputError(f"schema: {problem}")
            if kind not in KINDS:
                raise InputError(
                    f"schema: field {name!r} has unknown kind {describe_value(kind)} "
                    f"(kinds: {', '.join(KINDS)})"
                )
            checked[name] = kind
        self._fields = MappingProxyType(checked)

    @classmethod
    def declare(cls, fields: Mapping[str, str]) -> Schema:
        """A schema declared up front, e.g. ``Schema.declare({"year": "number"})``."""
        if not isinstance(fields, Mapping):
            raise InputError(f"schema: expected an object of field -> kind, got {fields!r}")
        return cls(fields)

    @classmethod
    def from_json(cls, obj: Any) -> Schema:
        """The inverse of :meth:`to_json`: ``{"fields": {"name": "kind", ...}}``."""
        if not isinstance(obj, Mapping) or not isinstance(obj.get("fields"), Mapping):
            raise InputError(
                f'schema: expected {{"fields": {{name: kind, ...}}}}, got {describe_value(obj)}'
            )
        return cls(obj["fields"])

    def to_json(self) -> dict[str, Any]:
        return {"fields": dict(self._fields)}

    @property
    def fields(self) -> Mapping[str, str]:
        """The read-only mapping field name -> kind."""
        return self._fields

    def __getitem__(self, name: str) -> str:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Schema):
            return dict(self._fields) == dict(other._fields)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._fields.items()))

    def __repr__(self) -> str:
        return f"Schema({dict(self._fields)!r})"

    def extend(
        self, metadata: Sequence[Mapping[str, Any] | None], *, allow_new_fields: bool = True
    ) -> Schema:
        """Validate a batch of metadata and return the schema grown by its new fields.

        A new field takes the kind of its first non-null value (in batch order). ``self`` is
        unchanged; when the batch brings no new field the result is ``self``. With
        ``allow_new_fields=False`` a field outside the schema is an error. Errors name the
        document's position in the batch, e.g. ``document 3: field 'year' is number, got 'abc'``.
        """
        fields = dict(self._fields)
        for position, meta in enumerate(metadata):
            if meta is None:
                continue
            if not isinstance(meta, Mapping):
                raise InputError(
                    f"document {position}: metadata must be an object (field -> value), "
                    f"got {describe_value(meta)}"
                )
            for name, value in meta.items():
                problem = field_name_problem(name)
                if problem is not None:
                    raise InputError(f"document {position}: {problem}")
                if value is None:
                    continue
                try:
                    kind, _ = classify(value)
                except ValueError as exc:
                    raise InputError(f"document {position}: field {name!r}: {exc}") from None
                expected = fields.get(name)
                if expected is None:
                    if not allow_new_fields:
                        raise InputError(
                            f"document {position}: unknown field {name!r} "
                            f"(known: {known_fields(fields)})"
                        )
                    fields[name] = kind
                elif expected != kind:
                    raise InputError(
                        f"document {position}: field {name!r} is {expected}, "
                        f"got {describe_value(value)}"
                    )
        if len(fields) == len(self._fields):
            return self
        return Schema(fields)


# ----------------------------------------------------------------------------- columns


@dataclass(frozen=True, eq=False)
class KeywordColumn:
    """``codes[i]`` indexes ``values`` (sorted distinct strings, object array); -1 = absent."""

    codes: np.ndarray
    values: np.ndarray

    kind = "keyword"

    def code_of(self, value: str) -> int:
        """The code of ``value``, or -1 when no document of this column has it."""
        idx = int(np.searchsorted(self.values, value))
        if idx < len(self.values) and self.values[idx] == value:
            return idx
        return -1

    def codes_of(self, values: Sequence[str]) -> np.ndarray:
        """The codes of those ``values`` this column has (int64, any order)."""
        if not len(values) or not len(self.values):
            return np.zeros(0, dtype=np.int64)
        query = _object_array(values)
        idx = np.searchsorted(self.values, query)
        inside = idx < len(self.values)
        idx, query = idx[inside], query[inside]
        hit = np.asarray(self.values[idx] == query, dtype=bool)
        return idx[hit].astype(np.int64, copy=False)

    def present(self) -> np.ndarray:
        return self.codes >= 0


@dataclass(frozen=True, eq=False)
class NumberColumn:
    """float64 ``values`` (NaN where absent) and the bool ``present`` mask."""

    values: np.ndarray
    present_mask: np.ndarray

    kind = "number"

    def present(self) -> np.ndarray:
        return self.present_mask.copy()


@dataclass(frozen=True, eq=False)
class BoolColumn:
    """int8 ``values``: -1 absent, 0 false, 1 true."""

    values: np.ndarray

    kind = "bool"

    def present(self) -> np.ndarray:
        return self.values >= 0


Column = KeywordColumn | NumberColumn | BoolColumn


def _object_array(items: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


def _absent_column(kind: str, n: int) -> Column:
    if kind == "keyword":
        return KeywordColumn(np.full(n, -1, dtype=np.int32), _object_array([]))
    if kind == "number":
        return NumberColumn(np.full(n, np.nan), np.zeros(n, dtype=bool))
    return BoolColumn(np.full(n, -1, dtype=np.int8))


def _any_present(column: Column) -> bool:
    if isinstance(column, NumberColumn):
        return bool(column.present_mask.any())
    if isinstance(column, KeywordColumn):
        return bool(len(column.values)) and bool((column.codes >= 0).any())
    return bool((column.values >= 0).any())


class Columns:
    """The metadata of ``n`` documents (in a fixed order) as typed numpy columns.

    Only fields some document has are stored; :meth:`column` returns None for the others,
    which every filter reads as absent. Instances are immutable: arrays are never written to,
    so they may be read-only memory maps.
    """

    __slots__ = ("_columns", "n", "schema")

    def __init__(self, n: int, schema: Schema, columns: Mapping[str, Column]) -> None:
        for name, column in columns.items():
            if schema.get(name) != column.kind:
                raise ValueError(f"column {name!r} ({column.kind}) does not fit {schema!r}")
        self.n = int(n)
        self.schema = schema
        self._columns = dict(columns)

    def __repr__(self) -> str:
        return f"Columns(n={self.n}, stored={list(self._columns)})"

    def column(self, name: str) -> Column | None:
        """The stored column of field ``name``, or None when no document here has the field."""
        return self._columns.get(name)

    @property
    def stored_fields(self) -> tuple[str, ...]:
        return tuple(self._columns)

    # -- construction

    @classmethod
    def from_metadata(cls, metadata: Sequence[Mapping[str, Any] | None], schema: Schema) -> Columns:
        """Columns of ``metadata`` (one entry per document, None = no metadata).

        The batch should have passed :meth:`Schema.extend` for this schema; a field outside it
        or a value of the wrong kind is still an InputError.
        """
        n = len(metadata)
        keyword: dict[str, tuple[list[int], dict[str, int], list[int]]] = {}
        numbers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        bools: dict[str, np.ndarray] = {}
        for position, meta in enumerate(metadata):
            if not meta:
                continue
            if not isinstance(meta, Mapping):
                raise InputError(
                    f"document {position}: metadata must be an object (field -> value), "
                    f"got {describe_value(meta)}"
                )
            for name, value in meta.items():
                if value is None:
                    continue
                expected = schema.get(name) if isinstance(name, str) else None
                if expected is None:
                    raise InputError(
                        f"document {position}: unknown field {describe_value(name)} "
                        f"(known: {known_fields(schema)})"
                    )
                try:
                    kind, stored = classify(value)
                except ValueError as exc:
                    raise InputError(f"document {position}: field {name!r}: {exc}") from None
                if kind != expected:
                    raise InputError(
                        f"document {position}: field {name!r} is {expected}, "
                        f"got {describe_value(value)}"
                    )
                if kind == "keyword":
                    rows, ids, codes = keyword.setdefault(name, ([], {}, []))
                    rows.append(position)
                    codes.append(ids.setdefault(stored, len(ids)))  # type: ignore[arg-type]
                elif kind == "number":
                    if name not in numbers:
                        numbers[name] = (np.full(n, np.nan), np.zeros(n, dtype=bool))
                    values, present = numbers[name]
                    values[position] = stored
                    present[position] = True
                else:
                    if name not in bools:
                        bools[name] = np.full(n, -1, dtype=np.int8)
                    bools[name][position] = 1 if stored else 0
        columns: dict[str, Column] = {}
        for name in schema:  # schema order: deterministic storage
            if name in keyword:
                rows, ids, first_seen = keyword[name]
                distinct = sorted(ids)
                rank = np.empty(len(distinct), dtype=np.int32)
                rank[[ids[v] for v in distinct]] = np.arange(len(distinct), dtype=np.int32)
                codes = np.full(n, -1, dtype=np.int32)
                codes[np.asarray(rows, dtype=np.int64)] = rank[np.asarray(first_seen)]
                columns[name] = KeywordColumn(codes, _object_array(distinct))
            elif name in numbers:
                columns[name] = NumberColumn(*numbers[name])
            elif name in bools:
                columns[name] = BoolColumn(bools[name])
        return cls(n, schema, columns)

    def take(self, positions: np.ndarray) -> Columns:
        """The columns of documents ``positions`` (integers in [0, n), any order, repeats ok).

        Keyword dictionaries are compacted to the values still used, and a field left with no
        document is dropped.
        """
        positions = np.asarray(positions)
        if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
            raise ValueError("take: positions must be a 1-d integer array")
        positions = positions.astype(np.int64, copy=False)
        if positions.size and (positions.min() < 0 or positions.max() >= self.n):
            raise ValueError(f"take: positions must lie in [0, {self.n})")
        columns: dict[str, Column] = {}
        for name, column in self._columns.items():
            taken: Column
            if isinstance(column, KeywordColumn):
                codes = column.codes[positions]
                k = len(column.values)
                used = np.zeros(k + 1, dtype=bool)
                used[codes] = True  # -1 marks the sentinel slot k
                keep = np.flatnonzero(used[:k])
                remap = np.full(k + 1, -1, dtype=np.int32)
                remap[keep] = np.arange(len(keep), dtype=np.int32)
                taken = KeywordColumn(remap[codes], column.values[keep])
            elif isinstance(column, NumberColumn):
                taken = NumberColumn(column.values[positions], column.present_mask[positions])
            else:
                taken = BoolColumn(column.values[positions])
            if _any_present(taken):
                columns[name] = taken
        return Columns(len(positions), self.schema, columns)

    @classmethod
    def concat(cls, parts: Sequence[Columns], schema: Schema) -> Columns:
        """The documents of ``parts`` one after another, under ``schema`` (which must include
        every part's fields with the same kinds); keyword codes are remapped to a merged
        dictionary."""
        for part in parts:
            for name, kind in part.schema.items():
                if schema.get(name) != kind:
                    raise ValueError(f"concat: field {name!r} ({kind}) does not fit {schema!r}")
        n = sum(part.n for part in parts)
        columns: dict[str, Column] = {}
        for name, kind in schema.items():
            pieces = [part.column(name) for part in parts]
            if all(piece is None for piece in pieces):
                continue
            filled = [
                piece if piece is not None else _absent_column(kind, part.n)
                for piece, part in zip(pieces, parts, strict=True)
            ]
            if kind == "keyword":
                merged = sorted(set().union(*(set(p.values.tolist()) for p in filled)))
                merged_arr = _object_array(merged)
                codes = []
                for piece in filled:
                    remap = np.full(len(piece.values) + 1, -1, dtype=np.int32)
                    if len(piece.values):
                        remap[:-1] = np.searchsorted(merged_arr, piece.values)
                    codes.append(remap[piece.codes])
                columns[name] = KeywordColumn(np.concatenate(codes), merged_arr)
            elif kind == "number":
                columns[name] = NumberColumn(
                    np.concatenate([p.values for p in filled]).astype(np.float64, copy=False),
                    np.concatenate([p.present_mask for p in filled]).astype(bool, copy=False),
                )
            else:
                columns[name] = BoolColumn(
                    np.concatenate([p.values for p in filled]).astype(np.int8, copy=False)
                )
        return cls(n, schema, columns)

    # -- persistence

    def description(self) -> dict[str, Any]:
        """The JSON-able description of :meth:`to_arrays`: the stored fields, in order (field
        ``i`` owns the arrays named ``meta.<i>.*``)."""
        return {
            "format": COLUMNS_FORMAT,
            "fields": [{"name": name, "kind": col.kind} for name, col in self._columns.items()],
        }

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(description, arrays)``: the JSON-able :meth:`description` and plain numeric arrays
        (np.save-able without pickle) named ``meta.<i>.<part>``, ``i`` the field's position in
        the description:

        keyword: ``codes`` int32, ``keys`` uint8 (the sorted distinct strings, UTF-8,
        concatenated) and ``key_offsets`` int64 (k + 1 offsets into ``keys``);
        number: ``values`` float64 and ``present`` bool; bool: ``values`` int8.
        """
        arrays: dict[str, np.ndarray] = {}
        for i, column in enumerate(self._columns.values()):
            prefix = f"meta.{i}."
            if isinstance(column, KeywordColumn):
                encoded = [s.encode("utf-8", "surrogatepass") for s in column.values.tolist()]
                offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
                np.cumsum([len(b) for b in encoded], out=offsets[1:])
                arrays[prefix + "codes"] = np.ascontiguousarray(column.codes, dtype=np.int32)
                arrays[prefix + "keys"] = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
                arrays[prefix + "key_offsets"] = offsets
            elif isinstance(column, NumberColumn):
                arrays[prefix + "values"] = np.ascontiguousarray(column.values, dtype=np.float64)
                arrays[prefix + "present"] = np.ascontiguousarray(column.present_mask, dtype=bool)
            else:
                arrays[prefix + "values"] = np.ascontiguousarray(column.values, dtype=np.int8)
        return self.description(), arrays

    @classmethod
    def from_arrays(
        cls,
        description: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        n: int,
        schema: Schema,
    ) -> Columns:
        """Load what :meth:`to_arrays` gave (arrays may be read-only
        memory maps; they are used without copying). ``schema`` may have grown since: fields
        it has and the description lacks read as absent. Damage is an IndexFormatError."""
        try:
            fmt = description["format"]
            entries = list(description["fields"])
        except (KeyError, TypeError) as exc:
            raise IndexFormatError(f"metadata columns: description lacks {exc}") from None
        if fmt != COLUMNS_FORMAT:
            raise IndexFormatError(f"metadata columns: unsupported format {fmt!r}")

        def array(name: str, dtype: Any) -> np.ndarray:
            if name not in arrays:
                raise IndexFormatError(f"metadata columns: array {name!r} is missing")
            arr = np.asarray(arrays[name])
            if arr.ndim != 1 or arr.dtype != np.dtype(dtype):
                raise IndexFormatError(
                    f"metadata columns: array {name!r} is {arr.dtype}{list(arr.shape)}, "
                    f"expected 1-d {np.dtype(dtype)}"
                )
            return arr

        def sized(name: str, dtype: Any) -> np.ndarray:
            arr = array(name, dtype)
            if len(arr) != n:
                raise IndexFormatError(
                    f"metadata columns: array {name!r} has {len(arr)} entries, expected {n}"
                )
            return arr

        columns: dict[str, Column] = {}
        for i, entry in enumerate(entries):
            try:
                name, kind = entry["name"], entry["kind"]
            except (KeyError, TypeError):
                raise IndexFormatError(f"metadata columns: garbled field entry {entry!r}") from None
            if schema.get(name) != kind:
                raise IndexFormatError(
                    f"metadata columns: field {name!r} is stored as {kind} but the schema says "
                    f"{schema.get(name)}"
                )
            prefix = f"meta.{i}."
            column: Column
            if kind == "keyword":
                codes = sized(prefix + "codes", np.int32)
                blob = array(prefix + "keys", np.uint8)
                offsets = array(prefix + "key_offsets", np.int64)
                k = len(offsets) - 1
                if (
                    k < 0
                    or offsets[0] != 0
                    or offsets[-1] != len(blob)
                    or (k and bool((np.diff(offsets) < 0).any()))
                ):
                    raise IndexFormatError(f"metadata columns: field {name!r}: bad key offsets")
                raw = blob.tobytes()
                bounds = offsets.tolist()
                try:
                    keys = [
                        raw[bounds[j] : bounds[j + 1]].decode("utf-8", "surrogatepass")
                        for j in range(k)
                    ]
                except UnicodeDecodeError:
                    raise IndexFormatError(f"metadata columns: field {name!r}: bad keys") from None
                if any(a >= b for a, b in itertools.pairwise(keys)):
                    raise IndexFormatError(
                        f"metadata columns: field {name!r}: keys are not sorted and distinct"
                    )
                if n and (int(codes.min()) < -1 or int(codes.max()) >= k):
                    raise IndexFormatError(f"metadata columns: field {name!r}: codes out of range")
                column = KeywordColumn(codes, _object_array(keys))
            elif kind == "number":
                column = NumberColumn(
                    sized(prefix + "values", np.float64), sized(prefix + "present", np.bool_)
                )
            elif kind == "bool":
                values = sized(prefix + "values", np.int8)
                if n and (int(values.min()) < -1 or int(values.max()) > 1):
                    raise IndexFormatError(f"metadata columns: field {name!r}: bad bool values")
                column = BoolColumn(values)
            else:  # pragma: no cover - the schema check above rules this out
                raise IndexFormatError(f"metadata columns: unknown kind {kind!r}")
            columns[name] = column
        return cls(n, schema, columns)

    # -- reading back

    def row(self, i: int) -> dict[str, Any]:
        """The metadata of document ``i`` (absent fields omitted; numbers as floats)."""
        if not 0 <= i < self.n:
            raise IndexError(f"row {i} out of range [0, {self.n})")
        out: dict[str, Any] = {}
        for name, column in self._columns.items():
            if isinstance(column, KeywordColumn):
                code = int(column.codes[i])
                if code >= 0:
                    out[name] = column.values[code]
            elif isinstance(column, NumberColumn):
                if column.present_mask[i]:
                    out[name] = float(column.values[i])
            else:
                value = int(column.values[i])
                if value >= 0:
                    out[name] = bool(value)
        return out
