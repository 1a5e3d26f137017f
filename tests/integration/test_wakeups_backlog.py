"""A worker with a backlog (its last claim came back full) closes its change stream, and opens it again
once a claim comes back with room to spare: wake-ups then work as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from agendapy import Agenda, Job

from support import wait_until

MakeAgenda = Any


class OpenStreams:
    """Counts the store's wake-up streams open now (wraps ``due_changes``)."""

    def __init__(self, agenda: Agenda, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = 0
        self.opened = 0
        original = agenda.store.due_changes

        async def counting() -> AsyncIterator[tuple[str, datetime | None]]:
            self.open += 1
            self.opened += 1
            try:
                async for change in original():
                    yield change
            finally:
                self.open -= 1

        monkeypatch.setattr(agenda.store, "due_changes", counting)


async def test_a_worker_with_a_backlog_closes_its_stream_and_opens_it_when_the_backlog_ends(
    make_agenda: MakeAgenda, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long poll: after the backlog, only a wake-up can start the job saved by another process soon.
    worker = await make_agenda(process_every=30, max_concurrency=2, default_concurrency=2)
    producer = await make_agenda(process_every=30)
    streams = OpenStreams(worker, monkeypatch)
    release = asyncio.Event()
    finished: list[Any] = []
    started: list[Any] = []

    @worker.define("work")
    async def work(job: Job) -> None:
        started.append(job.data)
        if job.data == "backlog":
            await release.wait()
        finished.append(job.data)

    for _ in range(6):
        await producer.now("work", "backlog")
    await worker.start()
    # Two run, two wait: both claims came back full, so more is due than there was room for.
    await wait_until(lambda: len(started) == 2 and streams.opened >= 1, timeout=20)
    await wait_until(lambda: streams.open == 0, timeout=20)
    release.set()
    await wait_until(lambda: len(finished) == 6, timeout=30)
    # The top-up that found nothing more ended the backlog: the stream is open again.
    await wait_until(lambda: streams.open == 1, timeout=20)
    await asyncio.sleep(1.0)  # past the recheck after reopening: what comes now is a wake-up's
    await producer.now("work", "after")
    await wait_until(lambda: "after" in finished, timeout=15)


async def test_a_backlog_of_one_name_leaves_the_stream_open_for_the_others(make_agenda: MakeAgenda) -> None:
    # The worker has room for other names: a job of one of them saved by another process starts on
    # its wake-up, not at the next poll (half a minute away), while the busy name's backlog waits;
    # the busy name's backlog then goes on as its runs end.
    worker = await make_agenda(process_every=30, max_concurrency=10, default_concurrency=5)
    producer = await make_agenda(process_every=30)
    release = asyncio.Event()
    started: list[str] = []

    async def busy(job: Job) -> None:
        started.append("busy")
        await release.wait()

    async def mail(job: Job) -> None:
        started.append("mail")

    worker.define("busy", busy, concurrency=1)
    worker.define("mail", mail)
    for _ in range(4):
        await producer.now("busy")
    await worker.start()
    # One runs, one waits, two more are due: the claims took all the room busy had.
    await wait_until(lambda: started == ["busy"], timeout=20)
    await asyncio.sleep(1.0)  # past the stream's start-up recheck: what comes now is a wake-up's
    await producer.now("mail")
    try:
        await wait_until(lambda: "mail" in started, timeout=15)
    finally:
        release.set()
    # The claim for mail learnt nothing of busy (it had no room for it): busy's backlog is still
    # claimed as its runs end, not at the poll.
    await wait_until(lambda: started.count("busy") == 4, timeout=15)
