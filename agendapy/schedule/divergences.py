"""Every deliberate difference between agendapy's next-run computation and Node Agenda 6.2.6's.

This list is the single source: docs/migrate/from-agenda.md shows one table line per entry (a unit test
checks that the table and this list name the same ids), and the differential test against Node
(tests/interop/test_next_run_oracle.py) accepts a difference only when it matches one of these ids.
Where agendapy's behaviour would only be different, not better, it follows Node instead and no entry
exists here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["DIVERGENCES", "Divergence"]


@dataclass(frozen=True)
class Divergence:
    """One deliberate difference: its id, an example, what Node does, what agendapy does and why."""

    id: str
    example: str
    node: str
    agendapy: str


DIVERGENCES: Final[tuple[Divergence, ...]] = (
    Divergence(
        "dst-repeated-time",
        '"15 2 * * *" in Europe/Berlin, last run 2026-10-25T01:00Z (02:00 CET, clocks just went back)',
        "runs again at 01:15Z, the repeated 02:15 (CET)",
        "runs once per wall-clock time; next run the following day (expressions that fire every hour "
        "run in both repeated hours)",
    ),
    Divergence(
        "dst-half-hour",
        '"0 2 * * *" in Australia/Lord_Howe, last run 2026-10-03T14:00Z (02:00 there is skipped on 4 Oct)',
        'skips that day (next run 2026-10-04T15:00Z), or fails the job: "Invalid expression, loop limit '
        'exceeded"',
        "shifts the skipped time by the 30-minute gap, as both do for 1-hour gaps: 2026-10-03T15:30Z",
    ),
    Divergence(
        "interval-under-1ms",
        '"an hour", "every 5 minutes" (human-interval reads 0), 0.4, -5000',
        "stores a next run at or before the last one and reruns the job in a tight loop",
        "fails the job: the interval must be at least 1 millisecond",
    ),
    Divergence(
        "repeat-at-timezone",
        'repeatAt "09:00" with repeatTimezone "Europe/Vienna"',
        "ignores repeatTimezone: 09:00 in the server's local time, even when the zone does not exist",
        "09:00 in repeatTimezone (UTC when there is none); an unknown zone fails the job",
    ),
    Divergence(
        "repeat-at-exact",
        'repeatAt "15:30" at 16:00:00.345, or "15:30:20"',
        "keeps the milliseconds of now (15:30:00.345), drops seconds, can return a time already past, "
        "and fails the job when now is exactly the time given",
        "15:30:00.000 (15:30:20 with seconds), always after now",
    ),
    Divergence(
        "repeat-at-format",
        'repeatAt "tomorrow", "in 5 minutes", "24:00", "5:61", "13pm", "9:30 p.m.", "9.3", "9:30am!"',
        "date.js reads dates and phrases, wraps out-of-range times (24:00 is 00:00, 5:61 is 06:01), "
        "reads 9:30 p.m. as 09:30 and ignores trailing text",
        'fails the job with Agenda\'s reason "failed to calculate repeatAt time due to invalid format"',
    ),
    Divergence(
        "skip-days-duplicates",
        "skipDays [1, 1, 1, 1, 1, 1, 1]",
        "seven entries count as every day: the job never runs again",
        "skips Mondays only (duplicates count once)",
    ),
    Divergence(
        "empty-timezone",
        'repeatTimezone ""',
        'fails the job (luxon has no zone called "")',
        "reads it as no timezone (UTC)",
    ),
    Divergence(
        "cron-hash",
        '"H 9 * * *"',
        "cron-parser picks a new random minute on every computation",
        "refuses the expression (the job fails with Agenda's interval reason)",
    ),
    Divergence(
        "local-time",
        'cron "0 9 * * *" or skipDays with no repeatTimezone',
        "the Node process's local time zone",
        "UTC, whatever the machine's zone (the interop tests pin Node to TZ=UTC)",
    ),
    Divergence(
        "alias-stored-as-cron",
        'every("@hourly", ...) from the Python API',
        'stores "@hourly", which human-interval reads as a 1-hour interval from the last run',
        'stores "0 * * * *" so Node and agendapy both run on the hour',
    ),
)
