"""Schedule maths: pure functions, no database, on aware UTC datetimes in whole milliseconds.

One module per concern (read them in this order to follow a recurring job from ``every()`` to its
next run):

* :mod:`~agendapy.schedule.text`: input bounds, and strings read as JavaScript reads them;
* :mod:`~agendapy.schedule.human_interval`: a string read as Node's human-interval reads it;
* :mod:`~agendapy.schedule.durations`: durations given to the Python API ("3 minutes", "PT15M", 30);
* :mod:`~agendapy.schedule.cron`: cron expressions read as Node's cron-parser reads them;
* :mod:`~agendapy.schedule.repeat`: repeat specs (:class:`RepeatSpec`): what ``every()`` is given and
  what a stored ``repeatInterval`` means;
* :mod:`~agendapy.schedule.timezones`: instants, IANA zones, wall-clock times;
* :mod:`~agendapy.schedule.cron_times`: when a cron expression fires in a timezone;
* :mod:`~agendapy.schedule.dates`: when to run ("tomorrow at noon", "in 20 minutes");
* :mod:`~agendapy.schedule.repeat_at`: ``repeatAt`` times of day;
* :mod:`~agendapy.schedule.next_run`: Agenda's ``computeNextRunAt`` and the date constraints;
* :mod:`~agendapy.schedule.ticks`: the ticks of a schedule and the run intervals (:class:`RunInterval`,
  a period of time) between them;
* :mod:`~agendapy.schedule.planning`: before a run, which interval it handles and what comes next
  (misfires, fixed delay);
* :mod:`~agendapy.schedule.divergences`: every deliberate difference from Node's next-run computation.

The names below are re-exported so that callers write ``schedule.utcnow()``.
"""

from __future__ import annotations

from .cron import is_cron
from .cron_times import next_cron, previous_cron
from .dates import parse_when
from .durations import to_timedelta
from .next_run import apply_date_constraints, compute_next_run_at, parse_skip_days
from .planning import RunPlan, fixed_delay_next_run, plan_run
from .repeat import RepeatSpec, interval_from_document, parse_interval
from .repeat_at import REPEAT_AT_FAILURE, next_repeat_at
from .ticks import RunInterval, interval_ending_at_or_before, tick_after, tick_at_or_before
from .timezones import parse_timezone, to_utc, utcnow

__all__ = [
    "REPEAT_AT_FAILURE",
    "RepeatSpec",
    "RunInterval",
    "RunPlan",
    "apply_date_constraints",
    "compute_next_run_at",
    "fixed_delay_next_run",
    "interval_ending_at_or_before",
    "interval_from_document",
    "is_cron",
    "next_cron",
    "next_repeat_at",
    "parse_interval",
    "parse_skip_days",
    "parse_timezone",
    "parse_when",
    "plan_run",
    "previous_cron",
    "tick_after",
    "tick_at_or_before",
    "to_timedelta",
    "to_utc",
    "utcnow",
]
