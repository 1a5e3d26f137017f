"""Helpers for tests: wait for events instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agendapy import Agenda


class EventLog:
    """Records every emission of some events of one Agenda, and lets a test wait for them."""

    def __init__(self, agenda: Agenda, *events: str) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()
        for event in events:
            agenda.on(event, self._recorder(event))

    def _recorder(self, event: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls.append((event, args))
            self._changed.set()

        return record

    def count(self, event: str) -> int:
        return sum(1 for name, _ in self.calls if name == event)

    def args(self, event: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == event]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def wait(self, event: str, count: int = 1, timeout: float = 15.0) -> list[tuple[Any, ...]]:
        """Wait until ``event`` was seen ``count`` times; fails the test on timeout."""

        async def until() -> None:
            while self.count(event) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {count} x {event!r}; saw {self.names()}"
            ) from None
        return self.args(event)


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> None:
    """Poll a (possibly async) predicate until it is truthy; fails the test on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
