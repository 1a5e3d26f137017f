"""Test helpers for code that uses agendapy: no database, handlers run on demand.

    from agendapy import Agenda
    from agendapy.testing import MemoryJobStore, eager, run_until_idle

    agenda = Agenda(MemoryJobStore())            # a real worker works on it too
    with eager(agenda):                          # due jobs run inline when saved
        await agenda.now("send email", {"to": "ada@example.com"})
    await run_until_idle(agenda)                 # or: run everything due, then return

See ``docs/testing.md``.
"""

from __future__ import annotations

from ._eager import EagerLoopError, EagerMode, EagerRuns, eager, run_until_idle
from ._memory import MemoryJobStore
from ._runs import MemoryRunStore

__all__ = [
    "EagerLoopError",
    "EagerMode",
    "EagerRuns",
    "MemoryJobStore",
    "MemoryRunStore",
    "eager",
    "run_until_idle",
]
