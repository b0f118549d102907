"""The protocol a study stores: its stored form, the defaults of keys added later, the check."""

from __future__ import annotations

import pytest

from tuning.errors import StudyMismatchError
from tuning.protocol import Objective, Protocol, Rung


def test_a_protocol_is_stored_as_it_always_was_and_checked_key_by_key() -> None:
    protocol = Protocol(
        rungs=(Rung(2000, 2),), max_epochs=1, seed=42, data_sha256="a", space_fingerprint="f"
    )
    # The stored form of an MNIST study of the built-in space: no hypermodel, no class names.
    assert list(protocol.to_attr()) == [
        "protocol_version", "rungs", "max_epochs", "seed", "precision", "backend",
        "data_sha256", "space_fingerprint",
    ]  # fmt: skip
    for key in ("precision", "backend"):
        before_key = {k: v for k, v in protocol.to_attr().items() if k != key}
        stored = Protocol.read(before_key, study="s", remedy="r")
        # A study stored before `precision` meant float32; before `backend`, TensorFlow.
        assert stored == protocol
    other = Protocol.read({**protocol.to_attr(), "seed": 7}, study="s", remedy="r")
    with pytest.raises(
        Exception, match="^study 's' was made with seed=7, but this run has seed=42"
    ):
        protocol.check(other, study="study 's'", remedy="r")
    protocol.check(other, study="s", remedy="r", ignore=("seed",))


def test_a_protocol_of_another_version_is_refused_with_what_to_do() -> None:
    old = {"subset": 2000, "folds": 2, "max_epochs": 1, "seed": 42, "data_sha256": "a"}
    with pytest.raises(StudyMismatchError) as info:
        Protocol.read(old, study="study 's'", remedy="give it a new name")
    assert str(info.value) == (
        "study 's' was stored by an earlier tuning (protocol 1: one fidelity, untuned training "
        "recipe), so its scores mean something else now; give it a new name"
    )
    broken = {"protocol_version": 2, "rungs": "all", "max_epochs": 1, "seed": 42}
    with pytest.raises(StudyMismatchError, match="has a malformed protocol .'rungs' must be a"):
        Protocol.read(broken, study="study 's'", remedy="r")


def protocol_with(objective: Objective | None) -> Protocol:
    return Protocol(
        rungs=(Rung(2000, 2),),
        max_epochs=1,
        seed=42,
        objective=objective,
        data_sha256="a",
        space_fingerprint="f",
    )


def test_the_objective_is_stored_only_when_it_is_not_accuracy_alone_and_is_checked() -> None:
    plain = protocol_with(None)
    # A study stored before the objective existed has no such key: it reads as the default.
    stored_before = plain.to_attr()
    assert "objective" not in stored_before
    assert Protocol.read(stored_before, study="s", remedy="r") == plain
    same = protocol_with(Objective())
    assert same == plain and "objective" not in same.to_attr()  # one form for the default
    same.check(Protocol.read(stored_before, study="s", remedy="r"), study="s", remedy="r")

    other = protocol_with(Objective(directions=("accuracy", "flops"), limits={"params": 20_000}))
    assert other.to_attr()["objective"] == {
        "directions": ["accuracy", "flops"],
        "limits": {"params": 20_000},
    }
    assert Protocol.read(other.to_attr(), study="s", remedy="r") == other
    with pytest.raises(StudyMismatchError) as info:
        other.check(plain, study="study 'x'", remedy="give it a new name")
    assert str(info.value) == (
        "study 'x' was made to maximise accuracy, but this run asks to maximise accuracy and "
        "minimise flops, with params <= 20,000; give it a new name"
    )
    with pytest.raises(StudyMismatchError, match="was made to maximise accuracy and minimise"):
        plain.check(other, study="study 'x'", remedy="r")
    plain.check(other, study="s", remedy="r", ignore=("objective",))
