"""A Job needs only its owner's few operations (the JobOwner protocol), not an Agenda; its lease is
read-only outside the store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agendapy import Job, LockLost
from agendapy.job import JobOwner, Lease, set_lease


class RecordingOwner:
    """The smallest owner a job can have: it records what the job asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def save_job(self, job: Job) -> Job:
        self.calls.append(("save", job.name))
        job.id = "1"
        return job

    async def remove_job(self, job: Job) -> int:
        self.calls.append(("remove", job.name))
        return 1

    async def touch_job(self, job: Job) -> None:
        self.calls.append(("touch", job.name))

    async def checkpoint_job(self, job: Job) -> None:
        self.calls.append(("checkpoint", job.name))

    async def run_job_now(self, job: Job) -> None:
        self.calls.append(("run", job.name))

    async def refresh_run_fields(self, job: Job) -> None:
        self.calls.append(("refresh", job.name))


async def test_a_job_reaches_its_owner_only_through_the_protocol() -> None:
    owner = RecordingOwner()
    checked: JobOwner = owner  # mypy checks that the protocol is all a job needs
    job = Job("report", agenda=checked)
    await job.save()
    await job.touch(50)
    await job.checkpoint({"page": 2})
    await job.run()
    assert await job.is_running() is False
    assert await job.remove() == 1
    assert [call for call, _ in owner.calls] == ["save", "touch", "checkpoint", "run", "refresh", "remove"]
    assert job.progress == 50 and job.checkpoint_state == {"page": 2}


async def test_removing_an_unsaved_job_asks_nothing() -> None:
    owner = RecordingOwner()
    assert await Job("report", agenda=owner).remove() == 0
    assert owner.calls == []


def test_the_lease_is_read_only_and_set_by_the_store() -> None:
    job = Job("report")
    assert job.lease is None and not job.lock_lost
    with pytest.raises(AttributeError):
        job.lease = Lease(token="t", locked_at=datetime.now(UTC))  # type: ignore[misc]
    lease = Lease(token="t", locked_at=datetime.now(UTC))
    set_lease(job, lease)
    assert job.lease is lease
    job.raise_if_lost()
    lease.lost = True
    assert job.lock_lost
    with pytest.raises(LockLost):
        job.raise_if_lost()
