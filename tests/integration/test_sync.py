"""SyncAgenda: the blocking façade, called from plain threads against the real test database."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient

from agendapy import DatabaseUnavailable, InvalidInput, Job, JobFailed, JobState, UnknownJob
from agendapy.sync import SyncAgenda, SyncAgendaClosed
from agendapy.testing import MemoryJobStore


@pytest.fixture
def sync_client(db_url: str) -> Iterator[MongoClient[Any]]:
    """A synchronous client; this test's database is dropped afterwards."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(db_url, tz_aware=True) as client:
        yield client
        client.drop_database(client.get_default_database().name)


@pytest.fixture
def agenda(db_url: str, sync_client: MongoClient[Any]) -> Iterator[SyncAgenda]:
    with SyncAgenda(db_url, name="web-1") as made:
        yield made


def test_scheduling_and_querying(agenda: SyncAgenda) -> None:
    now_job = agenda.now("email", {"to": "ada"})
    later = agenda.schedule("in 1 hour", "email", {"to": "bob"})
    both = agenda.schedule(datetime.now(UTC) + timedelta(days=1), ["a", "b"])
    recurring = agenda.every("5 minutes", "report", {"kind": "daily"}, timezone="Europe/Paris")
    assert isinstance(now_job, Job) and now_job.id and later.id and recurring.id
    assert [j.name for j in both] == ["a", "b"]
    assert agenda.query_jobs(name="email").total == 2
    assert agenda.query_jobs(data={"to": "bob"}).jobs[0].id == later.id
    assert agenda.query_jobs(state="repeating").jobs[0].name == "report"
    stored = agenda.get_job(now_job.id)
    assert stored is not None and stored.last_modified_by == "web-1"
    overview = {entry["name"]: entry for entry in agenda.jobs_overview()}
    assert overview["email"]["total"] == 2 and overview["report"]["repeating"] == 1


def test_create_change_and_save(agenda: SyncAgenda) -> None:
    job = agenda.create("invoice", {"n": 1}).schedule("in 2 hours").set_priority("high")
    saved = agenda.save(job)
    assert saved is job and job.id
    job.data = {"n": 2}
    agenda.save(job)
    [stored] = agenda.query_jobs(name="invoice").jobs
    assert stored.data == {"n": 2} and stored.priority == 10 and stored.state is JobState.SCHEDULED
    unique = agenda.create("sync user", {"user": 7}).unique({"data.user": 7})
    agenda.save(unique)
    agenda.save(agenda.create("sync user", {"user": 7, "v": 2}).unique({"data.user": 7}))
    assert agenda.query_jobs(name="sync user").total == 1
    debounced = agenda.now_debounced("reindex", {"k": 1}, {"data.k": 1}, delay=30)
    assert debounced.next_run_at is not None and debounced.next_run_at > datetime.now(UTC)


def test_cancel_disable_enable_purge(agenda: SyncAgenda) -> None:
    for name in ("keep", "keep", "drop", "stray"):
        agenda.now(name, {"name": name})
    assert agenda.cancel() == 0  # no criteria, nothing removed (Agenda's rule)
    assert agenda.cancel(name="drop") == 1
    assert agenda.disable(name="keep") == 2
    assert agenda.query_jobs(name="keep", include_disabled=False).total == 0
    assert agenda.enable(data={"name": "keep"}) == 2
    assert agenda.purge() == 0  # nothing defined: purge removes nothing
    agenda.define("keep", lambda job: None)
    assert agenda.purge() == 1  # "stray"
    assert agenda.cancel_all() == 2


def test_many_threads_at_once(agenda: SyncAgenda) -> None:
    def work(worker: int) -> list[str]:
        ids = []
        for i in range(10):
            ids.append(agenda.now("bulk", {"worker": worker, "i": i}).id or "")
            agenda.query_jobs(name="bulk", limit=1)
        return ids

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [job_id for chunk in pool.map(work, range(8)) for job_id in chunk]
    assert len(set(ids)) == 80
    assert agenda.query_jobs(name="bulk").total == 80


def test_run_due_runs_sync_and_async_handlers(agenda: SyncAgenda) -> None:
    seen: list[tuple[str, str]] = []

    @agenda.define("sync handler")
    def sync_handler(job: Job) -> None:
        seen.append(("sync", threading.current_thread().name))

    @agenda.define("async handler", history=True)
    async def async_handler(job: Job) -> None:
        seen.append(("async", threading.current_thread().name))

    @agenda.define("failing")
    def failing(job: Job) -> None:
        raise RuntimeError("nope")

    for name in ("sync handler", "async handler", "failing"):
        agenda.now(name)
    result = agenda.run_due()
    assert sorted(j.name for j in result.succeeded) == ["async handler", "sync handler"]
    assert [(j.name, str(e)) for j, e in result.failed] == [("failing", "nope")]
    assert ("async", "agendapy-sync") in seen  # async handlers run on the background loop
    [record] = agenda.runs("async handler")
    assert record.status == "succeeded"
    with pytest.raises(UnknownJob):
        agenda.run_due(["undefined"])


