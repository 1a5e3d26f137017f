"""The exceptions agendapy raises.

Every error caused by bad input is a :class:`ValueError` (through :class:`InvalidInput`) that names the
field and the value, so ``except ValueError`` catches them all and the message says what to fix.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgendaError",
    "ChildProcessDied",
    "DatabaseUnavailable",
    "ForkedJobError",
    "Interrupted",
    "InvalidData",
    "InvalidDate",
    "InvalidInput",
    "InvalidInterval",
    "InvalidJobName",
    "InvalidPriority",
    "InvalidTimezone",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "LockLost",
    "NotRunning",
    "RemoteFailure",
    "UnknownJob",
    "UnsafeQuery",
    "WorkerStartFailed",
]


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except (RecursionError, Exception):  # a value too deep or too odd to print must not hide the error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


class AgendaError(Exception):
    """Base class of every error agendapy raises on purpose."""


class InvalidInput(AgendaError, ValueError):
    """An argument was rejected; nothing was written.

    Attributes:
        field: the name of the argument or document field that was rejected.
        value: the value that was given.
        reason: why it was rejected.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {_show(value)}: {reason}")


class InvalidInterval(InvalidInput):
    """A repeat interval, duration or cron expression could not be read."""


class InvalidDate(InvalidInput):
    """A date or date string could not be read."""


class InvalidTimezone(InvalidInput):
    """A timezone is not a known IANA name."""


class InvalidPriority(InvalidInput):
    """A priority is neither an int nor one of lowest/low/normal/high/highest."""


class InvalidJobName(InvalidInput):
    """A job name is empty, not a string, or otherwise unusable."""


class InvalidData(InvalidInput):
    """Job data (or another document value) cannot be stored as BSON."""


class UnsafeQuery(InvalidInput):
    """A filter uses an operator that would execute code on the server ($where, $function, ...)."""


class UnknownJob(AgendaError, LookupError):
    """A job name has no definition in this process."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown job name {name!r}: no definition with this name (call agenda.define first)"
        )


class JobNotFound(AgendaError, LookupError):
    """The job document no longer exists (it was removed while in use)."""


class NotRunning(AgendaError, RuntimeError):
    """An operation needs a started Agenda (``await agenda.start()``)."""


class LockLost(AgendaError):
    """This worker no longer holds the lock of the job it runs; its state writes are refused."""


class Interrupted(AgendaError):
    """Raise from a handler to stop now without failing: the job is unlocked, made due at once, and
    keeps its checkpoint, so another worker resumes it (use it when ``job.stop_requested`` is set)."""


class JobTimeout(AgendaError, TimeoutError):
    """A run exceeded its definition's ``timeout``."""


class DatabaseUnavailable(AgendaError, ConnectionError):
    """The database could not be reached in time."""


class WorkerStartFailed(AgendaError):
    """A ``worker start`` listener raised: ``start()`` / ``run_due()`` claimed and ran nothing.

    ``error`` is the listener's exception (also the ``__cause__``). A worker whose start-up code failed
    stops here rather than running with none of the schedules that code was to create.
    """

    def __init__(self, error: BaseException) -> None:
        first = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {first[0]}" if first else type(error).__name__
        super().__init__(f"a 'worker start' listener raised {detail}")
        self.error = error


class ChildProcessDied(AgendaError):
    """A forked run's child process ended without reporting a result (it exited, crashed or was killed).

    ``exitcode`` is the child's exit code, or minus the signal number that ended it (as
    ``multiprocessing`` reports it).
    """

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


class ForkedJobError(AgendaError):
    """A forked handler raised in its child process: the message is the child's error message.

    ``type_name`` names the exception class raised in the child and ``child_traceback`` is its
    formatted traceback (exceptions never cross the process boundary as objects).
    """

    def __init__(self, message: str, type_name: str, child_traceback: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.child_traceback = child_traceback


class JobFailed(AgendaError):
    """``agenda.wait_for(job)``: the run failed; ``reason`` is its ``failReason``, ``job`` the job."""

    def __init__(self, job: Any, reason: str | None) -> None:
        super().__init__(f"job {job.name!r} ({job.id}) failed: {reason}")
        self.job = job
        self.reason = reason


class RemoteFailure(AgendaError):
    """The error of a ``fail`` event of a run in another process (fleet events): its text is the
    run's stored ``failReason`` (the original exception stays in the process that ran the job)."""
