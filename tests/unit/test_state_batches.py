"""StateBatcher, the batching every store's state writer shares, over a store that is only a dict: what
a store gets to write (one call per batch), and what each writer gets back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agendapy.job import Job, Lease, set_lease
from agendapy.store.state_batches import PendingState, StateBatcher

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Refusal:
    """This fake store's refusal of one write."""

    def __init__(self, message: str) -> None:
        self.message = message


class DictBatcher(StateBatcher[Refusal]):
    """Rows in a dict; a write applies while the row's (lockedAt, lockToken) is the lease's."""

    def __init__(self, *, window: float = 0.05) -> None:
        super().__init__(window=window)
        self.rows: dict[str, dict[str, Any]] = {}
        self.batches: list[list[str]] = []
        self.refuse: set[str] = set()
        self.fail_with: Exception | None = None
        self.settled: list[str] = []
        self.removals: list[list[str]] = []

    async def _write_leased(self, live: list[tuple[Job, dict[str, Any]]]) -> list[bool | Refusal]:
        self.batches.append([str(job.id) for job, _ in live])
        if self.fail_with is not None:
            raise self.fail_with
        outcomes: list[bool | Refusal] = []
        for job, values in live:
            row, lease = self.rows.get(str(job.id)), job.lease
            assert lease is not None
            if job.id in self.refuse:
                outcomes.append(Refusal(f"{job.id} refused"))
            elif row is None or (row["lockedAt"], row["lockToken"]) != (lease.locked_at, lease.token):
                outcomes.append(False)
            else:
                row.update(values)
                outcomes.append(True)
        return outcomes

    async def _settle_refused(self, entry: PendingState, refused: Refusal) -> None:
        self.settled.append(str(entry.job.id))
        entry.done.set_result(False)

    def _refusal_error(self, refused: Refusal) -> Exception:
        return ValueError(refused.message)

    async def _remove_ids(self, job_ids: list[str]) -> None:
        self.removals.append(job_ids)
        if self.fail_with is not None:
            raise self.fail_with
        for job_id in job_ids:
            self.rows.pop(job_id, None)

    def _batch_error(self, exc: Exception) -> Exception:
        return RuntimeError(f"unavailable: {exc}")


def leased(batcher: DictBatcher, job_id: str, token: str = "tok") -> Job:
    """A job claimed at T0 under ``token``, stored as locked."""
    job = Job(name="n", id=job_id, locked_at=T0, last_run_at=T0, next_run_at=T0 + timedelta(hours=1))
    set_lease(job, Lease(token=token, locked_at=T0))
    batcher.rows[job_id] = {"lockedAt": T0, "lockToken": token}
    return job


def finished(job: Job) -> Job:
    """The job as a run's final write leaves it: unlocked."""
    job.locked_at = None
    return job


async def test_writes_within_the_window_go_out_as_one_batch_and_each_writer_gets_its_outcome() -> None:
    batcher = DictBatcher()
    jobs = [finished(leased(batcher, f"j{i}")) for i in range(3)]
    batcher.rows["j2"]["lockToken"] = "another worker's"

    outcomes = await asyncio.gather(*(batcher.queue(job, ["last_finished_at"]) for job in jobs))

    assert outcomes == [True, True, False]
    assert batcher.batches == [["j0", "j1", "j2"]]
    stamped = batcher.rows["j0"]["lastFinishedAt"]
    assert stamped == batcher.rows["j1"]["lastFinishedAt"]  # one instant for the batch
    assert stamped.microsecond % 1000 == 0  # to the millisecond a date is stored with
    assert jobs[0].last_finished_at == stamped  # an applied write's stamp is the job's
    assert jobs[2].last_finished_at is None
    # The final write releases the lock; the start's lastRunAt is left out (it has not changed).
    assert batcher.rows["j0"]["lockedAt"] is None and batcher.rows["j0"]["lockToken"] is None
    assert "lastRunAt" not in batcher.rows["j0"]


async def test_a_kept_lock_moves_to_the_batch_instant_and_the_lease_follows() -> None:
    batcher = DictBatcher()
    job = leased(batcher, "j0")

    assert await batcher.queue(job, ["last_run_at"]) is True

    written = batcher.rows["j0"]["lockedAt"]
    assert written > T0 and written == batcher.rows["j0"]["lastRunAt"]
    assert job.lease is not None and job.lease.locked_at == written
    assert job.locked_at == written and job.last_run_at == written