def test_wait_for_blocks_until_another_thread_runs_the_job(agenda: SyncAgenda) -> None:
    @agenda.define("report")
    def report(job: Job) -> None:
        pass

    @agenda.define("broken")
    def broken(job: Job) -> None:
        raise RuntimeError("no printer")

    ok, failing = agenda.now("report"), agenda.now("broken")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(agenda.wait_for, ok, timeout=30)
        assert not waiting.done()
        agenda.run_due()
        assert waiting.result(30).last_finished_at is not None
    with pytest.raises(JobFailed, match="no printer"):
        agenda.wait_for(failing.id or "", timeout=30)


def test_errors_reach_the_calling_thread(agenda: SyncAgenda) -> None:
    with pytest.raises(InvalidInput, match="when"):
        agenda.schedule("not a date at all", "x")
    with pytest.raises(ValueError, match="name"):
        agenda.now("")
    with pytest.raises(ValueError, match="status"):
        agenda.runs(status="bogus")  # type: ignore[arg-type]
    agenda.now("still works")


def test_blocking_calls_from_its_own_loop_are_refused(agenda: SyncAgenda) -> None:
    errors: list[BaseException] = []

    @agenda.define("nested")
    async def nested(job: Job) -> None:
        try:
            agenda.now("inner")
        except RuntimeError as exc:
            errors.append(exc)
        await agenda.agenda.now("inner")  # the async Agenda is the way, from its loop

    agenda.now("nested")
    agenda.run_due(["nested"])
    assert len(errors) == 1 and "own event loop" in str(errors[0])
    assert agenda.query_jobs(name="inner").total == 1


def test_sync_handlers_may_call_it(agenda: SyncAgenda) -> None:
    @agenda.define("fan out")
    def fan_out(job: Job) -> None:  # runs in a worker thread, not on the loop: blocking calls are fine
        agenda.now("child", {"from": job.id})

    agenda.now("fan out")
    agenda.run_due(["fan out"])
    assert agenda.query_jobs(name="child").total == 1


def test_call_timeout(db_url: str, sync_client: MongoClient[Any]) -> None:
    # Long enough for connect and now() on a loaded machine (1.5 s was not always); the handler
    # outlasts it by far, and the test takes no longer: closing waits for the handler anyway.
    with SyncAgenda(db_url, call_timeout=3) as agenda:

        @agenda.define("slow")
        def slow(job: Job) -> None:
            time.sleep(6)

        agenda.now("slow")
        with pytest.raises(TimeoutError, match=r"within 3 s"):
            agenda.run_due()
    with pytest.raises(InvalidInput, match="call_timeout"):
        SyncAgenda(db_url, call_timeout=0)


def test_close_and_context_manager(db_url: str, sync_client: MongoClient[Any]) -> None:
    agenda = SyncAgenda(db_url)
    agenda.connect()
    thread = agenda._thread
    agenda.close()
    agenda.close()  # twice is fine
    assert agenda.closed and not thread.is_alive()
    with pytest.raises(SyncAgendaClosed, match="closed"):
        agenda.now("late")
    with SyncAgenda(db_url) as other:
        other.now("x")
    assert other.closed


def test_sync_pymongo_client_and_database_are_accepted(sync_client: MongoClient[Any]) -> None:
    with SyncAgenda(sync_client) as agenda:
        agenda.now("from client")
        assert agenda.query_jobs(name="from client").total == 1
    with SyncAgenda(sync_client.get_default_database(), collection="other") as agenda:
        agenda.now("from database")
    assert sync_client.get_default_database()["other"].count_documents({"name": "from database"}) == 1
    sync_client.admin.command("ping")  # the user's client is still open


def test_an_unreachable_database_is_a_clear_error() -> None:
    agenda = SyncAgenda("mongodb://127.0.0.1:9/app?serverSelectionTimeoutMS=300")
    with agenda, pytest.raises(DatabaseUnavailable, match="cannot reach MongoDB"):
        agenda.now("x")
    with pytest.raises(InvalidInput):
        SyncAgenda("http://not-mongo")


def test_use_after_a_fork_is_refused(agenda: SyncAgenda, monkeypatch: pytest.MonkeyPatch) -> None:
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)
    with pytest.raises(SyncAgendaClosed, match="fork"):
        agenda.now("x")


def test_memory_store_for_tests() -> None:
    store = MemoryJobStore()
    with SyncAgenda(store) as agenda:
        agenda.define("hello", lambda job: None)
        agenda.now("hello")
        assert agenda.run_due().ok
    assert [d["name"] for d in store.documents()] == ["hello"]


def test_job_logs_and_workers_from_sync_code(agenda: SyncAgenda) -> None:
    @agenda.define("logged", logging=True)
    def logged(job: Job) -> None:
        raise RuntimeError("nope")

    job = agenda.now("logged")
    agenda.run_due()
    result = agenda.get_logs(job_id=job.id, sort="asc")
    assert [entry.event for entry in result.entries] == ["start", "fail", "complete"]
    assert agenda.clear_logs(job_name="logged") == 3
    assert agenda.get_logs().total == 0
    assert agenda.workers() == []  # run-due is not a worker: it registers nothing
