"""What this process holds and runs: ``Agenda.local_status`` and ``Agenda.running_stats``' bodies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .definition import JobDefinition
from .job import Job
from .results import RunningStats
from .worker import Worker

__all__ = ["local_status", "running_stats"]


def local_status(processor: Worker | None, names: Mapping[str, JobDefinition]) -> dict[str, dict[str, int]]:
    """Per defined name, ``running`` and ``locked`` counts of ``processor`` (zeros without one)."""
    return {
        name: {
            "running": processor.running_count(name) if processor else 0,
            "locked": processor.locked_count(name) if processor else 0,
        }
        for name in names
    }


def running_stats(
    processor: Worker,
    definitions: Mapping[str, JobDefinition],
    *,
    full: bool,
    version: str,
    queue_name: str | None,
    total_queue_size: int,
    lock_limit: int,
    max_concurrency: int,
    process_every: timedelta,
) -> RunningStats:
    """Agenda's getRunningStats from the started worker (job documents with ``full``, else counts)."""
    job_status = {
        name: {
            "running": processor.running_count(name),
            "locked": processor.locked_count(name),
            "config": definition.config(),
        }
        for name, definition in definitions.items()
    }

    def listing(jobs: list[Job], count: int) -> int | list[dict[str, Any]]:
        return [job.to_dict() for job in jobs] if full else count

    waiting, running = processor.waiting_jobs, processor.running_jobs
    return RunningStats(
        version=version,
        queue_name=queue_name,
        total_queue_size_db=total_queue_size,
        config={
            "total_lock_limit": lock_limit,
            "max_concurrency": max_concurrency,
            "process_every": process_every,
        },
        job_status=job_status,
        queued_jobs=listing(waiting, len(waiting)),
        running_jobs=listing(running, len(running)),
        locked_jobs=listing(waiting + running, len(waiting) + len(running)),
    )
