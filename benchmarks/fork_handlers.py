"""Handlers for ``benchmarks/fork_overhead.py``: a module of their own, so a child process imports them."""

from __future__ import annotations

from agendapy import Job

#: What the leaking handler keeps: it only ever grows (in whichever process runs the handler).
KEPT: list[bytes] = []

LEAK_BYTES = 5_000_000


def noop(job: Job) -> None:
    """Does nothing: a run's cost is the cost of running it."""


def leak(job: Job) -> None:
    """Keeps 5 MB for ever."""
    KEPT.append(b"x" * LEAK_BYTES)
