"""Wake-ups: claim at once when a job of ours becomes due (change streams); polling stays the fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import schedule as sched
from .loops import Loop, StopLoop
from .store.base import WakeUpsUnavailable

if TYPE_CHECKING:
    from .worker_context import WorkerContext

__all__ = ["WakeUps"]

log = logging.getLogger("agendapy")

_STREAM_PACE = 0.025
_STREAM_BURST = 0.01
_MAX_PAUSE = 30.0
#: After a stream closed for a backlog is opened again, one more claim pass this much later: a job
#: that became due between the claim that ended the backlog and the stream's opening is seen by it.
_REOPEN_RECHECK = 0.5


class WakeUps:
    """Listens to the store's due changes and calls ``wake`` for a defined job due within a poll.

    ``busy()`` says the worker has no free slot: changes are then read in batches, not one by one.
    """

    def __init__(self, context: WorkerContext, wake: Callable[[], None], busy: Callable[[], bool]) -> None:
        self._ctx = context
        self._wake = wake
        self._busy = busy
        self._pause = 1.0
        # Set while the stream may be open; cleared (and ``_quiet`` set) while the worker has a backlog.
        self._listen = asyncio.Event()
        self._listen.set()
        self._quiet = asyncio.Event()
        self._closed_for_backlog = False

    def loop(self) -> Loop:
        return Loop("wake-ups", self._round, then=self._reopen_pause, on_error=self._failed)

    def backlog(self, behind: bool) -> None:
        """The worker's last claim came back full (``behind``: more is due than it had room for) or not.

        While it is behind, the worker claims again on its own as its runs end, so wake-ups tell it
        nothing it will not find anyway, and the stream is closed: an open change stream makes the
        server look at every change to the collection for it (measured on SecantusDB: about 0.25 ms
        of server CPU per changed document per open stream, the claims', starts' and finishes' of the
        whole fleet). It opens again when a claim comes back with room to spare.
        """
        if behind:
            self._listen.clear()
            self._quiet.set()
        else:
            self._quiet.clear()
            self._listen.set()

    async def _round(self) -> None:
        await self._listen.wait()
        if self._closed_for_backlog:
            # The claim that ended the backlog saw every job due until it searched; the stream sees
            # the changes from its opening on. One more pass shortly after covers the moment between.
            self._closed_for_backlog = False
            asyncio.get_running_loop().call_later(_REOPEN_RECHECK, self._wake)
        listening = asyncio.ensure_future(self._listen_changes())
        quiet = asyncio.ensure_future(self._quiet.wait())
        try:
            await asyncio.wait([listening, quiet], return_when=asyncio.FIRST_COMPLETED)
        finally:
            quiet.cancel()
            if not listening.done():
                listening.cancel()
                await asyncio.gather(listening, return_exceptions=True)
                self._closed_for_backlog = True
        if not listening.cancelled():
            listening.result()

    async def _listen_changes(self) -> None:
        ctx = self._ctx
        loop = asyncio.get_running_loop()
        last = 0.0
        try:
            async for name, next_run_at in ctx.store.due_changes():
                self._pause = 1.0
                if (
                    next_run_at is not None
                    and name in ctx.definitions
                    and next_run_at <= sched.utcnow() + ctx.process_every
                ):
                    self._wake()
                # A change on a quiet collection wakes at once. When changes come in a burst, or
                # the worker has no free slot to fill anyway, pausing before reading on lets them
                # arrive in one batch instead of one round trip each.
                now = loop.time()
                burst, last = now - last < _STREAM_BURST, now
                if burst or self._busy():
                    await asyncio.sleep(_STREAM_PACE)
        except WakeUpsUnavailable as exc:
            every = ctx.process_every.total_seconds()
            log.info("no instant wake-ups (%s); polling every %g s", exc, every)
            raise StopLoop from exc

    async def _failed(self, error: Exception, failures: int) -> None:
        log.warning("change stream failed (%s); polling until it is back", error)

    async def _reopen_pause(self, failures: int) -> None:
        if self._closed_for_backlog and not failures:
            return  # closed on purpose: the next round waits until the backlog is over
        # The stream ended or failed: reopen it after a pause that grows while it keeps failing.
        await asyncio.sleep(self._pause)
        self._pause = min(self._pause * 2, _MAX_PAUSE)
