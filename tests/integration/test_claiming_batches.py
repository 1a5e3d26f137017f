"""Claims come in batches: a worker whose runs end one at a time does not search for one job per run.

After runs end, a worker claims again only for the names its last claim took all their room for (more
may be due), once they have half their slots free; polls and wake-ups (a job became due) claim
whatever room there is, but leave a backlogged name with less than half its slots free to those
top-ups.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agendapy import Agenda, Job
from agendapy.store.base import ClaimRequest
from agendapy.worker import Worker

from support import EventLog, wait_until


def count_claims(
    agenda: Agenda, monkeypatch: pytest.MonkeyPatch, taken: list[int] | None = None
) -> list[int]:
    """The ``limit`` of every claim the agenda's store is asked for, in order (and in ``taken``, how
    many jobs each returned)."""
    store = agenda.store
    original = store.claim
    limits: list[int] = []

    async def claim(request: ClaimRequest, token: str, limit: int = 1) -> list[Job]:
        limits.append(limit)
        jobs = await original(request, token, limit)
        if taken is not None:
            taken.append(len(jobs))
        return jobs

    monkeypatch.setattr(store, "claim", claim)
    return limits


@pytest.mark.parametrize("process_every", [60, 0.1])
async def test_runs_ending_one_at_a_time_are_refilled_in_batches(
    make_agenda: Any, monkeypatch: pytest.MonkeyPatch, process_every: float
) -> None:
    # With a poll of a minute every claim after the first pass is a top-up after runs ended; with
    # polls every 100 ms, the polls during the backlog leave it to those top-ups too, rather than
    # searching for the one slot a run's end freed.
    agenda: Agenda = await make_agenda(max_concurrency=4, default_concurrency=4, process_every=process_every)
    gates: dict[int, asyncio.Event] = {}
    started: list[int] = []

    async def hold(job: Job) -> None:
        number = job.data["i"]
        gates[number] = asyncio.Event()
        started.append(number)
        await gates[number].wait()

    agenda.define("hold", hold)
    log = EventLog(agenda, "success:hold")
    await agenda.now_many("hold", [{"i": i} for i in range(16)])
    taken: list[int] = []
    limits = count_claims(agenda, monkeypatch, taken)
    # Claim passes done: each run's end is followed by one pass before the next run ends.
    passes = [0]
    filling_round = Worker._filling_round

    async def counted_round(worker: Worker) -> None:
        await filling_round(worker)
        passes[0] += 1

    monkeypatch.setattr(Worker, "_filling_round", counted_round)
    await agenda.start()
    # The first pass: four that start at once, four more to start as soon as slots free up.
    assert limits[:2] == [4, 4]
    for done in range(16):
        await wait_until(lambda done=done: len(started) > done)
        before = passes[0]
        gates[started[done]].set()  # the runs end one at a time, oldest first
        await log.wait("success:hold", done + 1)
        # The pass the run's end brings; with short polls, a poll as well, in every state of the room.
        after = before + (1 if process_every < 1 else 0)
        await wait_until(lambda after=after: passes[0] > after)
    # While jobs were still due, each claim searched for at least half the slots, never for the one
    # a finished run freed. (Once all are claimed, a poll searches whatever room there is.)
    backlog = next(i for i in range(len(taken)) if sum(taken[: i + 1]) == 16) + 1
    assert backlog > 2
    assert min(limits[2:backlog]) >= 2, str(list(zip(limits, taken, strict=True)))


async def test_a_backlog_of_one_name_is_refilled_while_other_names_are_idle(make_agenda: Any) -> None:
    """A service defines several names; a backlog of one of them (concurrency 2) is claimed as its
    runs end, not a few jobs per poll. The other names' free slots say nothing about that backlog:
    the claims take all the room the busy name has, so more of it may be due."""
    agenda: Agenda = await make_agenda(max_concurrency=20, default_concurrency=5, process_every=60)
    agenda.define("busy", lambda job: None, concurrency=2)
    for name in ("mail", "report", "cleanup"):
        agenda.define(name, lambda job: None)
    log = EventLog(agenda, "success:busy")
    await agenda.now_many("busy", [{"i": i} for i in range(30)])
    await agenda.start()
    # No poll within the test (process_every is a minute): a worker that claimed this name only on
    # polls would take 4 jobs (2 to run, 2 to look ahead) a minute.
    await log.wait("success:busy", 30, timeout=20)


async def _one_free_slot_takes_a_job_saved_elsewhere(worker: Agenda, other: Agenda) -> None:
    """Three of the worker's four slots hold runs; a job ``other`` saves must start in the fourth."""
    release = asyncio.Event()

    async def hold(job: Job) -> None:
        if job.data.get("hold"):
            await release.wait()

    worker.define("hold", hold)
    log = EventLog(worker, "start:hold", "success:hold")
    await worker.now_many("hold", [{"hold": True} for _ in range(3)])
    await worker.start()
    await log.wait("start:hold", 3)
    await other.now("hold", {"hold": False})
    await log.wait("success:hold", 1)
    release.set()
    await log.wait("success:hold", 4)


async def test_a_job_due_while_runs_are_ending_is_woken_for(make_agenda: Any) -> None:
    """With nothing more due, ended runs do not claim; a job saved elsewhere is still started at
    once, through the wake-up, by a worker with only one free slot."""
    worker: Agenda = await make_agenda(max_concurrency=4, default_concurrency=4, process_every=60)
    await _one_free_slot_takes_a_job_saved_elsewhere(worker, await make_agenda(process_every=60))


async def test_without_wake_ups_a_poll_claims_a_single_free_slot(make_agenda: Any) -> None:
    """A poll claims whatever room there is: one free slot of four takes a job saved elsewhere."""
    worker: Agenda = await make_agenda(
        max_concurrency=4, default_concurrency=4, process_every=0.1, change_streams=False
    )
    await _one_free_slot_takes_a_job_saved_elsewhere(worker, await make_agenda(process_every=60))


@pytest.mark.parametrize("change_streams", [False, True])
async def test_a_recurring_job_due_again_soon_is_claimed_when_its_run_ends(
    make_agenda: Any, change_streams: bool
) -> None:
    """A run that leaves its job due again (a recurring job, a retry) makes the next pass claim any
    room: every second with a poll of a minute still runs every second, with or without wake-ups."""
    agenda: Agenda = await make_agenda(process_every=60, change_streams=change_streams)

    async def tick(job: Job) -> None:
        pass

    agenda.define("tick", tick)
    log = EventLog(agenda, "success:tick")
    await agenda.every("1 second", "tick")
    await agenda.start()
    await log.wait("success:tick", 3, timeout=30)
