"""``Agenda.wait_for``'s loop: the end of a job's next run, heard as an event or read from the store."""

from __future__ import annotations

import asyncio

from .errors import JobFailed, JobNotFound
from .events import EventEmitter
from .job import Job
from .store.base import JobStore

__all__ = ["check_run_succeeded", "wait_for_run"]


async def wait_for_run(
    store: JobStore, events: EventEmitter, job_id: str, *, poll: float, timeout: float | None
) -> Job:
    """The job ``job_id`` once its next run has ended (at once if it is a one-off that has finished).

    Listens to ``complete`` and reads the document every ``poll`` seconds, so a missed event only
    delays the answer (``check_run_succeeded`` then tells how that run ended). Raises
    ``JobNotFound`` if the job is (or becomes) missing, ``TimeoutError`` after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    completed: asyncio.Future[Job] = loop.create_future()

    def on_complete(finished: Job) -> None:
        if finished.id == job_id and not completed.done():
            completed.set_result(finished)

    events.on("complete", on_complete)  # before the first read: no end falls in between
    try:
        async with asyncio.timeout(timeout):
            first = await store.get_job(job_id)
            if first is None:
                raise JobNotFound(f"job with id {job_id} not found in database")
            result: Job | None = first if _has_finished(first) else None
            while result is None:
                try:
                    result = await asyncio.wait_for(asyncio.shield(completed), poll)
                except TimeoutError:
                    current = await store.get_job(job_id)
                    if current is None:
                        raise JobNotFound(f"job {job_id} was removed before it finished") from None
                    if _finished_since(first, current):
                        result = current
    finally:
        events.off("complete", on_complete)
    return result


def check_run_succeeded(job: Job) -> Job:
    """``job`` itself, unless its last run failed: then ``JobFailed`` with the reason."""
    if job.failed_at is not None and (job.last_finished_at is None or job.failed_at >= job.last_finished_at):
        raise JobFailed(job, job.fail_reason)
    return job


def _has_finished(job: Job) -> bool:
    """A one-off job whose run is over and that has nothing more to run."""
    return job.locked_at is None and job.last_finished_at is not None and job.next_run_at is None


def _finished_since(before: Job, now: Job) -> bool:
    """A run ended between the two reads of the same job."""
    if now.locked_at is not None or now.last_finished_at is None:
        return False
    return before.last_finished_at is None or now.last_finished_at > before.last_finished_at
