"""Run-due mode: run every job due now under a worker's locks, wait for them, report each outcome.

For crontab, Kubernetes CronJobs and serverless functions (``Agenda.run_due``) and for tests
(``agendapy.testing.run_until_idle``). It drives a :class:`Worker` with no claiming loop: it claims
in rounds of its own, all jobs due by a cutoff at once (no look-ahead), only of the names asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from . import schedule as sched
from .claiming import ClaimScope
from .errors import UnknownJob
from .results import RunDueResult
from .run import RunOutcome
from .validate import check_name_list
from .worker import Worker

if TYPE_CHECKING:
    from .worker_context import WorkerContext

__all__ = ["RunDue", "due_names"]


def due_names(definitions: Mapping[str, object], names: str | Sequence[str] | None) -> list[str]:
    """The names to run: ``names`` (each must be defined), or every defined name."""
    if names is None:
        return list(definitions)
    wanted = check_name_list(names)
    for name in wanted:
        if name not in definitions:
            raise UnknownJob(name)
    return wanted


class RunDue:
    """One run-due pass over ``names``; ``worker`` is exposed so a caller can stop it early."""

    def __init__(self, context: WorkerContext, names: Sequence[str]) -> None:
        self._ctx = context
        self._names = frozenset(names)
        self._outcomes: list[RunOutcome] = []
        self.worker = Worker(context, on_outcome=self._outcomes.append)

    async def run(self, cutoff: datetime) -> list[RunOutcome]:
        """Claim and run every job due by ``cutoff``, wait for all of them, and return their outcomes.

        Jobs that waited for their ``requires`` get another round while the previous round made
        progress (a required job may just have run).
        """
        worker = self.worker
        names = self._names
        worker.start_renewal()
        try:
            while True:
                worker.claimer.scope = ClaimScope(names=names, until=cutoff)
                before = len(self._outcomes)
                while await worker.claim_round():
                    await worker.woken()
                round_outcomes = self._outcomes[before:]
                waiting = {o.job.name for o in round_outcomes if o.status == "waiting"}
                progressed = any(o.status == "succeeded" for o in round_outcomes)
                if not waiting or not progressed:
                    break
                names = frozenset(waiting)
                cutoff = sched.utcnow() + self._ctx.dependency_check_every
        finally:
            await worker.stop_filling()
            await worker.stop_renewal()
        return self._latest_outcomes()

    def _latest_outcomes(self) -> list[RunOutcome]:
        """One outcome per job: its last (a job that waited and then ran reports the run)."""
        latest: dict[str, RunOutcome] = {}
        for outcome in self._outcomes:
            latest[outcome.job.id or str(id(outcome.job))] = outcome
        return list(latest.values())


def run_due_result(outcomes: Sequence[RunOutcome]) -> RunDueResult:
    """The ``RunDueResult`` of a run-due pass's outcomes (``Agenda.run_due``, ``run_until_idle``)."""
    return RunDueResult(
        succeeded=[o.job for o in outcomes if o.status == "succeeded"],
        failed=[(o.job, o.error) for o in outcomes if o.status == "failed"],
        skipped=[o.job for o in outcomes if o.status == "skipped"],
        waiting=[o.job for o in outcomes if o.status == "waiting"],
        skip_reasons={
            o.job.id: o.reason
            for o in outcomes
            if o.status == "skipped" and o.job.id is not None and o.reason
        },
    )
