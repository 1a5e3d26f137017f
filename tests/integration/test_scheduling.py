"""every / schedule / now / create / unique / debounce and the Job class, against a real database.

agendapy's own tests: what the documents hold, the v5 job tests (reference items 196-214) and the bad-input
rules of DESIGN.md section 2. Agenda 6's agenda and debounce suites are ported test for test in
tests/agenda/.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agendapy import Agenda, Job

SECOND = timedelta(seconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms(value: datetime) -> datetime:
    """A datetime truncated to what BSON stores (milliseconds)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


async def only_doc(jobs_collection: Any, **flt: Any) -> dict[str, Any]:
    docs = await jobs_collection.find(flt).to_list()
    assert len(docs) == 1, f"expected exactly one document matching {flt}, found {len(docs)}: {docs}"
    return docs[0]


# -- every() ---------------------------------------------------------------------------------------


async def test_every_creates_one_single_job_with_the_interval(agenda: Agenda, jobs_collection: Any) -> None:
    job = await agenda.every("5 minutes", "report")
    assert isinstance(job, Job)
    assert job.id is not None
    assert job.repeat_interval == "5 minutes"
    doc = await only_doc(jobs_collection, name="report")
    assert doc["repeatInterval"] == "5 minutes"
    assert doc["type"] == "single"
    assert str(doc["_id"]) == job.id


async def test_every_stores_a_cron_expression(agenda: Agenda, jobs_collection: Any) -> None:
    await agenda.every("0 6 * * *", "daily")
    doc = await only_doc(jobs_collection, name="daily")
    assert doc["repeatInterval"] == "0 6 * * *"
    # first run of a cron job is the next cron tick, 06:00 UTC
    assert doc["nextRunAt"] > utcnow()
    assert (doc["nextRunAt"].hour, doc["nextRunAt"].minute, doc["nextRunAt"].second) == (6, 0, 0)


async def test_every_stores_the_timezone(agenda: Agenda, jobs_collection: Any) -> None:
    job = await agenda.every("0 9 * * *", "tz job", {}, timezone="America/New_York")
    assert job.repeat_timezone == "America/New_York"
    doc = await only_doc(jobs_collection, name="tz job")
    assert doc["repeatTimezone"] == "America/New_York"
    nxt = doc["nextRunAt"].astimezone(ZoneInfo("America/New_York"))
    assert (nxt.hour, nxt.minute) == (9, 0)


async def test_every_with_a_list_of_names_returns_a_job_per_name(
    agenda: Agenda, jobs_collection: Any
) -> None:
    jobs = await agenda.every("5 minutes", ["job a", "job b"], {"k": 1})
    assert isinstance(jobs, list)
    assert sorted(j.name for j in jobs) == ["job a", "job b"]
    # (not filtered by type: SecantusDB answers {type: "single"} alone from the partial unique index
    # on (name, type) and finds nothing; mongod does not)
    docs = await jobs_collection.find({"data": {"k": 1}}).to_list()
    assert sorted((d["name"], d["type"]) for d in docs) == [("job a", "single"), ("job b", "single")]


async def test_every_with_seconds_stores_milliseconds(agenda: Agenda, jobs_collection: Any) -> None:
    await agenda.every(90, "numeric")
    doc = await only_doc(jobs_collection, name="numeric")
    assert doc["repeatInterval"] == 90_000


@pytest.mark.parametrize(
    "interval",
    [timedelta(minutes=15), "PT15M", {"minutes": 15}, "15 minutes", 900],
    ids=["timedelta", "iso8601", "mapping", "human", "seconds"],
)
async def test_every_accepts_all_interval_forms(agenda: Agenda, interval: Any) -> None:
    before = utcnow()
    job = await agenda.every(interval, "forms", skip_immediate=True)
    after = utcnow()
    assert (
        before + timedelta(minutes=15) - SECOND <= job.next_run_at <= after + timedelta(minutes=15) + SECOND
    )


