"""What the dashboard's buttons do, through agendapy's public API (so its validation applies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

from ..errors import InvalidInput
from ..job import Job, JobState
from ..validate import check_job_name

if TYPE_CHECKING:
    from ..agenda import Agenda

__all__ = ["ACTIONS", "ActionResult", "create_job", "get_job_or_404", "run_action"]

#: Fields that ``POST /api/jobs`` accepts.
CREATE_FIELDS = ("name", "data", "schedule", "repeat_every", "timezone")


@dataclass(frozen=True)
class ActionResult:
    """A message for the person who clicked, and the job the action produced or changed (None: deleted)."""

    message: str
    job: Job | None


async def get_job_or_404(agenda: Agenda, job_id: str) -> Job:
    """The job, or a 404."""
    job = await agenda.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job with id {job_id!r} (it may have been deleted)")
    return job


def _is_recurring(job: Job) -> bool:
    return bool(job.repeat_interval) or bool(job.repeat_at) or job.type == "single"


async def run_now(agenda: Agenda, job: Job) -> ActionResult:
    """A recurring job gets an extra one-off run (its schedule stays as it is); a one-off job is made
    due now (unless a worker holds it)."""
    if _is_recurring(job):
        extra = await agenda.now(job.name, job.data)
        return ActionResult(f"queued an extra run of {job.name!r} (job {extra.id})", extra)
    if job.locked_at is not None:
        raise HTTPException(409, f"job {job.name!r} is running; wait until it finishes")
    await job.schedule("now").save()
    return ActionResult(f"{job.name!r} will run as soon as a worker is free", job)


async def retry(agenda: Agenda, job: Job) -> ActionResult:
    """Make a failed job due again now, keeping its failure count (a success resets it)."""
    if job.state is not JobState.FAILED:
        raise HTTPException(409, f"only failed jobs can be retried; {job.name!r} is {job.state.value}")
    await job.schedule("now").save()
    note = " (it is disabled: enable it to run)" if job.disabled else ""
    return ActionResult(f"{job.name!r} will be retried now{note}", job)


async def disable(agenda: Agenda, job: Job) -> ActionResult:
    """Pause the job: no worker locks it until it is enabled."""
    assert job.id is not None
    await agenda.disable(id=job.id)
    return ActionResult(f"{job.name!r} is disabled", await agenda.get_job(job.id))


async def enable(agenda: Agenda, job: Job) -> ActionResult:
    """Resume a disabled job."""
    assert job.id is not None
    await agenda.enable(id=job.id)
    return ActionResult(f"{job.name!r} is enabled", await agenda.get_job(job.id))


async def cancel(agenda: Agenda, job: Job) -> ActionResult:
    """Delete the job's document."""
    assert job.id is not None
    if not await agenda.cancel(id=job.id):
        raise HTTPException(404, f"job {job.id!r} was already deleted")
    return ActionResult(f"{job.name!r} was deleted", None)


ACTIONS = {"run": run_now, "retry": retry, "disable": disable, "enable": enable, "cancel": cancel}


async def run_action(agenda: Agenda, job_id: str, action: str) -> ActionResult:
    """Apply one of :data:`ACTIONS` to a job."""
    handler = ACTIONS.get(action)
    if handler is None:
        raise HTTPException(404, f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    return await handler(agenda, await get_job_or_404(agenda, job_id))


def _optional_text(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, value, "must be a string")
    return value.strip()


async def create_job(agenda: Agenda, body: Mapping[str, Any]) -> ActionResult:
    """Create a job from ``{name, data, schedule, repeat_every, timezone}``.

    ``repeat_every`` (an interval or cron expression) makes a recurring job, else ``schedule`` (a date
    or "in 20 minutes"; default "now") a one-off one. ``timezone`` applies to ``repeat_every``.
    """
    unknown = sorted(set(body) - set(CREATE_FIELDS))
    if unknown:
        raise InvalidInput("body", unknown, f"unknown fields (known: {', '.join(CREATE_FIELDS)})")
    name = check_job_name(body.get("name"))
    data = body.get("data")
    repeat_every: Any = body.get("repeat_every")
    if isinstance(repeat_every, str):
        repeat_every = repeat_every.strip() or None
    if isinstance(repeat_every, bool):
        raise InvalidInput("repeat_every", repeat_every, "must be an interval such as '5 minutes' or cron")
    schedule = _optional_text(body, "schedule") or "now"
    timezone = _optional_text(body, "timezone")
    if repeat_every is not None:
        job: Job = await agenda.every(repeat_every, name, data, timezone=timezone)
        return ActionResult(f"{name!r} repeats every {repeat_every}", job)
    if timezone is not None:
        raise InvalidInput("timezone", timezone, "applies to repeating jobs only (set repeat_every)")
    if schedule.lower() == "now":
        job = await agenda.now(name, data)
        return ActionResult(f"{name!r} will run as soon as a worker is free", job)
    job = await agenda.schedule(schedule, name, data)
    return ActionResult(f"{name!r} is scheduled", job)
