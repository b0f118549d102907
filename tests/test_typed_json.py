"""Typed records to JSON and back: what every card, protocol and export record relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from tuning.typed_json import (
    OMIT_NONE,
    RecordError,
    check,
    from_json,
    one_of,
    rule,
    to_json,
    write_json,
)


@dataclass(frozen=True)
class Inner:
    count: int
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0. Received: {self.count}")


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner | None
    items: tuple[Inner, ...] = ()
    table: dict[str, float] = field(default_factory=dict)
    mode: Literal["a", "b"] = "a"
    note: str | None = field(default=None, metadata=OMIT_NONE)
    anything: Any = None


def test_a_record_round_trips_through_json(tmp_path: Path) -> None:
    record = Outer("x", Inner(2), items=(Inner(1, 0.25),), table={"k": 1.5}, mode="b")
    data = to_json(record)
    assert data == {
        "name": "x",
        "inner": {"count": 2, "ratio": 0.5},
        "items": [{"count": 1, "ratio": 0.25}],
        "table": {"k": 1.5},
        "mode": "b",
        "anything": None,
    }  # `note` is None and marked OMIT_NONE: left out
    assert from_json(Outer, data) == record
    path = write_json(tmp_path / "r.json", record)
    assert path.read_text().startswith('{\n  "name": "x"')


def test_missing_keys_take_defaults_and_unknown_keys_are_ignored() -> None:
    record = from_json(Outer, {"name": "x", "inner": None, "added_later": 3})
    assert record == Outer("x", None)
    assert from_json(Inner, {"count": 3}).ratio == 0.5
    assert from_json(Inner, {"count": 3, "ratio": 1}).ratio == 1.0  # an int where a float goes


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"inner": None}, "name", "'name' is missing"),
        ({"name": 3, "inner": None}, "name", "'name' must be a string. Received: 3"),
        ({"name": "x", "inner": {"count": True}}, "inner.count",
         "'inner.count' must be an integer. Received: True"),
        ({"name": "x", "inner": "2"}, "inner", "'inner' must be a table (a JSON object)"),
        ({"name": "x", "inner": None, "items": [{"count": 1}, {}]}, "items[1].count",
         "'items[1].count' is missing"),
        ({"name": "x", "inner": None, "table": {"k": "1"}}, "table.k",
         "'table.k' must be a number. Received: '1'"),
        ({"name": "x", "inner": None, "mode": "c"}, "mode", "'mode' must be one of a, b"),
        ({"name": "x", "inner": {"count": -1}}, "inner",
         "'inner' is not a valid Inner: count must be >= 0. Received: -1"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_names_its_field(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(RecordError) as info:
        from_json(Outer, data)
    assert info.value.field == field and str(info.value).startswith(message)


@dataclass(frozen=True)
class Ruled:
    """A record with rules, checked when read and when built."""

    count: int = field(default=1, metadata=rule(lambda v: v >= 1, "an integer >= 1"))
    mode: str = field(default="a", metadata=one_of(("a", "b")))
    sizes: tuple[int, ...] = field(
        default=(), metadata=rule(lambda v: len(v) <= 2, "a list of at most 2 sizes")
    )
    limit: float | None = field(default=None, metadata=rule(lambda v: v > 0, "a number > 0"))

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Holder:
    ruled: Ruled = Ruled()
    items: tuple[Ruled, ...] = ()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"ruled": {"count": 0}}, "ruled.count",
         "'ruled.count' must be an integer >= 1. Received: 0"),
        ({"ruled": {"count": True}}, "ruled.count",  # a flag is never a count
         "'ruled.count' must be an integer >= 1. Received: True"),
        ({"ruled": {"sizes": [1, "x"]}}, "ruled.sizes",  # the rule words the whole field
         "'ruled.sizes' must be a list of at most 2 sizes. Received: [1, 'x']"),
        ({"ruled": {"sizes": [1, 2, 3]}}, "ruled.sizes",
         "'ruled.sizes' must be a list of at most 2 sizes. Received: [1, 2, 3]"),
        ({"items": [{}, {"mode": "c"}]}, "items[1].mode",
         "'items[1].mode' must be one of a, b. Received: 'c'"),
        ({"ruled": {"limit": 0}}, "ruled.limit", "'ruled.limit' must be a number > 0. Received: 0"),
    ],
)  # fmt: skip
def test_a_value_that_breaks_its_rule_names_its_field(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(RecordError) as info:
        from_json(Holder, data)
    assert info.value.field == field and str(info.value) == message


def test_values_within_their_rules_read() -> None:
    data = {"ruled": {"count": 2, "sizes": [3], "limit": 1}, "items": [{"mode": "b"}]}
    assert from_json(Holder, data) == Holder(Ruled(2, sizes=(3,), limit=1.0), (Ruled(mode="b"),))
    assert from_json(Ruled, {"limit": None}).limit is None  # None is "not set", never checked


def test_strict_reading_refuses_unknown_keys_naming_the_expected_ones() -> None:
    data = {"ruled": {"count": 2, "cuont": 3}}
    assert from_json(Holder, data) == Holder(Ruled(2))  # cards: a newer key is ignored
    with pytest.raises(RecordError) as info:
        from_json(Holder, data, strict=True)  # study files: a typo is refused
    assert info.value.field == "ruled.cuont"
    assert str(info.value) == (
        "unknown key 'ruled.cuont'; expected one of: count, mode, sizes, limit"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"count": 0}, "'Ruled.count' must be an integer >= 1. Received: 0"),
        ({"count": False}, "'Ruled.count' must be an integer >= 1. Received: False"),
        ({"mode": "c"}, "'Ruled.mode' must be one of a, b. Received: 'c'"),
    ],
)
def test_a_record_built_in_code_is_held_to_the_same_rules(
    change: dict[str, Any], message: str
) -> None:
    assert Ruled(limit=2).limit == 2  # an integer where a number goes, as when read
    with pytest.raises(RecordError) as info:
        Ruled(**change)
    assert str(info.value) == message