async def test_every_again_with_unchanged_schedule_keeps_the_stored_next_run(
    agenda: Agenda, jobs_collection: Any
) -> None:
    first = await agenda.every("5 minutes", "boot", skip_immediate=True)
    stored = (await only_doc(jobs_collection, name="boot"))["nextRunAt"]
    await asyncio.sleep(0.05)  # a recomputation now would give a later time
    again = await agenda.every("5 minutes", "boot", skip_immediate=True)
    doc = await only_doc(jobs_collection, name="boot")
    assert doc["nextRunAt"] == stored
    assert ms(again.next_run_at) == stored
    assert again.id == first.id


async def test_every_again_keeps_a_due_next_run_even_when_the_interval_changes(
    agenda: Agenda, jobs_collection: Any
) -> None:
    await agenda.every("5 minutes", "due")
    stored = (await only_doc(jobs_collection, name="due"))["nextRunAt"]
    await asyncio.sleep(0.05)
    await agenda.every("10 minutes", "due")
    doc = await only_doc(jobs_collection, name="due")
    assert doc["repeatInterval"] == "10 minutes"
    assert doc["nextRunAt"] == stored  # Agenda's $setOnInsert rule for a due nextRunAt


async def test_every_with_a_new_schedule_replaces_a_future_next_run(
    agenda: Agenda, jobs_collection: Any
) -> None:
    await agenda.every("5 minutes", "future", skip_immediate=True)
    await agenda.every("10 minutes", "future", skip_immediate=True)
    doc = await only_doc(jobs_collection, name="future")
    assert doc["nextRunAt"] > utcnow() + timedelta(minutes=9)


async def test_every_updates_the_data_of_the_existing_document(agenda: Agenda, jobs_collection: Any) -> None:
    await agenda.every("5 minutes", "data job", {"v": 1})
    await agenda.every("5 minutes", "data job", {"v": 2})
    doc = await only_doc(jobs_collection, name="data job")
    assert doc["data"] == {"v": 2}


async def test_concurrent_every_calls_make_one_document(agenda: Agenda, jobs_collection: Any) -> None:
    await asyncio.gather(*(agenda.every("5 minutes", "race") for _ in range(5)))
    assert await jobs_collection.count_documents({"name": "race"}) == 1


async def test_every_start_and_end_dates(agenda: Agenda, jobs_collection: Any) -> None:
    start = ms(utcnow() + timedelta(days=3))
    job = await agenda.every("1 hour", "windowed", start_date=start)
    assert job.next_run_at == start
    doc = await only_doc(jobs_collection, name="windowed")
    assert doc["startDate"] == start
    assert doc["nextRunAt"] == start

    ended = await agenda.every(
        "1 hour", "ended", skip_immediate=True, end_date=utcnow() + timedelta(minutes=10)
    )
    assert ended.next_run_at is None


# -- schedule() and now() --------------------------------------------------------------------------


async def test_schedule_with_a_datetime_is_exact(agenda: Agenda, jobs_collection: Any) -> None:
    when = datetime(2031, 5, 17, 8, 30, 15, 123000, tzinfo=UTC)
    job = await agenda.schedule(when, "at date")
    assert job.next_run_at == when
    doc = await only_doc(jobs_collection, name="at date")
    assert doc["nextRunAt"] == when
    assert doc["type"] == "normal"


