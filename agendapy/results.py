"""What the façade's calls return: pages of jobs, ``run_due`` outcomes, running statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .job import Job

__all__ = ["JobsResult", "RunDueResult", "RunningStats"]


@dataclass(frozen=True)
class JobsResult:
    """``query_jobs``: the page of jobs (each with ``.state``) and the total that matched."""

    jobs: list[Job]
    total: int


@dataclass(frozen=True)
class RunDueResult:
    """What ``run_due`` ran: jobs by outcome (``failed`` pairs each job with its error)."""

    succeeded: list[Job]
    failed: list[tuple[Job, BaseException | None]]
    skipped: list[Job]
    waiting: list[Job]
    #: Why each skipped job did not run (e.g. a requirement that can no longer be met), by job id.
    skip_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no run failed (jobs still waiting for their requirements are not failures)."""
        return not self.failed


@dataclass(frozen=True)
class RunningStats:
    """Agenda's getRunningStats, in snake_case."""

    version: str
    queue_name: str | None
    total_queue_size_db: int
    config: dict[str, Any]
    job_status: dict[str, dict[str, Any]]
    queued_jobs: int | list[dict[str, Any]]
    running_jobs: int | list[dict[str, Any]]
    locked_jobs: int | list[dict[str, Any]]
    internal: dict[str, Any] = field(default_factory=dict)
