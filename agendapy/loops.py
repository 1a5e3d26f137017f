"""One way to run a worker's background loops: a round, what follows it, and what to do when it fails.

Every loop of a worker (claiming, lock renewal, wake-ups) is a :class:`Loop` started by
:func:`supervise`, which runs its rounds until the stop event is set (or the task is cancelled).
Nothing a round raises ends the loop: the loop reports it and goes on, after the pause it asks for, so
one failed database call never leaves a worker without claiming or without heartbeats. A round ends
its loop on purpose by raising :class:`StopLoop`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["Loop", "StopLoop", "supervise"]

log = logging.getLogger("agendapy")


class StopLoop(Exception):
    """Raised by a round to end its loop for good (e.g. wake-ups the store cannot give)."""


async def _no_pause(failures: int) -> None:
    return None


async def _log_error(error: Exception, failures: int) -> None:
    log.warning("background loop failed (%s); retrying", error)


@dataclass(frozen=True)
class Loop:
    """A background loop: ``round`` runs again and again; ``then`` follows every round, whatever
    its outcome, and is given how many rounds in a row have failed (0 after a success), so it can
    wait for the next round and back off; ``on_error`` hears each failure with that count (after
    it is increased), ``on_recovery`` the first success after failures."""

    name: str
    round: Callable[[], Awaitable[None]]
    then: Callable[[int], Awaitable[None]] = _no_pause
    on_error: Callable[[Exception, int], Awaitable[None]] = _log_error
    on_recovery: Callable[[], None] | None = None


async def supervise(loop: Loop, stop: asyncio.Event) -> None:
    """Run ``loop``'s rounds until ``stop`` is set, a round raises :class:`StopLoop` or the task is
    cancelled; a failure is reported (never raised) and the loop goes on."""
    failures = 0
    while not stop.is_set():
        try:
            await loop.round()
        except StopLoop:
            return
        except Exception as exc:  # CancelledError is not an Exception: a cancel ends the loop
            failures += 1
            try:
                await loop.on_error(exc, failures)
            except Exception:
                log.exception("%s: reporting a failure failed", loop.name)
        else:
            if failures and loop.on_recovery is not None:
                loop.on_recovery()
            failures = 0
        if stop.is_set():
            return
        await loop.then(failures)
