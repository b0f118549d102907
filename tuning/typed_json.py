"""Typed records as JSON. Every record `tuning` stores (model cards, protocols, export records) is
a frozen dataclass: `to_json` writes it as plain JSON data, `from_json` reads it back into the
same dataclass, checking every field's type and naming the field at fault. A key the record
does not know is ignored and a key it lacks takes the field's default, so records written by an
earlier `tuning` still read."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")
# Field metadata: leave the key out of the JSON when the value is None (keys added to a record
# after some were stored, so that the older ones keep their exact form).
OMIT_NONE = {"omit_none": True}


class RecordError(ValueError):
    """A JSON value does not fit its record; `field` is the dotted path of the value at fault."""

    def __init__(self, field: str, message: str, *, mismatch: bool = False) -> None:
        super().__init__(f"'{field}' {message}" if field else message)
        self.field = field
        self.mismatch = mismatch  # the value itself has the wrong type (not a field inside it)


def to_json(record: Any) -> Any:
    """`record` as JSON-ready data: dataclasses as objects in field order, tuples as lists,
    paths as strings."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {
            f.name: to_json(getattr(record, f.name))
            for f in dataclasses.fields(record)
            if not (getattr(record, f.name) is None and f.metadata.get("omit_none"))
        }
    if isinstance(record, list | tuple):
        return [to_json(value) for value in record]
    if isinstance(record, dict):
        return {str(key): to_json(value) for key, value in record.items()}
    if isinstance(record, Path):
        return str(record)
    return record


def from_json(cls: type[T], data: Any, *, field: str = "") -> T:
    """`data` (parsed JSON) as a `cls` record.

    Raises:
        RecordError: a value has the wrong type, or a required field is missing, naming it.
    """
    return typing.cast(T, _decode(cls, data, field))


def write_json(path: Path, payload: Any) -> Path:
    """Write `payload` (a record or JSON data) as indented JSON; returns `path`."""
    text = json.dumps(to_json(payload), indent=2, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_json(path: Path) -> Any:
    """The parsed JSON of `path` (to pass to `from_json`).

    Raises:
        OSError: it cannot be read. ValueError: it is not JSON text.
    """
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _decode_union(kind, value, where)
    if dataclasses.is_dataclass(kind):
        return _decode_record(typing.cast(type, kind), value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _mismatch(kind, value, where)
        item = typing.get_args(kind)[0]
        items = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _mismatch(kind, value, where)
        item = typing.get_args(kind)[1]
        return {str(k): _decode(item, v, _join(where, str(k))) for k, v in value.items()}
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise _mismatch(kind, value, where)
        return value
    return _decode_scalar(kind, value, where)


def _decode_scalar(kind: Any, value: Any, where: str) -> Any:
    # bool is an int in Python; a flag is never a count.
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and isinstance(value, kind):
        if kind is int and isinstance(value, bool):
            raise _mismatch(kind, value, where)
        return value
    if kind in (int, float, str, bool):
        raise _mismatch(kind, value, where)
    raise TypeError(f"no JSON form for fields of type {kind!r}")


def _decode_union(kind: Any, value: Any, where: str) -> Any:
    options = typing.get_args(kind)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _decode(option, value, where)
        except RecordError as exc:
            if not exc.mismatch or exc.field != where:  # it fits the option, but not inside
                raise
    raise _mismatch(kind, value, where)


def _decode_record(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise _mismatch(cls, value, where)
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            values[f.name] = _decode(hints[f.name], value[f.name], _join(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(_join(where, f.name), "is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a record's own check of its values
        raise RecordError(where, f"is not a valid {cls.__name__}: {exc}") from None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _mismatch(kind: Any, value: Any, where: str) -> RecordError:
    return RecordError(where, f"must be {_describe(kind)}. Received: {value!r:.80}", mismatch=True)


def _describe(kind: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    origin = typing.get_origin(kind)
    if kind in names:
        return names[kind]
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(kind) if o is not type(None)]
        return " or ".join(_describe(o) for o in options)
    if origin in (list, tuple):
        item = typing.get_args(kind)[0]
        plural = {int: "integers", float: "numbers", str: "strings"}.get(item)
        return f"a list of {plural}" if plural else "a list"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(kind)))
    return "a table (a JSON object)"
