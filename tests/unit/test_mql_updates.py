"""The in-memory store's MongoDB update operators and change-stream filter, on plain documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agendapy.store._mql import FilterError, apply_update, pipeline_matches, upsert_document
from agendapy.store.queries import WAKE_UP_PIPELINE

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_set_reports_only_the_values_it_changed() -> None:
    doc: dict[str, Any] = {"a": 1, "b": {"c": 2}}
    changes = apply_update(doc, {"$set": {"a": 1, "b.c": 3, "d": AT}})
    assert doc == {"a": 1, "b": {"c": 3}, "d": AT}
    assert changes.updated == {"b.c": 3, "d": AT}
    assert not apply_update(doc, {"$set": {"a": 1}})  # nothing changed: no change event


def test_set_is_typed_as_mongodb_compares() -> None:
    doc: dict[str, Any] = {"flag": 1}
    assert apply_update(doc, {"$set": {"flag": True}}).updated == {"flag": True}


def test_set_on_insert_applies_to_inserts_only() -> None:
    doc: dict[str, Any] = {"a": 1}
    assert not apply_update(doc, {"$setOnInsert": {"b": 2}})
    assert doc == {"a": 1}
    inserted = upsert_document({"name": "n", "data.k": 1, "x": {"$gt": 0}}, {"$setOnInsert": {"b": 2}})
    assert inserted == {"name": "n", "data": {"k": 1}, "b": 2}


def test_inc_starts_a_missing_field_and_refuses_non_numbers() -> None:
    doc: dict[str, Any] = {"n": 2, "s": "x", "z": None}
    apply_update(doc, {"$inc": {"n": 3, "m": 1}})
    assert doc["n"] == 5 and doc["m"] == 1
    for field in ("s", "z"):
        with pytest.raises(FilterError, match=field):
            apply_update(doc, {"$inc": {field: 1}})


def test_unset_removes_and_unknown_operators_are_refused() -> None:
    doc: dict[str, Any] = {"a": 1, "b": {"c": 2}}
    changes = apply_update(doc, {"$unset": {"b.c": "", "missing": ""}})
    assert doc == {"a": 1, "b": {}}
    assert changes.removed == ["b.c"]
    with pytest.raises(FilterError, match=r"\$push"):
        apply_update(doc, {"$push": {"a": 1}})


def _update_event(doc: dict[str, Any], updated: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationType": "update",
        "updateDescription": {"updatedFields": updated, "removedFields": []},
        "fullDocument": doc,
    }


@pytest.mark.parametrize(
    ("updated", "after", "wakes"),
    [
        ({"lockedAt": AT, "lockToken": "t"}, {"lockedAt": AT}, False),  # a claim
        ({"lockedAt": None, "lockToken": None}, {"lockedAt": None}, True),  # a release
        ({"nextRunAt": AT}, {"lockedAt": None}, True),  # a reschedule
        ({"nextRunAt": AT}, {"lockedAt": AT}, False),  # rescheduled while locked
        ({"nextRunAt": None, "lockedAt": None}, {"nextRunAt": None, "lockedAt": None}, False),  # a finish
        ({"disabled": False}, {"lockedAt": None, "disabled": False}, True),  # enabled again
        ({"disabled": True}, {"lockedAt": None, "disabled": True}, False),  # disabled
    ],
)
def test_the_wake_up_pipeline_admits_what_a_claim_could_take(
    updated: dict[str, Any], after: dict[str, Any], wakes: bool
) -> None:
    doc = {"name": "n", "nextRunAt": AT, **after}
    assert pipeline_matches(_update_event(doc, updated), WAKE_UP_PIPELINE) is wakes


def test_pipelines_of_other_stages_are_refused() -> None:
    with pytest.raises(FilterError, match="only"):
        pipeline_matches({}, [{"$project": {"a": 1}}])
