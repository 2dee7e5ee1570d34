"""The exception tree: drawn once in ``shipyard.errors``' docstring, defined once, kept in step."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass

import pytest

import shipyard
from shipyard import errors
from shipyard.errors import BackpressureError, ShipyardError

# "    │   ├── SchemaError                422  exit 2           columns missing or mistyped"
LINE = re.compile(
    r"^ {4}(?P<indent>(?:[│ ] {3})*)(?:[├└]── )?(?P<name>\w+)\s+(?P<status>\d{3})\s+"
    r"exit (?P<exit>\d+)(?:\s+(?P<retried>retried))?(?:\s{2,}\S.*)?$"
)


@dataclass(frozen=True)
class Drawn:
    name: str
    parent: str | None
    status_code: int
    exit_code: int
    retryable: bool


def drawn_tree() -> list[Drawn]:
    """Every class the docstring's tree draws, with its parent and documented codes."""
    doc = errors.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    lines = [line for line in block.splitlines() if line.strip()]
    drawn: list[Drawn] = []
    stack: list[str] = []  # the ancestors of the current line, by depth
    for line in lines:
        match = LINE.match(line)
        assert match is not None, f"tree line does not parse: {line!r}"
        depth = len(match["indent"]) // 4 + (1 if "──" in line else 0)
        stack[depth:] = [match["name"]]
        drawn.append(
            Drawn(
                name=match["name"],
                parent=stack[depth - 1] if depth else None,
                status_code=int(match["status"]),
                exit_code=int(match["exit"]),
                retryable=match["retried"] is not None,
            )
        )
    return drawn


def defined_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    }


def shipyard_modules() -> list[str]:
    names = [shipyard.__name__]
    for module in pkgutil.walk_packages(shipyard.__path__, f"{shipyard.__name__}."):
        if module.name.rsplit(".", 1)[-1] != "__main__":  # importing it would run the CLI
            names.append(module.name)
    return names


def test_the_tree_parses_and_has_one_root() -> None:
    drawn = drawn_tree()
    assert drawn[0] == Drawn("ShipyardError", None, 500, 1, False)
    assert [d.name for d in drawn if d.parent is None] == ["ShipyardError"]
    assert len({d.name for d in drawn}) == len(drawn)


def test_the_tree_draws_exactly_the_classes_defined() -> None:
    assert sorted(d.name for d in drawn_tree()) == sorted(defined_classes())


def test_each_class_has_the_parent_and_codes_the_tree_shows() -> None:
    classes = defined_classes()
    for entry in drawn_tree():
        cls = classes[entry.name]
        if entry.parent is None:
            assert cls.__bases__ == (Exception,)
        else:
            assert cls.__bases__ == (classes[entry.parent],), entry.name
        assert issubclass(cls, ShipyardError)
        assert (cls.status_code, cls.exit_code, cls.retryable) == (
            entry.status_code,
            entry.exit_code,
            entry.retryable,
        ), entry.name


def test_every_class_has_a_docstring_of_its_own() -> None:
    for name, cls in defined_classes().items():
        assert (vars(cls).get("__doc__") or "").strip(), name


def test_no_other_module_defines_an_exception_class() -> None:
    outside = []
    for module in shipyard_modules():
        for name, value in vars(importlib.import_module(module)).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith(f"{shipyard.__name__}.")
                and value.__module__ != errors.__name__
            ):
                outside.append(f"{module}.{name}")
    assert outside == []


def test_every_shipyard_error_in_the_package_is_defined_in_errors() -> None:
    for module in shipyard_modules():
        importlib.import_module(module)
    seen: list[type[ShipyardError]] = []
    todo = [ShipyardError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    outside = [f"{c.__module__}.{c.__qualname__}" for c in seen if c.__module__ != errors.__name__]
    assert outside == []
    assert len(seen) == len(drawn_tree())


@pytest.mark.parametrize("name", sorted(defined_classes()))
def test_messages_are_kept_as_given(name: str) -> None:
    cls = defined_classes()[name]
    message = "the model 'fraud' has no version 9; list them with `shipyard models show fraud`"
    error = cls(message, [0]) if cls is BackpressureError else cls(message)
    assert isinstance(error, ShipyardError)
    assert str(error) == message
    assert error.message == message
    assert error.args == (message,)


def test_backpressure_names_what_it_refused() -> None:
    error = BackpressureError("queue 'q' is full: refused 2 of 5", refused=[3, 4])
    assert error.refused == (3, 4)
    assert isinstance(error, errors.UnavailableError)
    assert error.retryable