async def test_schedule_naive_datetime_means_utc_and_aware_is_converted(
    agenda: Agenda, jobs_collection: Any
) -> None:
    await agenda.schedule(datetime(2031, 1, 1, 12, 0), "naive")
    await agenda.schedule(datetime(2031, 1, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo")), "tokyo")
    assert (await only_doc(jobs_collection, name="naive"))["nextRunAt"] == datetime(
        2031, 1, 1, 12, tzinfo=UTC
    )
    assert (await only_doc(jobs_collection, name="tokyo"))["nextRunAt"] == datetime(2031, 1, 1, 3, tzinfo=UTC)


async def test_schedule_in_natural_language(agenda: Agenda) -> None:
    job = await agenda.schedule("in 1 hour", "later")
    assert abs(job.next_run_at - (utcnow() + timedelta(hours=1))) < timedelta(minutes=1)
    noon = await agenda.schedule("tomorrow at noon", "noon")
    assert utcnow() < noon.next_run_at < utcnow() + timedelta(days=2)
    assert (noon.next_run_at.astimezone().hour, noon.next_run_at.minute) == (12, 0)
    now_job = await agenda.schedule("now", "now string")
    assert abs(now_job.next_run_at - utcnow()) < 2 * SECOND


async def test_schedule_parses_iso_strings_exactly(agenda: Agenda) -> None:
    job = await agenda.schedule("2019-04-30T22:31:00.00Z", "iso")
    assert job.next_run_at == datetime(2019, 4, 30, 22, 31, tzinfo=UTC)


async def test_schedule_with_start_date_and_end_date(agenda: Agenda) -> None:
    start = ms(utcnow() + timedelta(days=2))
    job = await agenda.schedule("in 1 minute", "starts later", start_date=start)
    assert job.next_run_at == start
    ended = await agenda.schedule("in 1 hour", "ends earlier", end_date=utcnow() + timedelta(minutes=10))
    assert ended.next_run_at is None


async def test_data_round_trips(agenda: Agenda, jobs_collection: Any) -> None:
    data = {"nested": {"list": [1, 2.5, "x", None, True]}, "when": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)}
    job = await agenda.now("rich data", data)
    fetched = (await agenda.query_jobs(id=job.id)).jobs[0]
    assert fetched.data == data
    assert (await only_doc(jobs_collection, name="rich data"))["data"] == data


# -- create() and the Job class --------------------------------------------------------------------


async def test_create_returns_an_unsaved_normal_job(agenda: Agenda, jobs_collection: Any) -> None:
    agenda.define("prio", lambda job: None, priority="high")
    job = agenda.create("prio", {"a": 1})
    assert isinstance(job, Job)
    assert job.id is None
    assert job.data == {"a": 1}
    assert job.type == "normal"
    assert job.priority == 10
    assert await jobs_collection.count_documents({}) == 0
    assert agenda.create("undefined name").priority == 0


async def test_repeat_every_numeric_seconds_and_words(agenda: Agenda, jobs_collection: Any) -> None:
    await agenda.create("five").repeat_every(5).save()
    assert (await only_doc(jobs_collection, name="five"))["repeatInterval"] == 5000
    job = agenda.create("words").repeat_every("one second")
    assert job.repeat_interval == "one second"


async def test_repeat_every_skip_immediate(agenda: Agenda) -> None:
    before = utcnow()
    job = agenda.create("skip").repeat_every("3 minutes", skip_immediate=True)
    after = utcnow()
    assert before + timedelta(minutes=3) <= job.next_run_at + timedelta(milliseconds=1)
    assert job.next_run_at <= after + timedelta(minutes=3, milliseconds=2)
    assert job.last_run_at is None

    year_3000 = datetime(3000, 1, 1, tzinfo=UTC)
    far = agenda.create("far").schedule(year_3000).repeat_every("3 minutes", skip_immediate=True)
    assert far.next_run_at == year_3000 + timedelta(minutes=3)


async def test_repeat_at_sets_and_reads(agenda: Agenda, jobs_collection: Any) -> None:
    job = agenda.create("at time")
    assert not job.repeat_at
    assert job.repeat_at("3:30pm") is job
    assert job.repeat_at == "3:30pm"
    await job.save()
    assert (await only_doc(jobs_collection, name="at time"))["repeatAt"] == "3:30pm"


async def test_repeat_at_next_run_is_that_time_of_day(agenda: Agenda) -> None:
    agenda.define("nightly", lambda job: None)
    job = agenda.create("nightly").repeat_at("11:59pm")
    await job.run()
    local = job.next_run_at.astimezone()
    assert (local.hour, local.minute) == (23, 59)
    assert utcnow() < job.next_run_at <= utcnow() + timedelta(days=1)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(10, 10), ("high", 10), (-5, -5), ("lowest", -20), ("low", -10), ("normal", 0), ("highest", 20)],
)
async def test_set_priority(agenda: Agenda, jobs_collection: Any, given: Any, expected: int) -> None:
    job = agenda.create("prio")
    assert job.set_priority(given) is job
    assert job.priority == expected
    await job.save()
    assert (await only_doc(jobs_collection, name="prio"))["priority"] == expected


