"""A small event emitter with Agenda's event names; listeners may be sync functions or coroutines."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["EVENTS", "EventEmitter", "Listener"]

log = logging.getLogger("agendapy")

#: Event names, as Node's Agenda spells them; each also exists as ``"<event>:<job name>"``.
EVENTS = frozenset(
    {
        "ready",
        "worker start",
        "error",
        "start",
        "success",
        "fail",
        "complete",
        "progress",
        "retry",
        "retry exhausted",
        "lock lost",
    }
)

Listener = Callable[..., Any] | Callable[..., Awaitable[Any]]
L = TypeVar("L", bound=Callable[..., Any])


class EventEmitter:
    """Registers listeners and calls them in registration order.

    Emission awaits coroutine listeners, so when :meth:`emit` returns every listener has finished: a ``fail``
    listener that reschedules the job is seen by the state save that follows, as in Agenda.
    A listener that raises is logged and reported on ``error``; it never breaks the run that emitted.
    The one exception is an emission with ``propagate=True`` (``worker start``), whose caller fails.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Callable[..., Any], bool]]] = {}
        self._taps: list[Callable[[str, tuple[Any, ...]], None]] = []

    def tap(self, observer: Callable[[str, tuple[Any, ...]], None]) -> None:
        """Add an internal observer of every job event (job logs, worker counters): called first,
        synchronously, with the base event name and its arguments; ``off`` does not remove it."""
        self._taps.append(observer)

    def untap(self, observer: Callable[[str, tuple[Any, ...]], None]) -> None:
        """Remove an observer added with :meth:`tap`."""
        self._taps = [tap for tap in self._taps if tap is not observer]

    def on(self, event: str, listener: L | None = None) -> Any:
        """Add a listener; without one, return a decorator that adds the function it decorates."""
        _check_event(event)
        if listener is None:

            def decorate(fn: L) -> L:
                self._add(event, fn, once=False)
                return fn

            return decorate
        self._add(event, listener, once=False)
        return listener

    def once(self, event: str, listener: L) -> L:
        """Add a listener that is removed after its first call."""
        _check_event(event)
        self._add(event, listener, once=True)
        return listener

    def off(self, event: str, listener: Callable[..., Any] | None = None) -> None:
        """Remove one listener, or every listener of the event."""
        if listener is None:
            self._listeners.pop(event, None)
            return
        entries = self._listeners.get(event, [])
        self._listeners[event] = [entry for entry in entries if entry[0] is not listener]

    def listener_count(self, event: str) -> int:
        """How many listeners an event has."""
        return len(self._listeners.get(event, []))

    def _add(self, event: str, listener: Callable[..., Any], *, once: bool) -> None:
        if not callable(listener):
            raise TypeError(f"listener for {event!r} must be callable, got {listener!r}")
        self._listeners.setdefault(event, []).append((listener, once))

    async def emit(self, event: str, *args: Any, propagate: bool = False) -> None:
        """Call the listeners of ``event``; awaits coroutine listeners.

        ``propagate``: a listener that raises stops the emission and its exception reaches the caller,
        unlogged and not reported on ``error`` (for hooks whose failure must fail what emitted them,
        such as ``worker start``: a worker whose set-up failed must not run on half set up).
        """
        entries = self._listeners.get(event)
        if not entries:
            return
        if any(once for _, once in entries):
            self._listeners[event] = [entry for entry in entries if not entry[1]]
        for listener, _ in list(entries):
            try:
                result = listener(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if propagate:
                    raise
                if event == "error":
                    log.exception("an 'error' listener raised")
                    continue
                log.exception("listener for %r raised", event)
                await self.emit("error", exc)

    async def emit_job_event(self, event: str, job_name: str, *args: Any, remote: bool = False) -> None:
        """Emit ``event`` and then ``event:<job name>``, with the same arguments.

        ``remote``: the run happened in another process (fleet events). Listeners hear it; the internal
        observers do not, since they log and count this process's own runs.
        """
        for observer in () if remote else self._taps:
            try:
                observer(event, args)
            except Exception:
                log.exception("observer of %r raised", event)
        await self.emit(event, *args)
        await self.emit(f"{event}:{job_name}", *args)


def _check_event(event: str) -> None:
    if not isinstance(event, str) or not event:
        raise ValueError(f"invalid event {event!r}: must be a non-empty string")
    base = event.split(":", 1)[0]
    if base not in EVENTS:
        known = ", ".join(sorted(EVENTS))
        raise ValueError(f"invalid event {event!r}: unknown event {base!r} (known: {known})")
