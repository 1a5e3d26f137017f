"""Logging set-up for workers: rich text for people, JSON lines for log collectors.

Records carry the job they are about when they have ``job_id`` / ``job_name`` attributes: pass them in
``extra=``, log through :func:`job_logger`, or let :func:`bind_job_context` tag every record logged while
a run is in progress (the handler's own logging included).
"""

from __future__ import annotations

import json as _json
import logging
import sys
import traceback
import weakref
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._terminal import json_printable, printable

if TYPE_CHECKING:
    from rich.text import Text

    from .agenda import Agenda
    from .job import Job

__all__ = [
    "JobContextFilter",
    "JsonFormatter",
    "PrintableFilter",
    "bind_job_context",
    "configure_logging",
    "job_logger",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The run in progress in this task (set by bind_job_context's listeners): (job id, job name).
_current_job: ContextVar[tuple[str | None, str] | None] = ContextVar("agendapy_current_job", default=None)
_bound: weakref.WeakSet[Agenda] = weakref.WeakSet()

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JobContextFilter(logging.Filter):
    """Gives each record ``job_id`` and ``job_name`` from the run in progress, unless ``extra`` set them."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _current_job.get()
        if current is not None:
            if getattr(record, "job_id", None) is None:
                record.job_id = current[0]
            if getattr(record, "job_name", None) is None:
                record.job_name = current[1]
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then
    ``job_id`` / ``job_name`` when the record has them, other ``extra`` fields, and ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "job_name"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json_printable(_json.dumps(entry, default=str, ensure_ascii=False))


def configure_logging(level: str | int = "INFO", json: bool = False) -> logging.Handler:
    """Replace the root handlers with one on stderr: JSON lines when ``json``, else rich text.

    Returns the handler. Raises ``ValueError`` for an unknown level name.
    """
    if isinstance(level, str):
        name = level.upper()
        if name not in LEVELS:
            raise ValueError(f"invalid log level {level!r}: must be one of {', '.join(LEVELS)}")
        level = name
    handler: logging.Handler
    if json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(stderr=True, soft_wrap=True)
        handler = RichHandler(
            console=console, show_path=False, rich_tracebacks=True, log_time_format=_iso_local_time
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(PrintableFilter())
    handler.addFilter(JobContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler


class PrintableFilter(logging.Filter):
    """Escapes control characters in a record's message for a terminal: job names and failure reasons
    come from the database, and an escape sequence in one must not reach the terminal as such."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = printable(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _iso_local_time(when: datetime) -> Text:
    # ISO 8601 with the UTC offset: rich's default "[12/07/26 02:09:08]" reads as July or December.
    from rich.text import Text

    return Text(when.astimezone().isoformat(timespec="seconds"))


def job_logger(job: Job, logger: logging.Logger | str | None = None) -> logging.LoggerAdapter[Any]:
    """A logger whose records carry ``job_id`` and ``job_name`` (default logger: ``agendapy.jobs``)."""
    base = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger or "agendapy.jobs")
    return logging.LoggerAdapter(base, {"job_id": job.id, "job_name": job.name})


def bind_job_context(agenda: Agenda) -> None:
    """Tag every record logged during a run of ``agenda`` with that job (through JobContextFilter).

    A run is one asyncio task from ``start`` to ``complete``, and sync handlers' threads copy its
    context, so the tag reaches the handler's logging and nothing else. Calling it twice is harmless.
    """
    if agenda in _bound:
        return
    _bound.add(agenda)
    agenda.on("start", _enter_job)
    agenda.on("complete", _leave_job)


def _enter_job(job: Job) -> None:
    _current_job.set((job.id, job.name))


def _leave_job(job: Job) -> None:
    _current_job.set(None)