async def test_remove_deletes_the_document(agenda: Agenda, jobs_collection: Any) -> None:
    job = await agenda.now("to remove")
    keep = await agenda.now("to keep")
    assert await job.remove() == 1
    assert str((await only_doc(jobs_collection))["_id"]) == keep.id
    assert await job.remove() == 0


async def test_save_after_remove_does_not_resurrect(agenda: Agenda, jobs_collection: Any) -> None:
    job = await agenda.now("gone")
    await job.remove()
    job.data = {"again": True}
    await job.save()
    assert await jobs_collection.count_documents({}) == 0


async def test_run_directly_calls_the_handler_with_the_data(agenda: Agenda, jobs_collection: Any) -> None:
    seen: list[tuple[str, Any]] = []

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.05)
        seen.append((job.name, job.data))

    agenda.define("direct", handler)
    job = agenda.create("direct", {"n": 7})
    await job.run()
    assert seen == [("direct", {"n": 7})]  # run() returned only after the handler finished
    doc = await only_doc(jobs_collection, name="direct")
    assert doc["lastRunAt"] is not None
    assert doc["lastFinishedAt"] is not None
    assert doc["nextRunAt"] is None


async def test_run_of_an_undefined_job_fails(agenda: Agenda, jobs_collection: Any) -> None:
    job = agenda.create("no such definition")
    await job.run()
    assert job.fail_reason == "Undefined job"
    doc = await only_doc(jobs_collection, name="no such definition")
    assert doc["failReason"] == "Undefined job"
    assert doc["failedAt"] is not None


async def test_run_of_a_recurring_job_sets_the_next_run(agenda: Agenda) -> None:
    agenda.define("ten", lambda job: None)
    job = agenda.create("ten").repeat_every("10 minutes")
    await job.run()
    assert job.next_run_at > utcnow() + timedelta(seconds=59.999)


async def test_touch_extends_the_lock_and_records_progress(agenda: Agenda, jobs_collection: Any) -> None:
    job = await agenda.schedule("in 1 hour", "touched")
    await job.touch()
    first = (await only_doc(jobs_collection, name="touched"))["lockedAt"]
    assert first is not None
    await asyncio.sleep(0.02)
    await job.touch(50)
    doc = await only_doc(jobs_collection, name="touched")
    assert doc["lockedAt"] > first
    assert doc["progress"] == 50
    assert job.progress == 50


async def test_fail_records_in_memory(agenda: Agenda) -> None:
    job = agenda.create("failing")
    assert job.fail("Test failure") is job
    assert job.fail_reason == "Test failure"
    assert job.fail_count == 1
    assert job.failed_at is not None
    assert job.failed_at == job.last_finished_at
    job.fail(RuntimeError("second"))
    assert job.fail_count == 2
    assert job.fail_reason == "second"


async def test_disable_enable_are_chainable(agenda: Agenda) -> None:
    job = agenda.create("toggle")
    assert job.disable() is job
    assert job.disabled is True
    assert job.enable() is job
    assert not job.disabled


# -- compute_next_run_at ---------------------------------------------------------------------------


async def test_compute_next_run_without_repeat_is_none(agenda: Agenda) -> None:
    job = agenda.create("plain")
    assert job.compute_next_run_at() is job
    assert job.next_run_at is None


