"""agendapy: persistent job scheduling for Python on MongoDB, document-compatible with Node's Agenda 6.

from agendapy import Agenda, Job, backoff
"""

from __future__ import annotations

from . import backoff
from .agenda import Agenda, JobsResult, RunDueResult, RunningStats
from .errors import (
    AgendaError,
    ChildProcessDied,
    DatabaseUnavailable,
    ForkedJobError,
    Interrupted,
    InvalidData,
    InvalidDate,
    InvalidInput,
    InvalidInterval,
    InvalidJobName,
    InvalidPriority,
    InvalidTimezone,
    JobFailed,
    JobNotFound,
    JobTimeout,
    LockLost,
    NotRunning,
    RemoteFailure,
    UnknownJob,
    UnsafeQuery,
    WorkerStartFailed,
)
from .filters import JobFilter
from .job import Job, JobState
from .joblogs import JobLogEntry, JobLogsResult
from .options import DefineOptions
from .run import RetryDetails
from .store.runs import RunRecord
from .worker import DrainResult
from .workers import WorkerInfo

__all__ = [
    "Agenda",
    "AgendaError",
    "ChildProcessDied",
    "DatabaseUnavailable",
    "DefineOptions",
    "DrainResult",
    "ForkedJobError",
    "Interrupted",
    "InvalidData",
    "InvalidDate",
    "InvalidInput",
    "InvalidInterval",
    "InvalidJobName",
    "InvalidPriority",
    "InvalidTimezone",
    "Job",
    "JobFailed",
    "JobFilter",
    "JobLogEntry",
    "JobLogsResult",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "JobsResult",
    "LockLost",
    "NotRunning",
    "RemoteFailure",
    "RetryDetails",
    "RunDueResult",
    "RunRecord",
    "RunningStats",
    "UnknownJob",
    "UnsafeQuery",
    "WorkerInfo",
    "WorkerStartFailed",
    "backoff",
]
