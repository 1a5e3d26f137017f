"""A claim for free slots may write the start of the one-off jobs it locks (``ClaimRequest.start_due``):
the run then sends no start write. Every store here does; one that did not would lock only, and its runs
would write their start as before. Either way, what is stored must be consistent."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from contract_helpers import MINUTE, MakeAgenda, claim, job, ms, raw_document, save, utcnow

from agendapy import Agenda, Job
from agendapy.store.base import JobStore

from support import wait_until

#: The stores whose claims write starts (the others must still pass every test here).
WRITES_STARTS = {"mongo", "memory", "postgres"}


async def saved(store: JobStore, **fields: Any) -> Job:
    return await save(store, job("work", **fields))


async def test_a_claim_for_free_slots_writes_the_start_of_due_one_off_jobs(
    store: JobStore, backend: str
) -> None:
    now = utcnow()
    earlier = now - 2 * MINUTE
    due = await saved(store, next_run_at=now - MINUTE, last_run_at=earlier)
    claimed = await claim(store, "work", limit=5, now=now, start_due=True, token="tok")
    assert [j.id for j in claimed] == [due.id]
    [got] = claimed
    assert got.lease is not None
    stored = await raw_document(store, str(due.id))
    if got.lease.claimed_start is None:
        assert backend not in WRITES_STARTS, "this store's claim should write the start"
        assert stored["lastRunAt"] == ms(earlier) and stored["nextRunAt"] == ms(now - MINUTE)
        return
    # The start as the run would have written it, at the lock's moment: lastRunAt, no next run.
    assert stored["lastRunAt"] == ms(now) == stored["lockedAt"]
    assert stored.get("nextRunAt") is None
    assert got.last_run_at == ms(now) and got.next_run_at is None
    # What the start replaced, so a release of a job that never started can put it back.
    assert got.lease.claimed_start.last_run_at == ms(earlier)
    assert got.lease.claimed_start.next_run_at == ms(now - MINUTE)


async def test_a_claim_writes_no_start_for_jobs_claimed_ahead_recurring_or_expired(store: JobStore) -> None:
    now = utcnow()
    ahead = await saved(store, next_run_at=now + timedelta(seconds=30))
    recurring = await saved(store, next_run_at=now - MINUTE, repeat_interval="5 minutes")
    at_a_time = await saved(store, next_run_at=now - MINUTE, repeat_at="3:30pm")
    crashed = await saved(store, next_run_at=None, locked_at=now - 20 * MINUTE, last_run_at=now - 20 * MINUTE)
    claimed = await claim(store, "work", limit=10, now=now, window=MINUTE, start_due=True)
    assert {j.id for j in claimed} == {ahead.id, recurring.id, at_a_time.id, crashed.id}
    for got in claimed:
        assert got.lease is not None and got.lease.claimed_start is None, got.id
    assert (await raw_document(store, str(ahead.id))).get("lastRunAt") is None
    assert (await raw_document(store, str(ahead.id)))["nextRunAt"] == ms(now + timedelta(seconds=30))
    assert (await raw_document(store, str(recurring.id))).get("lastRunAt") is None
    assert (await raw_document(store, str(at_a_time.id))).get("lastRunAt") is None
    assert (await raw_document(store, str(crashed.id)))["lastRunAt"] == ms(now - 20 * MINUTE)


async def test_a_claim_without_start_due_locks_only(store: JobStore) -> None:
    now = utcnow()
    due = await saved(store, next_run_at=now - MINUTE)
    [got] = await claim(store, "work", limit=5, now=now)
    assert got.lease is not None and got.lease.claimed_start is None
    stored = await raw_document(store, str(due.id))
    assert stored.get("lastRunAt") is None and stored["nextRunAt"] == ms(now - MINUTE)


async def test_releasing_a_job_whose_start_never_ran_puts_back_what_the_claim_wrote(store: JobStore) -> None:
    now = utcnow()
    earlier = now - 2 * MINUTE
    due = await saved(store, next_run_at=now - MINUTE, last_run_at=earlier)
    [got] = await claim(store, "work", limit=5, now=now, start_due=True)
    await store.release([got])
    stored = await raw_document(store, str(due.id))
    assert stored.get("lockedAt") is None
    assert stored["lastRunAt"] == ms(earlier), "a job that did not run kept the start of the claim"
    assert stored["nextRunAt"] == ms(now - MINUTE)
    [again] = await claim(store, "work", limit=5, start_due=False)
    assert again.id == due.id


async def test_a_run_started_by_its_claim_sends_one_state_write(
    make_agenda: MakeAgenda, store: JobStore, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agenda: Agenda = await make_agenda()
    writes: list[str] = []
    original = store.save_state_batched

    async def counting(job: Job, **options: Any) -> bool:
        writes.append(str(job.id))
        return await original(job, **options)

    monkeypatch.setattr(store, "save_state_batched", counting)
    seen_at_start: list[tuple[Any, Any]] = []
    done = asyncio.Event()

    @agenda.define("work")
    async def work(job: Job) -> None:
        stored = await raw_document(store, str(job.id))
        seen_at_start.append((job.last_run_at, stored.get("lastRunAt")))

    agenda.on("complete:work", lambda job: done.set())
    saved_job = await agenda.now("work")
    await agenda.start()
    await asyncio.wait_for(done.wait(), 20)
    await wait_until(lambda: len(writes) >= 1)
    # The handler saw its start stored, with the value the job holds.
    [(in_memory, in_store)] = seen_at_start
    assert in_memory is not None and in_memory == in_store
    stored = await raw_document(store, str(saved_job.id))
    assert stored["lastRunAt"] == in_memory and stored["lastFinishedAt"] >= in_memory
    assert stored.get("nextRunAt") is None and stored.get("lockedAt") is None
    expected = 1 if backend in WRITES_STARTS else 2
    assert writes == [str(saved_job.id)] * expected


async def test_a_job_claimed_ahead_gets_its_start_only_when_it_starts(
    make_agenda: MakeAgenda, store: JobStore
) -> None:
    # process_every 2 s: the first pass claims, ahead, a job due in 1 s; it must not look started.
    agenda: Agenda = await make_agenda(process_every=2.0)
    started = asyncio.Event()

    @agenda.define("work")
    async def work(job: Job) -> None:
        started.set()

    due = utcnow() + timedelta(seconds=1)
    saved_job = await agenda.schedule(due, "work")
    await agenda.start()
    stored = await raw_document(store, str(saved_job.id))
    assert stored.get("lockedAt") is not None, "the first pass should claim the job ahead"
    assert stored.get("lastRunAt") is None and stored["nextRunAt"] == ms(due)
    await asyncio.wait_for(started.wait(), 20)
    stored = await raw_document(store, str(saved_job.id))
    assert stored["lastRunAt"] >= ms(due)