async def test_compute_next_run_human_interval_from_last_run(agenda: Agenda) -> None:
    job = agenda.create("human").repeat_every("2 minutes")
    last = datetime(2030, 6, 1, 10, 0, 0, 123000, tzinfo=UTC)
    job.last_run_at = last
    job.compute_next_run_at()
    assert job.next_run_at == last + timedelta(minutes=2)


async def test_compute_next_run_cron_from_last_run(agenda: Agenda) -> None:
    job = agenda.create("cron").repeat_every("*/2 * * * *")
    job.last_run_at = datetime(2030, 6, 1, 10, 1, 0, tzinfo=UTC)
    job.compute_next_run_at()
    assert job.next_run_at == datetime(2030, 6, 1, 10, 2, 0, tzinfo=UTC)


async def test_compute_next_run_cron_in_timezones(agenda: Agenda) -> None:
    gmt = agenda.create("gmt").repeat_every("0 6 * * *", timezone="GMT")
    gmt.last_run_at = datetime(2015, 1, 1, 6, 1, tzinfo=UTC)
    gmt.compute_next_run_at()
    assert gmt.next_run_at == datetime(2015, 1, 2, 6, 0, tzinfo=UTC)
    gmt.last_run_at = datetime(2015, 1, 1, 6, 0, tzinfo=UTC)
    gmt.compute_next_run_at()
    assert gmt.next_run_at == datetime(2015, 1, 2, 6, 0, tzinfo=UTC)  # never the same instant

    vienna = agenda.create("vienna").repeat_every("0 16 * * *", timezone="Europe/Vienna")
    vienna.last_run_at = datetime(2015, 1, 1, 6, 1, tzinfo=UTC)
    vienna.compute_next_run_at()
    assert vienna.next_run_at == datetime(2015, 1, 1, 15, 0, tzinfo=UTC)


async def test_compute_next_run_cron_months_are_one_based(agenda: Agenda) -> None:
    job = agenda.create("january").repeat_every("0 0 * 1 *")
    job.last_run_at = datetime(2030, 6, 1, tzinfo=UTC)
    job.compute_next_run_at()
    assert job.next_run_at == datetime(2031, 1, 1, tzinfo=UTC)


async def test_six_field_cron_reads_seconds_first(agenda: Agenda) -> None:
    job = agenda.create("seconds").repeat_every("30 * * * * *")
    job.last_run_at = datetime(2030, 6, 1, 10, 0, 5, tzinfo=UTC)
    job.compute_next_run_at()
    assert job.next_run_at == datetime(2030, 6, 1, 10, 0, 30, tzinfo=UTC)


async def test_stored_invalid_interval_fails_the_job_on_compute(agenda: Agenda, jobs_collection: Any) -> None:
    # a document written by someone else (e.g. an old Node service) with an unreadable interval
    await jobs_collection.insert_one(
        {"name": "broken", "type": "normal", "priority": 0, "nextRunAt": utcnow(), "repeatInterval": "asd"}
    )
    job = (await agenda.query_jobs(name="broken")).jobs[0]
    job.compute_next_run_at()
    assert job.next_run_at is None
    assert job.fail_reason is not None
    assert "asd" in job.fail_reason


# -- debounce --------------------------------------------------------------------------------------


def debounced(agenda: Agenda, key: str, value: Any, delay: float, **kw: Any) -> Job:
    return (
        agenda.create("debounced", {"key": key, "value": value})
        .unique({"data.key": key})
        .debounce(delay, **kw)
    )


async def test_first_debounced_save_stores_all_the_data(agenda: Agenda, jobs_collection: Any) -> None:
    for strategy in ("trailing", "leading"):
        await debounced(agenda, strategy, 1, 1.0, strategy=strategy).save()
        doc = await only_doc(jobs_collection, name="debounced", **{"data.key": strategy})
        assert doc["data"] == {"key": strategy, "value": 1}


