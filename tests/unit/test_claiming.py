"""Claimer's top-up rules, on a worker context that is only its limits: which names a claim may have
left due jobs of, and when runs that ended make room enough for another search."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from agendapy.claiming import Claimer
from agendapy.definition import JobDefinition
from agendapy.job import Job


def claimer(max_concurrency: int = 20, lock_limit: int = 0, **concurrencies: int) -> Claimer:
    definitions = {
        name: JobDefinition(name, lambda job: None, concurrency, 0, timedelta(minutes=10), 0)
        for name, concurrency in concurrencies.items()
    }
    context: Any = SimpleNamespace(
        definitions=definitions, max_concurrency=max_concurrency, lock_limit=lock_limit
    )
    return Claimer(context, holdings=None)  # type: ignore[arg-type]


def jobs(*names: str) -> list[Job]:
    return [Job(name=name) for name in names]


@pytest.mark.parametrize(
    ("quotas", "room", "taken", "backlogged"),
    [
        # The busy name took both of its slots while idle names had room: it may have more due.
        ({"busy": 2, "mail": 5, "report": 5}, 12, ("busy", "busy"), {"busy"}),
        # It took fewer than its room: nothing more of it is due.
        ({"busy": 2, "mail": 5}, 7, ("busy",), set()),
        # The claim filled its whole room: every name it took jobs of may have more.
        ({"a": 5, "b": 5}, 4, ("a", "a", "b", "b"), {"a", "b"}),
        ({"a": 5}, 5, (), set()),
    ],
)
def test_saturated_names_are_those_that_may_have_more_due(
    quotas: dict[str, int], room: int, taken: tuple[str, ...], backlogged: set[str]
) -> None:
    assert Claimer.saturated(quotas, room, jobs(*taken)) == backlogged


def test_a_top_up_waits_for_half_of_what_the_backlogged_names_can_hold() -> None:
    busy = claimer(busy=2, mail=5, report=5, cleanup=5)
    # Measured on the busy name alone (2 slots: half is one), not on the idle names' 15 free slots.
    assert busy.top_up_floor({"busy"}) == 1
    assert busy.worth_topping_up({"busy": 1, "mail": 5, "report": 5}, 11, {"busy"})
    wide = claimer(drain=20, other=5)
    assert wide.top_up_floor({"drain"}) == 10
    assert not wide.worth_topping_up({"drain": 9, "other": 5}, 14, {"drain"})
    assert wide.worth_topping_up({"drain": 10, "other": 5}, 15, {"drain"})
    # The worker's own limits cap what the names can hold.
    assert claimer(max_concurrency=6, a=20).top_up_floor({"a"}) == 3
    assert claimer(lock_limit=4, a=20).top_up_floor({"a"}) == 2
    # No backlog, no top-up; a name no longer defined counts for nothing.
    assert not wide.worth_topping_up({"drain": 20}, 20, set())
    assert wide.top_up_floor({"gone"}) == 1


def test_a_poll_leaves_a_backlogged_name_with_little_room_to_its_top_ups() -> None:
    wide = claimer(drain=8, mail=5)
    # drain had more due and has room for 3 of its 8 (below half): left to the top-ups; mail as usual.
    assert wide.without_small_backlogs({"drain": 3, "mail": 5}, {"drain"}) == {"mail": 5}
    assert wide.without_small_backlogs({"drain": 4, "mail": 5}, {"drain"}) == {"drain": 4, "mail": 5}
    # Not backlogged: any room is claimed.
    assert wide.without_small_backlogs({"drain": 1}, set()) == {"drain": 1}
    # A name of one slot is never left out (half of one is one).
    assert claimer(solo=1).without_small_backlogs({"solo": 1}, {"solo"}) == {"solo": 1}
