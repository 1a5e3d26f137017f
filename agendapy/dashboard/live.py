"""Live updates: one poller per dashboard shares the job overview with every open page (Server-Sent Events).

The database is read once per interval however many pages listen, and only while at least one does.
An event goes out when the overview changed, and on every poll while jobs run (so progress shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .views import dumps, iso, overview

if TYPE_CHECKING:
    from ..agenda import Agenda

__all__ = ["LiveFeed", "event_stream"]

log = logging.getLogger("agendapy.dashboard")

Event = dict[str, Any]
_CLOSED: Event = {"closed": True}


class LiveFeed:
    """Polls ``jobs_overview()`` every ``interval`` seconds while anyone listens, and fans it out."""

    def __init__(self, agenda: Agenda, interval: float) -> None:
        self._agenda = agenda
        self.interval = interval
        self._listeners: set[asyncio.Queue[Event]] = set()
        self._task: asyncio.Task[None] | None = None
        self._latest: Event | None = None
        self._version = 0
        self._closed = False

    @property
    def listeners(self) -> int:
        """How many streams are open."""
        return len(self._listeners)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Event]]:
        """A queue that receives each new snapshot (only the newest is kept when a reader lags)."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1)
        if self._closed:
            queue.put_nowait(_CLOSED)
        elif self._latest is not None:
            queue.put_nowait(self._latest)
        self._listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="agendapy-dashboard-live")
        try:
            yield queue
        finally:
            self._listeners.discard(queue)
            if not self._listeners and self._task is not None:
                self._task.cancel()
                self._task = None

    def close(self) -> None:
        """End every open stream (a server shutting down must not wait for them)."""
        self._closed = True
        for queue in list(self._listeners):
            _offer(queue, _CLOSED)

    async def _poll(self) -> None:
        last_key: str | None = None
        while self._listeners and not self._closed:
            try:
                snapshot = await overview(self._agenda)
            except Exception as exc:  # the database may be away for a while: keep the streams open
                log.warning("dashboard live updates: cannot read the overview: %s", exc)
            else:
                key = json.dumps(snapshot, sort_keys=True)
                active = snapshot["totals"]["running"] + snapshot["totals"]["waiting"]
                if key != last_key or active:
                    last_key = key
                    self._version += 1
                    self._latest = {
                        "version": self._version,
                        "at": iso(datetime.now(UTC)),
                        "overview": snapshot,
                    }
                    for queue in list(self._listeners):
                        _offer(queue, self._latest)
            await asyncio.sleep(self.interval)


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    """Put ``event``, dropping an unread older one: a slow reader only ever needs the newest."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(event)


async def event_stream(feed: LiveFeed, *, heartbeat: float = 15.0) -> AsyncIterator[str]:
    """The text/event-stream body: ``overview`` events, and a ``ping`` when nothing happened for a while
    (so the page can tell a silent stream from a dead one and fall back to polling)."""
    yield f"retry: {int(max(feed.interval, 1.0) * 1000)}\n\n"
    async with feed.listen() as queue:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                yield "event: ping\ndata: {}\n\n"
                continue
            if event is _CLOSED:
                return
            # json.dumps escapes newlines, so the payload is always one data line.
            yield f"id: {event['version']}\nevent: overview\ndata: {dumps(event)}\n\n"