async def test_now_debounced_merges_calls(agenda: Agenda, jobs_collection: Any) -> None:
    await agenda.now_debounced("nd", {"user": 1, "v": 1}, {"data.user": 1}, 1.0)
    before = utcnow().replace(microsecond=0)  # read before the call: a loaded machine may be slow in it
    job = await agenda.now_debounced("nd", {"user": 1, "v": 2}, {"data.user": 1}, 1.0)
    doc = await only_doc(jobs_collection, name="nd")
    assert str(doc["_id"]) == job.id
    assert doc["data"]["v"] == 2
    assert doc["nextRunAt"] >= before + timedelta(seconds=1)


# -- bad input: ValueError naming field and value, nothing written ---------------------------------


async def assert_rejected(jobs_collection: Any, exc: pytest.ExceptionInfo[ValueError], *words: str) -> None:
    assert isinstance(exc.value, ValueError)
    message = str(exc.value)
    for word in words:
        assert word in message, f"{word!r} not in error message {message!r}"
    assert await jobs_collection.count_documents({}) == 0


async def test_invalid_interval_is_rejected(agenda: Agenda, jobs_collection: Any) -> None:
    with pytest.raises(ValueError, match="every now and then") as exc:
        await agenda.every("every now and then", "bad interval")
    await assert_rejected(jobs_collection, exc, "interval", "every now and then")


@pytest.mark.parametrize("cron", ["61 * * * *", "* * *", "0 0 32 * *"])
async def test_invalid_cron_is_rejected(agenda: Agenda, jobs_collection: Any, cron: str) -> None:
    with pytest.raises(ValueError, match=re.escape(cron)) as exc:
        await agenda.every(cron, "bad cron")
    await assert_rejected(jobs_collection, exc, "interval", cron)


async def test_invalid_interval_on_job_is_rejected(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="asd"):
        agenda.create("x").repeat_every("asd")
    with pytest.raises(ValueError, match="interval"):
        agenda.create("x").repeat_every("  ")  # "" and None clear the repeat, as in Agenda
    with pytest.raises(ValueError, match="-5"):
        agenda.create("x").repeat_every(-5)


async def test_invalid_repeat_at_is_rejected(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="foo"):
        agenda.create("x").repeat_at("foo")


async def test_invalid_date_is_rejected(agenda: Agenda, jobs_collection: Any) -> None:
    with pytest.raises(ValueError, match="definitely-not-a-date") as exc:
        await agenda.schedule("definitely-not-a-date", "bad date")
    await assert_rejected(jobs_collection, exc, "definitely-not-a-date")
    assert "when" in str(exc.value) or "date" in str(exc.value)
    with pytest.raises(ValueError, match="definitely-not-a-date"):
        await agenda.every("1 hour", "bad start", start_date="definitely-not-a-date")
    assert await jobs_collection.count_documents({}) == 0


async def test_invalid_timezone_is_rejected(agenda: Agenda, jobs_collection: Any) -> None:
    with pytest.raises(ValueError, match="Mars/Olympus_Mons") as exc:
        await agenda.every("0 6 * * *", "bad tz", timezone="Mars/Olympus_Mons")
    await assert_rejected(jobs_collection, exc, "timezone", "Mars/Olympus_Mons")


async def test_invalid_priority_is_rejected(agenda: Agenda, jobs_collection: Any) -> None:
    with pytest.raises(ValueError, match="urgent") as exc:
        agenda.create("x").set_priority("urgent")
    await assert_rejected(jobs_collection, exc, "priority", "urgent")
    with pytest.raises(ValueError, match="urgent"):
        agenda.define("x", lambda job: None, priority="urgent")


@pytest.mark.parametrize("name", ["", "   ", None, 42])
async def test_invalid_job_name_is_rejected(agenda: Agenda, jobs_collection: Any, name: Any) -> None:
    with pytest.raises(ValueError, match="name") as exc:
        await agenda.now(name)
    await assert_rejected(jobs_collection, exc, "name")
    with pytest.raises(ValueError, match="name"):
        await agenda.every("5 minutes", name)
    with pytest.raises(ValueError, match="name"):
        agenda.define(name, lambda job: None)
    assert await jobs_collection.count_documents({}) == 0


