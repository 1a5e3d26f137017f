"""Commands that look at and change jobs: ``jobs ls/show/cancel/retry/pause/resume/purge``,
``schedule``, ``stats`` and ``workers``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import click

from ..agenda import Agenda
from ..job import Job, JobState
from ..store.runs import RunRecord
from ..workers import WorkerInfo
from . import output as out
from .loading import (
    BadInput,
    Source,
    criteria_options,
    database_options,
    database_url_option,
    describe_criteria,
    json_option,
    parse_criteria,
    parse_json,
    with_agenda,
)

__all__ = ["jobs", "schedule", "stats", "workers"]


@click.group()
def jobs() -> None:
    """List, inspect and change jobs."""


@jobs.command("ls")
@database_options
@click.option("--name", "names", multiple=True, help="Only jobs of this name (repeatable).")
@click.option(
    "--state",
    type=click.Choice([s.value for s in JobState], case_sensitive=False),
    help="Only jobs in this computed state.",
)
@click.option("--search", metavar="TEXT", help="Only names containing TEXT (case-insensitive).")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(0), help="At most this many (0: all)."
)
@click.option("--skip", default=0, show_default=True, type=click.IntRange(0), help="Skip this many first.")
@json_option
def jobs_ls(
    source: Source,
    names: tuple[str, ...],
    state: str | None,
    search: str | None,
    limit: int,
    skip: int,
    as_json: bool,
) -> None:
    """List jobs, most recent next run first: id, name, state, next and last run, fails, lock."""

    async def work(agenda: Agenda) -> Any:
        return await agenda.query_jobs(
            names=list(names) or None, state=state, search=search, skip=skip, limit=limit
        )

    result = with_agenda(source, work)
    if as_json:
        jobs = [out.job_json(job) for job in result.jobs]
        out.print_json({"total": result.total, "skip": skip, "limit": limit, "jobs": jobs})
        return
    out.print_jobs(result.jobs, total=result.total, skip=skip)


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@database_options
@click.option(
    "--runs", "runs_limit", default=10, show_default=True, type=click.IntRange(0), help="Recent runs to show."
)
@json_option
def jobs_show(source: Source, job_id: str, runs_limit: int, as_json: bool) -> None:
    """Show one job: every field, its data as JSON and its recent runs."""

    async def work(agenda: Agenda) -> tuple[Job, list[RunRecord]]:
        job = await _get_job(agenda, job_id)
        runs: list[RunRecord] = []
        if runs_limit:
            records = await agenda.runs(job.name, limit=max(100, runs_limit * 10))
            runs = [run for run in records if run.job_id == job.id][:runs_limit]
        return job, runs

    job, runs = with_agenda(source, work)
    if as_json:
        out.print_json({"job": out.job_json(job), "runs": [out.run_json(run) for run in runs]})
        return
    out.print_job(job, runs)


async def _get_job(agenda: Agenda, job_id: str) -> Job:
    job = await agenda.get_job(job_id)
    if job is None:
        raise BadInput(f"no job with id {job_id!r}")
    return job


async def _count_matching(agenda: Agenda, criteria: dict[str, Any]) -> int:
    result = await agenda.query_jobs(**criteria, limit=1)
    if result.total == 0:
        raise BadInput(f"no job matches {describe_criteria(criteria)}")
    return result.total


async def _confirm(question: str) -> None:
    await asyncio.to_thread(click.confirm, question, abort=True, err=True)


@jobs.command("cancel")
@database_options
@criteria_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def jobs_cancel(
    source: Source,
    ids: tuple[str, ...],
    names: tuple[str, ...],
    data_json: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete the jobs matching --id, --name and --data (all given criteria must match)."""
    criteria = parse_criteria(ids, names, data_json)

    async def work(agenda: Agenda) -> int:
        matching = await _count_matching(agenda, criteria)
        if not yes:
            await _confirm(f"Delete {matching} job(s) matching {describe_criteria(criteria)}?")
        return await agenda.cancel(**criteria)

    cancelled = with_agenda(source, work)
    if as_json:
        out.print_json({"cancelled": cancelled})
    else:
        out.say(f"cancelled {cancelled} job(s)")


@jobs.command("retry")
@click.argument("job_id", metavar="ID")
@database_options
@json_option
def jobs_retry(source: Source, job_id: str, as_json: bool) -> None:
    """Make job ID (usually a failed one) due now, changing nothing else: job.schedule("now").save()."""

    async def work(agenda: Agenda) -> Job:
        job = await _get_job(agenda, job_id)
        job.schedule("now")
        if job.next_run_at is None:
            raise BadInput(f"job {job_id} cannot run again: its end date has passed")
        if job.locked_at is not None:
            out.warn(
                f"job {job_id} is locked (running, or its worker died); the run in progress may reschedule it"
            )
        if job.disabled:
            out.warn(f"job {job_id} is paused: it runs once resumed (agendapy jobs resume --id {job_id})")
        return await job.save()

    job = with_agenda(source, work)
    if as_json:
        out.print_json(out.job_json(job))
        return
    failure = f" (failed {job.fail_count} time(s): {job.fail_reason})" if job.fail_count else ""
    out.say(f"job {job.id} ({job.name}) is due now{failure}")


def _toggle(source: Source, criteria: dict[str, Any], *, pause: bool, as_json: bool) -> None:
    async def work(agenda: Agenda) -> tuple[int, int]:
        matching = await _count_matching(agenda, criteria)
        changed = await (agenda.disable(**criteria) if pause else agenda.enable(**criteria))
        return matching, changed

    matching, changed = with_agenda(source, work)
    verb = "paused" if pause else "resumed"
    if as_json:
        out.print_json({"matched": matching, verb: changed})
        return
    already = f" ({matching - changed} already {verb})" if matching != changed else ""
    out.say(f"{verb} {changed} job(s){already}")


