"""configure_logging: JSON lines with job ids, rich text, levels; job_logger and bind_job_context."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from agendapy import Job
from agendapy.log_config import (
    JobContextFilter,
    JsonFormatter,
    bind_job_context,
    configure_logging,
    job_logger,
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_have_time_level_logger_message(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", json=True)
    logging.getLogger("app.billing").info("charged %s EUR", 12)
    logging.getLogger("app.billing").debug("not shown at INFO")
    (entry,) = lines(capsys.readouterr().err)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "app.billing"
    assert entry["message"] == "charged 12 EUR"
    assert datetime.fromisoformat(entry["time"]).utcoffset() is not None
    assert "job_id" not in entry and "job_name" not in entry


def test_job_id_and_name_from_extra(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", json=True)
    logging.getLogger("app").warning("slow", extra={"job_id": "abc", "job_name": "send email", "ms": 1200})
    (entry,) = lines(capsys.readouterr().err)
    assert entry["job_id"] == "abc"
    assert entry["job_name"] == "send email"
    assert entry["ms"] == 1200


def test_job_logger_adds_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    job = Job(name="report", id="65f0c0ffee0000000000abcd")
    job_logger(job).info("done")
    job_logger(job, "custom").info("also")
    first, second = lines(capsys.readouterr().err)
    assert (first["logger"], first["job_id"], first["job_name"]) == ("agendapy.jobs", job.id, "report")
    assert (second["logger"], second["job_id"]) == ("custom", job.id)


def test_exceptions_are_one_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    try:
        raise ValueError("bad row 7")
    except ValueError:
        logging.getLogger("app").exception("import failed")
    (entry,) = lines(capsys.readouterr().err)
    assert entry["message"] == "import failed"
    assert entry["exception"].startswith("Traceback")
    assert entry["exception"].endswith("ValueError: bad row 7")


def test_values_that_json_cannot_encode_are_strings(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    logging.getLogger("app").info("x", extra={"when": datetime(2026, 1, 2, 3, 4, 5)})
    (entry,) = lines(capsys.readouterr().err)
    assert entry["when"] == "2026-01-02 03:04:05"


def test_rich_text_mode(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING")
    logging.getLogger("app").warning("disk almost full")
    logging.getLogger("app").info("hidden")
    err = capsys.readouterr().err
    assert "disk almost full" in err
    assert "hidden" not in err
    assert not err.lstrip().startswith("{")


def test_rich_text_escapes_control_characters_from_job_names(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("agendapy").warning("%s (%s) failed: %s", "\x1b]0;PWNED\x07", "id1", "bad \x9b2J")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\x9b" not in err
    assert "\\x1b]0;PWNED\\x07 (id1) failed: bad \\x9b2J" in err


def test_json_lines_escape_control_characters_the_json_way(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    logging.getLogger("agendapy").warning("job %s", "\x1b[2J\x9b\u202e")
    err = capsys.readouterr().err
    assert not any(raw in err for raw in ("\x1b", "\x9b", "\u202e"))
    assert json.loads(err)["message"] == "job \x1b[2J\x9b\u202e"


def test_rich_text_times_are_iso_8601_with_the_utc_offset(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    logging.getLogger("app").warning("disk almost full")
    err = capsys.readouterr().err
    assert re.match(
        r"\s*\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}\s+WARNING\s+disk almost full", err
    ), err


def test_an_unknown_level_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid log level 'LOUD'"):
        configure_logging("LOUD")


class FakeAgenda:
    """Records listeners the way Agenda.on does."""

    def __init__(self) -> None:
        self.listeners: dict[str, list[Callable[..., Any]]] = {}

    def on(self, event: str, listener: Callable[..., Any]) -> None:
        self.listeners.setdefault(event, []).append(listener)

    def emit(self, event: str, *args: Any) -> None:
        for listener in self.listeners.get(event, []):
            listener(*args)


async def test_bind_job_context_tags_records_logged_during_a_run() -> None:
    agenda: Any = FakeAgenda()
    bind_job_context(agenda)
    bind_job_context(agenda)  # twice is harmless
    assert len(agenda.listeners["start"]) == 1
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(JobContextFilter())
    logger = logging.getLogger("test.bind")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    job = Job(name="nightly", id="65f0c0ffee0000000000abcd")

    async def run() -> None:  # one run is one task, as in the worker
        agenda.emit("start", job)
        logger.info("inside")
        await asyncio.to_thread(logger.info, "in a sync handler's thread")
        logger.info("explicit", extra={"job_id": "other"})
        agenda.emit("complete", job)
        logger.info("after")

    try:
        await asyncio.create_task(run())
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    tags = [(r.getMessage(), getattr(r, "job_id", None), getattr(r, "job_name", None)) for r in records]
    assert tags == [
        ("inside", job.id, "nightly"),
        ("in a sync handler's thread", job.id, "nightly"),
        ("explicit", "other", "nightly"),
        ("after", None, None),
        ("outside", None, None),
    ]


def test_the_formatter_alone() -> None:
    record = logging.makeLogRecord({"name": "x", "levelname": "ERROR", "msg": "m", "job_name": "n"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry == {"time": entry["time"], "level": "ERROR", "logger": "x", "message": "m", "job_name": "n"}
