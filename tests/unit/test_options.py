"""The Agenda's options: each converted once, errors naming the argument and its value."""

from __future__ import annotations

import inspect
from dataclasses import fields
from datetime import timedelta
from typing import Any

import pytest

from agendapy import Agenda
from agendapy.errors import InvalidInput
from agendapy.options import AgendaOptions, job_definition

# Agenda's own defaults for every declared option, so a new option cannot be left out of either side.
DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(Agenda).parameters.items()
    if name in {f.name for f in fields(AgendaOptions)}
}


def test_every_declared_option_is_an_argument_of_agenda() -> None:
    assert set(DEFAULTS) == {f.name for f in fields(AgendaOptions)}


def test_defaults_convert_to_settled_values() -> None:
    options = AgendaOptions.convert(**DEFAULTS)
    assert options.process_every == timedelta(seconds=5)
    assert options.default_lock_lifetime == timedelta(minutes=10)
    assert options.dependency_check_every == options.process_every  # follows process_every
    assert options.state_write_window == timedelta(milliseconds=5)
    assert options.fork_method in ("forkserver", "spawn")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_concurrency", 0, "must be an int, 1 or more"),
        ("lock_limit", -1, "must be an int, 0 or more"),
        ("history_keep", True, "must be an int, 1 or more"),
        ("history", "some", "must be 'all', 'recurring' or 'none'"),
        ("fork_method", "fork", "must be 'forkserver' or 'spawn'"),
        ("state_write_window", 2, "must be at most 1 second"),
        ("state_write_window", timedelta(0), "longer than zero"),
        ("process_every", -1, "cannot be negative"),
        ("heartbeat_every", 0, "longer than zero"),
        ("logs_collection", "a$b", "must be a collection name"),
        ("workers_collection", "", "must be a collection name"),
    ],
)
def test_a_bad_option_is_named_with_its_value(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        AgendaOptions.convert(**{**DEFAULTS, field: value})
    assert caught.value.field == field
    assert caught.value.value == value


def test_options_are_checked_in_declaration_order() -> None:
    with pytest.raises(InvalidInput) as caught:
        AgendaOptions.convert(**{**DEFAULTS, "max_concurrency": 0, "history": "some"})
    assert caught.value.field == "max_concurrency"


def test_a_plain_zero_write_window_means_one_loop_turn() -> None:
    assert AgendaOptions.convert(**{**DEFAULTS, "state_write_window": 0}).state_write_window == timedelta(0)


def test_define_options_fall_back_to_the_agenda_defaults() -> None:
    options = AgendaOptions.convert(**DEFAULTS)
    defaults = {
        "concurrency": options.default_concurrency,
        "lock_limit": options.default_lock_limit,
        "lock_lifetime": options.default_lock_lifetime,
        "remove_on_complete": options.remove_on_complete,
    }
    plain = job_definition("a", lambda job: None, {}, **defaults)
    assert (plain.concurrency, plain.lock_limit, plain.lock_lifetime) == (5, 0, timedelta(minutes=10))
    given = job_definition("a", lambda job: None, {"concurrency": 2, "lock_lifetime": "1 minute"}, **defaults)
    assert (given.concurrency, given.lock_lifetime) == (2, timedelta(minutes=1))


def test_define_refuses_a_misspelt_option_and_names_a_bad_one() -> None:
    options = AgendaOptions.convert(**DEFAULTS)
    defaults = {
        "concurrency": options.default_concurrency,
        "lock_limit": options.default_lock_limit,
        "lock_lifetime": options.default_lock_lifetime,
        "remove_on_complete": options.remove_on_complete,
    }
    with pytest.raises(TypeError, match="unexpected keyword argument 'concurency'"):
        job_definition("a", lambda job: None, {"concurency": 2}, **defaults)
    with pytest.raises(InvalidInput, match="must be an int, 1 or more") as caught:
        job_definition("a", lambda job: None, {"concurrency": 0}, **defaults)
    assert caught.value.field == "concurrency"