async def test_a_refused_write_is_settled_alone_and_the_others_of_its_batch_stand() -> None:
    batcher = DictBatcher()
    jobs = [finished(leased(batcher, f"j{i}")) for i in range(3)]
    batcher.refuse = {"j1"}

    outcomes = await asyncio.gather(*(batcher.queue(job, ["last_finished_at"]) for job in jobs))

    assert outcomes == [True, False, True]
    assert batcher.settled == ["j1"]
    with pytest.raises(ValueError, match="j1 refused"):
        await batcher.apply([(jobs[1], {"progress": 50})])


async def test_a_batch_that_fails_as_a_whole_fails_every_writer_with_the_stores_error() -> None:
    batcher = DictBatcher()
    jobs = [finished(leased(batcher, f"j{i}")) for i in range(2)]
    batcher.fail_with = OSError("connection reset")

    results = await asyncio.gather(*(batcher.queue(job, []) for job in jobs), return_exceptions=True)

    assert [type(result) for result in results] == [RuntimeError, RuntimeError]
    assert "connection reset" in str(results[0])


async def test_a_full_batch_goes_out_without_waiting_for_the_window() -> None:
    batcher = DictBatcher(window=3600.0)
    jobs = [finished(leased(batcher, f"j{i}")) for i in range(200)]

    outcomes = await asyncio.wait_for(asyncio.gather(*(batcher.queue(job, []) for job in jobs)), 30.0)

    assert all(outcomes) and len(batcher.batches) == 1


async def test_drain_sends_what_waits_for_the_window() -> None:
    batcher = DictBatcher(window=3600.0)
    pending = asyncio.ensure_future(batcher.queue(finished(leased(batcher, "j0")), []))
    await asyncio.sleep(0)  # let the write be queued

    await batcher.drain(timeout=30.0)

    assert pending.done() and pending.result() is True


async def test_removals_within_the_window_go_out_as_one_deletion() -> None:
    batcher = DictBatcher()
    for i in range(3):
        leased(batcher, f"j{i}")

    await asyncio.gather(*(batcher.queue_removal(f"j{i}") for i in (2, 0, 2)))

    assert batcher.removals == [["j0", "j2"]]
    assert batcher.rows.keys() == {"j1"}


async def test_removals_queued_while_a_batch_is_in_flight_follow_it() -> None:
    batcher = DictBatcher(window=0)
    job = finished(leased(batcher, "j0"))
    leased(batcher, "j1")
    assert job.lease is not None
    async with job.lease.write_lock:  # the state write waits for its lease: its batch is in flight
        write = asyncio.ensure_future(batcher.queue(job, []))
        await asyncio.sleep(0.01)
        removal = asyncio.ensure_future(batcher.queue_removal("j1"))
        await asyncio.sleep(0.01)
        assert batcher.removals == [] and not removal.done()

    await asyncio.wait_for(asyncio.gather(write, removal), 30.0)
    assert batcher.removals == [["j1"]] and "j1" not in batcher.rows


async def test_a_failed_removal_fails_every_writer_with_the_stores_error() -> None:
    batcher = DictBatcher()
    batcher.fail_with = OSError("connection reset")

    results = await asyncio.gather(
        *(batcher.queue_removal(f"j{i}") for i in range(2)), return_exceptions=True
    )

    assert [type(result) for result in results] == [RuntimeError, RuntimeError]
    assert "connection reset" in str(results[0])


async def test_drain_sends_the_removals_that_wait_for_the_window() -> None:
    batcher = DictBatcher(window=3600.0)
    leased(batcher, "j0")
    pending = asyncio.ensure_future(batcher.queue_removal("j0"))
    await asyncio.sleep(0)

    await batcher.drain(timeout=30.0)

    assert pending.done() and batcher.rows == {}


async def test_renewal_moves_live_locks_and_names_the_lost_ones() -> None:
    batcher = DictBatcher()
    kept, taken, ending = (leased(batcher, f"j{i}") for i in range(3))
    batcher.rows["j1"]["lockToken"] = "another worker's"
    assert ending.lease is not None
    ending.lease.finishing = True
    beat = T0 + timedelta(minutes=1)

    assert await batcher.renew_locks([kept, taken, ending], beat) == [taken]
    assert batcher.rows["j0"]["lockedAt"] == beat and kept.locked_at == beat
    assert kept.lease is not None and kept.lease.locked_at == beat
    assert batcher.rows["j2"]["lockedAt"] == T0  # a run writing its final state is left alone


async def test_release_unlocks_and_reschedules() -> None:
    batcher = DictBatcher()
    job = leased(batcher, "j0")
    later = T0 + timedelta(hours=2)

    await batcher.release([job], reschedule_at=later)

    assert batcher.rows["j0"]["lockedAt"] is None and batcher.rows["j0"]["nextRunAt"] == later
    assert job.locked_at is None
    assert job.lease is not None and job.lease.finishing
