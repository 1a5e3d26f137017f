"""The MongoDB store's change streams: wake-ups for workers, run changes for fleet events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from .base import WakeUpsUnavailable
from .common import wake_up
from .queries import RUN_CHANGES_PIPELINE, WAKE_UP_PIPELINE

__all__ = ["EMPTY_BATCHES_FREE", "EMPTY_BATCH_PAUSE", "STREAM_AWAIT_S", "due_changes", "run_changes"]

#: How long a change stream's getMore waits for a change (seconds).
STREAM_AWAIT_S = 1.0
#: After this many change-stream getMores in a row came back early and empty (a worker's own few
#: writes for one run make up to three), each next one waits EMPTY_BATCH_PAUSE first: while other
#: workers write, a wake-up arrives up to that much later, and no worker sends more than ~40 such
#: getMores a second. A change, or a getMore that waited its full time, ends the run.
EMPTY_BATCHES_FREE = 4
EMPTY_BATCH_PAUSE = 0.025
# Server answers meaning "no change streams here" (a standalone mongod: 40573; unsupported: 115, 136).
_NO_CHANGE_STREAMS = frozenset({40573, 136, 115})


async def _watch(
    collection: AsyncCollection[dict[str, Any]], pipeline: list[dict[str, Any]], await_s: float
) -> Any:
    """Open a change stream (with each changed document looked up); WakeUpsUnavailable without them."""
    try:
        return await collection.watch(
            pipeline, full_document="updateLookup", max_await_time_ms=int(await_s * 1000)
        )
    except OperationFailure as exc:
        if exc.code in _NO_CHANGE_STREAMS:
            raise WakeUpsUnavailable(f"the server has no change streams: {exc}") from None
        raise


async def due_changes(
    collection: AsyncCollection[dict[str, Any]],
) -> AsyncIterator[tuple[str, datetime | None]]:
    """``(name, nextRunAt)`` of the jobs ``WAKE_UP_PIPELINE`` admits, as they change."""
    stream_cm = await _watch(collection, WAKE_UP_PIPELINE, STREAM_AWAIT_S)
    loop = asyncio.get_running_loop()
    early_empty = 0
    async with stream_cm as stream:
        while stream.alive:
            asked = loop.time()
            change = await stream.try_next()
            if change is None:
                # An empty batch before the await time is up: the server woke the stream for
                # writes the pipeline dropped (claims, starts, finishes). Without a pause, every
                # write of the fleet would cost every worker a round trip.
                early_empty = early_empty + 1 if loop.time() - asked < STREAM_AWAIT_S / 2 else 0
                if early_empty >= EMPTY_BATCHES_FREE:
                    await asyncio.sleep(EMPTY_BATCH_PAUSE)
                continue
            early_empty = 0
            due = wake_up(change.get("fullDocument"))
            if due is not None:
                yield due


async def run_changes(collection: AsyncCollection[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Open a stream of the changes ``RUN_CHANGES_PIPELINE`` admits; its events, as they come."""
    return _changes_of(await _watch(collection, RUN_CHANGES_PIPELINE, 1.0))


async def _changes_of(stream: Any) -> AsyncIterator[dict[str, Any]]:
    async with stream as opened:
        async for change in opened:
            yield change
