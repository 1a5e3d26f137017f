"""Store contract: documents agendapy cannot read (written by another tool, or corrupted) fail that job
alone with a clear reason, never a batch, a worker or a listing (DESIGN.md section 12); ``save()`` never
writes such a document; names and ids are plain values only."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import DatetimeMS, ObjectId
from contract_helpers import MakeAgenda, claim, insert_raw, job, raw_document, save, utcnow

from agendapy import Agenda, InvalidData, InvalidInput, Job, JobState
from agendapy.store.base import JobStore

from support import wait_until


def due_doc(name: Any, **fields: Any) -> dict[str, Any]:
    """An Agenda-shaped document, due now, with ``fields`` overriding."""
    return {
        "name": name,
        "data": None,
        "type": "normal",
        "priority": 0,
        "nextRunAt": utcnow(),
        "lockedAt": None,
        **fields,
    }


#: Stored values of the wrong type, as other tools or corruption leave them (one field each).
BAD_FIELDS: list[tuple[str, Any]] = [
    ("failCount", "n/a"),
    ("repeatAt", 5),
    ("disabled", "yes"),
    ("priority", "high"),
    ("type", "weird"),
    ("lastRunAt", "yesterday"),
    ("failReason", datetime(2020, 1, 1, tzinfo=UTC)),
    ("progress", math.nan),
    ("repeatInterval", {"every": 5}),
    ("skipDays", "weekends"),
    ("requires", [1, 2]),
    ("misfire", "sometimes"),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f for f, _ in BAD_FIELDS])
async def test_claim_fails_an_unreadable_document_and_returns_the_rest(
    store: JobStore, field: str, value: Any
) -> None:
    good = [await save(store, job("task", {"n": i})) for i in range(4)]
    # Sorted first (highest priority), so a claim meets it before the good ones.
    bad_id = await insert_raw(store, due_doc("task", **{"priority": 100, field: value}))

    claimed = await claim(store, "task", limit=10)

    assert sorted(j.id for j in claimed if j.id) == sorted(j.id for j in good if j.id)
    stored = await raw_document(store, bad_id)
    assert stored["lockedAt"] is None and stored.get("lockToken") is None
    assert stored["nextRunAt"] is None  # never claimed again: reported once
    assert field in stored["failReason"] and "cannot read" in stored["failReason"]
    assert isinstance(stored["failedAt"], datetime)
    if field != "failReason":
        assert stored[field] == value or (isinstance(value, float) and math.isnan(stored[field]))


async def test_an_unreadable_document_a_claim_started_keeps_its_last_run(store: JobStore) -> None:
    """A claim for free slots writes the start of a due one-off job with its lock; when the document
    then cannot be read, the run never happens and the lastRunAt the start replaced is put back."""
    before = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    bad_id = await insert_raw(store, due_doc("task", skipDays="weekends", lastRunAt=before))

    assert await claim(store, "task", limit=5, start_due=True) == []

    stored = await raw_document(store, bad_id)
    assert "cannot read" in stored["failReason"] and stored["lockedAt"] is None
    assert stored["lastRunAt"] == before


async def test_a_single_claim_skips_unreadable_documents(store: JobStore) -> None:
    # A value every store can hold (PostgreSQL's columns are typed) that agendapy cannot read.
    bad_ids = [await insert_raw(store, due_doc("task", priority=50, skipDays="weekends")) for _ in range(3)]
    good = await save(store, job("task"))

    claimed = await claim(store, "task", limit=1)

    assert [j.id for j in claimed] == [good.id]
    for bad_id in bad_ids:
        assert "skipDays 'weekends'" in (await raw_document(store, bad_id))["failReason"]


async def test_a_worker_runs_every_good_job_of_a_batch_with_a_bad_one(
    store: JobStore, agenda: Agenda
) -> None:
    ran: list[Any] = []
    agenda.define("task", lambda job: ran.append(job.data["n"]))
    for i in range(5):
        await agenda.now("task", {"n": i})
    bad_id = await insert_raw(store, due_doc("task", skipDays="weekends"))
    await insert_raw(store, due_doc("task", misfire="sometimes"))

    await agenda.start()
    await wait_until(lambda: len(ran) >= 5)

    async def reported() -> bool:
        found = await agenda.get_job(bad_id)
        return found is not None and found.fail_reason is not None

    await wait_until(reported)

    assert sorted(ran) == [0, 1, 2, 3, 4]
    failed = await agenda.get_job(bad_id)
    assert failed is not None and failed.state is JobState.BROKEN
    assert failed.unreadable == "skipDays 'weekends': must be a list of whole numbers"
    assert failed.fail_reason is not None and "skipDays" in failed.fail_reason
    await asyncio.sleep(0.2)  # a few more claim passes: nothing else runs
    assert sorted(ran) == [0, 1, 2, 3, 4]


async def test_listings_show_unreadable_documents_as_broken(store: JobStore, agenda: Agenda) -> None:
    await agenda.now("fine")
    await insert_raw(store, due_doc("task", failCount="n/a"))
    await insert_raw(store, due_doc(5))
    await insert_raw(store, due_doc({"a": 1}))
    await insert_raw(store, {"data": 1})  # no name at all

    result = await agenda.query_jobs()
    overview = {entry["name"]: entry for entry in await agenda.jobs_overview()}
    broken = await agenda.query_jobs(state="broken")

    assert result.total == 5
    states = sorted(j.state.value for j in result.jobs)
    assert states == ["broken"] * 4 + ["queued"]
    assert broken.total == 4
    reasons = sorted(j.unreadable or "" for j in broken.jobs)
    assert reasons == [
        "failCount 'n/a': must be a whole number",
        "name 5: must be a job name (a non-empty string)",
        "name is missing",
        "name {'a': 1}: must be a job name (a non-empty string)",
    ]
    assert overview["task"]["broken"] == 1 and overview["fine"]["queued"] == 1
    # Each document without a readable name has a row of its own, labelled with what it holds.
    assert "" not in overview
    for label in ("<name: 5>", "<name: {'a': 1}>", "<no name>"):
        assert overview[label]["total"] == overview[label]["broken"] == 1, overview
        assert overview[label]["unreadable_name"] is True
    assert "unreadable_name" not in overview["task"]
    assert sorted(j.display_name for j in broken.jobs) == [
        "<name: 5>",
        "<name: {'a': 1}>",
        "<no name>",
        "task",
    ]
    # The label is for reading: as a name filter it matches nothing, and the stored name stays.
    assert (await agenda.query_jobs(name="<name: 5>")).total == 0
    assert [j.name for j in broken.jobs if j.foreign_name == "5"] == [""]


async def test_overview_counts_a_document_it_cannot_read_as_broken_as_listings_do(
    store: JobStore, agenda: Agenda
) -> None:
    # Locked, by its raw field, but with a lock agendapy cannot read: broken, not running.
    await insert_raw(store, due_doc("task", lockedAt="yesterday"))
    await insert_raw(store, due_doc("task", lockedAt=utcnow(), failCount="n/a"))
    await insert_raw(store, due_doc(42, lockedAt=utcnow()))
    await agenda.now("task")

    overview = {entry["name"]: entry for entry in await agenda.jobs_overview()}
    for state in JobState:
        listed = await agenda.query_jobs(state=state)
        counted = sum(entry[state.value] for entry in overview.values())
        assert counted == listed.total, (state, overview)
    assert (overview["task"]["broken"], overview["task"]["running"]) == (2, 0)
    assert (overview["<name: 42>"]["broken"], overview["<name: 42>"]["running"]) == (1, 0)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("fail_count", "n/a"),
        ("next_run_at", "tomorrow"),
        ("disabled", "yes"),
        ("repeat_interval", 1.5),
        ("repeat_timezone", 3),
        ("skip_days", ["mon"]),
        ("last_run_at", 5),
        ("progress", math.inf),
        ("type", "weird"),
        ("fail_reason", {"why": 1}),
        ("requires", "other"),
    ],
)
async def test_save_refuses_a_field_it_could_not_read_back(
    store: JobStore, agenda: Agenda, attribute: str, value: Any
) -> None:
    saved = await agenda.now("task")
    before = await raw_document(store, str(saved.id))
    setattr(saved, attribute, value)

    with pytest.raises(InvalidInput) as caught:
        await saved.save()

    assert caught.value.field == attribute and caught.value.value == value
    assert attribute in str(caught.value)
    assert await raw_document(store, str(saved.id)) == before
    fresh = agenda.create("task")
    setattr(fresh, attribute, value)
    with pytest.raises(InvalidInput):
        await fresh.save()
    with pytest.raises(InvalidInput):
        await agenda.insert_many([fresh])
    assert (await agenda.query_jobs()).total == 1


async def test_data_with_a_date_no_datetime_can_hold_is_refused(agenda: Agenda, backend: str) -> None:
    if backend == "postgres":
        pytest.skip("BSON dates in data: PostgreSQL keeps data as JSON and refuses every date there")
    with pytest.raises(InvalidData) as caught:
        await agenda.schedule("in 1 hour", "task", {"d": [DatetimeMS(2**62)]})
    assert "DatetimeMS(4611686018427387904)" in str(caught.value)
    with pytest.raises(InvalidData):
        await agenda.now("task", {"d": DatetimeMS(-(2**62))})
    saved = await agenda.now("task", {"d": DatetimeMS(0)})
    assert saved.id is not None
    assert (await agenda.query_jobs()).total == 1


async def test_names_and_ids_are_plain_values_everywhere(agenda: Agenda) -> None:
    await agenda.now("secret")
    smuggled: list[Any] = [{"$regex": "^secret"}, {"$ne": None}, ["secret"], 5]
    for value in smuggled:
        with pytest.raises(InvalidInput):
            await agenda.runs(value)
        with pytest.raises(InvalidInput):
            await agenda.get_job(value)
        with pytest.raises(InvalidInput):
            await agenda.runs(job_id=value)
        for call in (agenda.cancel, agenda.disable, agenda.enable, agenda.query_jobs):
            with pytest.raises(InvalidInput):
                await call(name=value)
            with pytest.raises(InvalidInput):
                await call(id=value)
        with pytest.raises(InvalidInput):
            await agenda.run_due([value])
    assert (await agenda.query_jobs(name="secret")).total == 1


async def test_the_store_refuses_a_filter_as_an_id(store: JobStore) -> None:
    await save(store, job("secret"))
    with pytest.raises(InvalidInput):
        await store.get_job({"$ne": None})  # type: ignore[arg-type]


def test_whole_numbers_stored_as_doubles_read_as_ints() -> None:
    from agendapy.store.schema import job_from_document

    read: Job = job_from_document({"_id": ObjectId(), "name": "x", "failCount": 2.0, "priority": -3.0})
    assert read.fail_count == 2 and read.priority == -3 and read.unreadable is None


async def test_the_run_store_reads_a_mapping_as_a_value_not_a_filter(make_agenda: MakeAgenda) -> None:
    agenda = await make_agenda(history="all")
    agenda.define("secret", lambda job: None)
    await agenda.now("secret")
    await agenda.run_due()
    assert len(await agenda.runs("secret")) == 1

    found = await agenda.store.runs.query(
        name={"$ne": None},  # type: ignore[arg-type]
        since=None,
        until=None,
        status=None,
        limit=10,
    )

    assert found == []


async def test_every_replaces_a_stored_next_run_that_is_not_a_date(store: JobStore, agenda: Agenda) -> None:
    bad_id = await insert_raw(
        store, {"name": "tick", "type": "single", "repeatInterval": "1 minute", "nextRunAt": "tomorrow"}
    )
    assert (await agenda.get_job(bad_id)).state is JobState.BROKEN  # type: ignore[union-attr]

    saved = await agenda.every("1 minute", "tick")

    stored = await raw_document(store, bad_id)
    assert saved.id == bad_id and isinstance(stored["nextRunAt"], datetime)
    assert (await agenda.get_job(bad_id)).state is JobState.REPEATING  # type: ignore[union-attr]
