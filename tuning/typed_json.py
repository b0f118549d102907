"""Typed records as JSON, and the one validator of values. Every record `tuning` stores or reads
(model cards, protocols, export records, study files, training recipes) is a frozen dataclass:
`to_json` writes it as plain JSON data, `from_json` reads it back into the same dataclass,
checking every field's type and `rule` and naming the dotted field at fault. A key the record
does not know is ignored (refused with `strict=True`, as study files want) and a key it lacks
takes the field's default, so records written by an earlier `tuning` still read. `check` holds a
record built in code to the same rules, from its `__post_init__`."""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")
# Field metadata: leave the key out of the JSON when the value is None (keys added to a record
# after some were stored, so that the older ones keep their exact form).
OMIT_NONE = {"omit_none": True}


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's value must be beyond its type: `test` passes it, and `expected` says so
    in words for errors ("an integer >= 1")."""

    test: Callable[[Any], object]
    expected: str


def rule(test: Callable[[Any], object], expected: str) -> dict[str, Any]:
    """Field metadata: every value of the field (but None) must also pass `test`; `expected`
    words the whole requirement, type included, for errors. Use as `field(default=15,
    metadata=rule(lambda v: v >= 1, "an integer >= 1"))`."""
    return {"rule": Rule(test, expected)}


def one_of(options: Collection[str]) -> dict[str, Any]:
    """Field metadata: the value must be one of `options`."""
    return rule(lambda value: value in options, f"one of {', '.join(options)}")


class RecordError(ValueError):
    """A value does not fit its record; `field` is the dotted path of the value at fault."""

    def __init__(self, field: str, message: str, *, mismatch: bool = False) -> None:
        super().__init__(message)
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


def from_json(cls: type[T], data: Any, *, field: str = "", strict: bool = False) -> T:
    """`data` (parsed JSON or TOML) as a `cls` record; `strict`: refuse keys it does not know.

    Raises:
        RecordError: a value has the wrong type or breaks its field's rule, a required field is
            missing, or (`strict`) a key is unknown, naming the dotted field.
    """
    return typing.cast(T, _Decoder(strict).decode(cls, data, field))


def check(record: Any) -> None:
    """That every field of `record` (a dataclass) fits its type and rule, as `from_json` would
    have it; for a record's `__post_init__`, so that one built in code obeys the same rules.

    Raises:
        RecordError: naming the field as `Class.field`.
    """
    cls: type = type(record)
    decoder = _Decoder(strict=False)
    for f in dataclasses.fields(cls):
        value = to_json(getattr(record, f.name))
        decoder.field(f, _hints(cls)[f.name], value, f"{cls.__name__}.{f.name}")


def field_problem(cls: type, name: str, value: Any) -> str | None:
    """What `value` must be to stand for field `name` of `cls`, in words, if it does not fit
    its type and rule (None: it fits); for values given another way (a flag, a parameter)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = _hints(cls)[name]
    try:
        _Decoder(strict=False).field(f, kind, value, name)
    except RecordError:
        rule_: Rule | None = f.metadata.get("rule")
        return rule_.expected if rule_ else _describe(kind)
    return None


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


class _Decoder:
    """Values into their declared types, one field at a time; `strict` refuses unknown keys."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def decode(self, kind: Any, value: Any, where: str) -> Any:
        origin = typing.get_origin(kind)
        if kind is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            return self.union(kind, value, where)
        if dataclasses.is_dataclass(kind):
            return self.record(typing.cast(type, kind), value, where)
        if origin in (list, tuple, dict):
            return self.container(kind, value, where)
        if origin is Literal:
            if value not in typing.get_args(kind):
                raise _mismatch(kind, value, where)
            return value
        return _decode_scalar(kind, value, where)

    def container(self, kind: Any, value: Any, where: str) -> Any:
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is dict and isinstance(value, dict):
            return {str(k): self.decode(args[1], v, _join(where, str(k))) for k, v in value.items()}
        if origin is not dict and isinstance(value, list):
            items = [self.decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        raise _mismatch(kind, value, where)

    def union(self, kind: Any, value: Any, where: str) -> Any:
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return self.decode(option, value, where)
            except RecordError as exc:
                if not exc.mismatch or exc.field != where:  # it fits the option, but not inside
                    raise
        raise _mismatch(kind, value, where)

    def record(self, cls: type, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(cls, value, where)
        fields = dataclasses.fields(cls)
        if self.strict:
            _refuse_unknown([f.name for f in fields], value, where)
        hints = _hints(cls)
        values = {}
        for f in fields:
            if f.name in value:
                values[f.name] = self.field(f, hints[f.name], value[f.name], _join(where, f.name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _missing(f, value, _join(where, f.name))
        try:
            return cls(**values)
        except RecordError:  # the record's `check`: every field was checked above already
            raise
        except (TypeError, ValueError) as exc:  # a record's own check of its values
            raise RecordError(where, _say(where, f"is not a valid {cls.__name__}: {exc}")) from None

    def field(self, f: dataclasses.Field[Any], kind: Any, value: Any, where: str) -> Any:
        """`value` of field `f` (of type `kind`, at `where`), by its type, then by its rule."""
        rule_: Rule | None = f.metadata.get("rule")
        try:
            decoded = self.decode(kind, value, where)
        except RecordError as exc:
            # A value of the wrong type, or an item of it: the rule says what the field takes.
            if rule_ is None or not exc.mismatch or not _item_of(exc.field, where):
                raise
            raise _broken(rule_, value, where) from None
        if rule_ is not None and decoded is not None and not rule_.test(decoded):
            raise _broken(rule_, value, where)
        return decoded


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


def _refuse_unknown(names: list[str], table: dict[str, Any], where: str) -> None:
    unknown = [key for key in table if key not in names]
    if unknown:
        key = _join(where, unknown[0])
        raise RecordError(key, f"unknown key '{key}'; expected one of: {', '.join(names)}")


def _item_of(field: str, where: str) -> bool:
    """Whether `field` is `where` or an item of it (`where[2]`), not a field of a record in it."""
    return field == where or (field.startswith(f"{where}[") and "." not in field[len(where) :])


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _say(where: str, message: str) -> str:
    return f"'{where}' {message}" if where else message


def _missing(f: dataclasses.Field[Any], table: Any, where: str) -> RecordError:
    rule_: Rule | None = f.metadata.get("rule")
    expected = f" (it must be {rule_.expected})" if rule_ else ""
    return RecordError(where, _say(where, f"is missing{expected}. Received: {table!r:.80}"))


def _broken(rule_: Rule, value: Any, where: str) -> RecordError:
    return RecordError(where, _say(where, f"must be {rule_.expected}. Received: {value!r:.80}"))


def _mismatch(kind: Any, value: Any, where: str) -> RecordError:
    message = _say(where, f"must be {_describe(kind)}. Received: {value!r:.80}")
    return RecordError(where, message, mismatch=True)


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