async def test_invalid_skip_days_are_rejected(agenda: Agenda, jobs_collection: Any) -> None:
    with pytest.raises(ValueError, match="9") as exc:
        await agenda.every("1 hour", "bad skip", skip_days=[1, 9])
    await assert_rejected(jobs_collection, exc, "skip", "9")


async def test_skip_days_move_the_next_run(agenda: Agenda) -> None:
    today = utcnow().weekday()  # Monday 0 in Python; Agenda's skipDays count Sunday as 0
    agenda_today = (today + 1) % 7
    job = await agenda.schedule(utcnow() + timedelta(minutes=1), "skipping", skip_days=[agenda_today])
    assert job.next_run_at is not None
    assert (job.next_run_at.weekday() + 1) % 7 != agenda_today
    assert job.next_run_at > utcnow() + timedelta(hours=1)


async def test_empty_name_list_is_rejected(agenda: Agenda, jobs_collection: Any) -> None:
    with pytest.raises(ValueError, match="names"):
        await agenda.every("5 minutes", [])
    assert await jobs_collection.count_documents({}) == 0


@pytest.mark.parametrize(
    "data", [{"tags": {1, 2}}, object(), {1: "int key"}], ids=["set", "object", "int-key"]
)
async def test_data_bson_cannot_hold_is_rejected(agenda: Agenda, jobs_collection: Any, data: Any) -> None:
    with pytest.raises(ValueError, match="data") as exc:
        await agenda.now("bad data", data)
    await assert_rejected(jobs_collection, exc, "data")
    job = agenda.create("bad data")
    job.data = data
    with pytest.raises(ValueError, match="data"):
        await job.save()
    with pytest.raises(ValueError, match="data"):
        await agenda.every("5 minutes", "bad data", data)
    assert await jobs_collection.count_documents({}) == 0


@pytest.mark.parametrize("operator", ["$where", "$function", "$accumulator", "$expr"])
async def test_unique_rejects_code_operators(agenda: Agenda, jobs_collection: Any, operator: str) -> None:
    with pytest.raises(ValueError, match=re.escape(operator)) as exc:
        await agenda.create("unsafe").unique({operator: "sleep(1000) || true"}).save()
    await assert_rejected(jobs_collection, exc, "unique", operator, "sleep(1000)")
    with pytest.raises(ValueError, match=r"\$"):
        await agenda.create("unsafe").unique({"data.x": {"$or": [{operator: "1"}]}}).save()
    assert await jobs_collection.count_documents({}) == 0


async def test_invalid_process_every_is_rejected(db_url: str) -> None:
    with pytest.raises(ValueError, match="soon-ish"):
        Agenda(db_url, process_every="soon-ish")


async def test_now_many_inserts_in_one_round_trip(agenda: Agenda, jobs_collection: Any) -> None:
    jobs = await agenda.now_many("bulk", [{"n": n} for n in range(50)])
    assert len({job.id for job in jobs}) == 50
    docs = [d async for d in jobs_collection.find({"name": "bulk"}).sort("data.n", 1)]
    assert [d["data"]["n"] for d in docs] == list(range(50))
    assert all(d["type"] == "normal" and d["lockedAt"] is None for d in docs)


async def test_schedule_many_and_insert_many(agenda: Agenda, jobs_collection: Any) -> None:
    later = await agenda.schedule_many("in 1 hour", "later", [1, 2])
    assert all(job.next_run_at and job.next_run_at > datetime.now(UTC) for job in later)
    with pytest.raises(ValueError, match="jobs"):
        await agenda.insert_many([agenda.create("u").unique({"data.k": 1})])
    with pytest.raises(ValueError, match="data"):
        await agenda.now_many("bad", [{"ok": 1}, {"bad": {1, 2}}])
    assert await jobs_collection.count_documents({}) == 2