@jobs.command("pause")
@database_options
@criteria_options
@json_option
def jobs_pause(
    source: Source, ids: tuple[str, ...], names: tuple[str, ...], data_json: str | None, as_json: bool
) -> None:
    """Disable the matching jobs: no worker locks them until they are resumed."""
    _toggle(source, parse_criteria(ids, names, data_json), pause=True, as_json=as_json)


@jobs.command("resume")
@database_options
@criteria_options
@json_option
def jobs_resume(
    source: Source, ids: tuple[str, ...], names: tuple[str, ...], data_json: str | None, as_json: bool
) -> None:
    """Enable the matching jobs again."""
    _toggle(source, parse_criteria(ids, names, data_json), pause=False, as_json=as_json)


@jobs.command("purge")
@click.argument("target")
@database_url_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def jobs_purge(target: str, database_url: str | None, yes: bool, as_json: bool) -> None:
    """Delete every job whose name TARGET does not define (agenda.purge())."""

    async def work(agenda: Agenda) -> int:
        defined = set(agenda.definitions)
        if not defined:
            out.warn(f"{target} defines no job names: nothing is purged")
            return 0
        doomed = [entry for entry in await agenda.jobs_overview() if entry["name"] not in defined]
        if not doomed:
            return 0
        if not yes:
            listing = ", ".join(f"{entry['name']} ({entry['total']})" for entry in doomed)
            total = sum(int(entry["total"]) for entry in doomed)
            await _confirm(f"Delete {total} job(s) of names {target} does not define: {listing}?")
        return await agenda.purge()

    purged = with_agenda(Source(target, database_url), work)
    if as_json:
        out.print_json({"purged": purged})
    else:
        out.say(f"purged {purged} job(s)")


@click.command()
@click.argument("name")
@click.argument("when", required=False)
@click.option("--data", "data_json", metavar="JSON", help="The job's data, as JSON.")
@click.option(
    "--every",
    "interval",
    metavar="INTERVAL",
    help='Repeat: "5 minutes", "PT15M", a cron expression; WHEN is then the earliest first run.',
)
@click.option(
    "--timezone", metavar="TZ", help="IANA timezone of a --every schedule (cron), e.g. Europe/Paris."
)
@database_options
@json_option
def schedule(
    source: Source,
    name: str,
    when: str | None,
    data_json: str | None,
    interval: str | None,
    timezone: str | None,
    as_json: bool,
) -> None:
    """Create job NAME: due WHEN ("now", "in 20 minutes", "2030-01-01 09:00"; UTC unless it says)
    or, with --every, recurring (one document per NAME: a new schedule replaces the old one)."""
    data = parse_json(data_json, "--data")
    if interval is None:
        if when is None:
            raise click.UsageError("give WHEN (now, a date, 'in 20 minutes') or --every INTERVAL")
        if timezone is not None:
            raise click.BadParameter("applies to --every schedules only", param_hint="--timezone")

    async def work(agenda: Agenda) -> Job:
        if source.target and name not in agenda.definitions:
            out.warn(f"{source.target} does not define {name!r}: it runs when a worker that defines it is up")
        if interval is not None:
            start = None if when is None or when.strip().lower() == "now" else when
            job: Job = await agenda.every(interval, name, data, timezone=timezone, start_date=start)
            return job
        assert when is not None
        scheduled: Job = await agenda.schedule(when, name, data)
        return scheduled

    job = with_agenda(source, work, indexes=True)
    if as_json:
        out.print_json(out.job_json(job))
        return
    repeat = f", every {job.repeat_interval}" if job.repeat_interval else ""
    zone = f" ({job.repeat_timezone})" if job.repeat_timezone else ""
    next_run = out.ago(job.next_run_at, datetime.now(UTC))
    out.say(f"scheduled {job.name} ({job.id}): next run {next_run}{repeat}{zone}")


@click.command()
@database_options
@json_option
def stats(source: Source, as_json: bool) -> None:
    """Jobs per name and state (from the database, over every worker) and how many are due now.

    Each worker's own running and locked counts live in its memory: see `worker --metrics-port`.
    """

    async def work(agenda: Agenda) -> tuple[list[dict[str, Any]], int, list[str] | None]:
        overview = await agenda.jobs_overview()
        due = await agenda.store.queue_size(datetime.now(UTC))
        defined = sorted(agenda.definitions) if source.target else None
        known = {entry["name"] for entry in overview}
        for missing in sorted(set(defined or ()) - known):
            overview.append({"name": missing, **dict.fromkeys(out.OVERVIEW_COLUMNS, 0)})
        return overview, due, defined

    overview, due, defined = with_agenda(source, work)
    if as_json:
        out.print_json({"overview": overview, "queue_size": due, "defined": defined})
        return
    out.print_stats(overview, due, defined)


@click.command()
@database_options
@click.option("--all", "include_stopped", is_flag=True, help="Include workers that stopped (last day).")
@json_option
def workers(source: Source, include_stopped: bool, as_json: bool) -> None:
    """Worker processes registered in the database: live ones, and lost ones (no heartbeat for three
    periods) with the jobs whose locks they still hold.
    """

    async def work(agenda: Agenda) -> list[WorkerInfo]:
        return await agenda.workers(include_stopped=include_stopped)

    found = with_agenda(source, work)
    if as_json:
        out.print_json([worker.to_json() for worker in found])
        return
    out.print_workers(found, datetime.now(UTC))
