"""Calling a job's handler: coroutines on the loop, plain functions in a worker thread, forked ones in
a child process; the definition's timeout is enforced for each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .errors import JobTimeout
from .fork import run_forked, uses_fork

if TYPE_CHECKING:
    from .definition import JobDefinition
    from .job import Job
    from .worker_context import WorkerContext

__all__ = ["handler_threads_running", "invoke_handler"]


def _format_seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g} s"


_threads_lock = threading.Lock()
_threads_running = 0


def handler_threads_running() -> int:
    """How many plain-function handlers are still executing in worker threads."""
    return _threads_running


def _in_thread(fn: Callable[[Job], Any], job: Job) -> Any:
    global _threads_running
    with _threads_lock:
        _threads_running += 1
    try:
        return fn(job)
    finally:
        with _threads_lock:
            _threads_running -= 1


async def invoke_handler(ctx: WorkerContext, definition: JobDefinition, job: Job) -> None:
    """Call the handler: coroutines on the loop, plain functions in a worker thread, forked ones in a
    child process; enforce the timeout."""
    if uses_fork(definition, job):
        await run_forked(ctx, definition, job)
        return
    timeout = definition.timeout
    if definition.is_async:
        if timeout is None:
            await definition.fn(job)
            return
        try:
            async with asyncio.timeout(timeout.total_seconds()):
                await definition.fn(job)
        except TimeoutError:
            raise JobTimeout(f"timed out after {_format_seconds(timeout)}") from None
        return
    call = asyncio.to_thread(_in_thread, definition.fn, job)
    if timeout is None:
        await call
        return
    try:
        await asyncio.wait_for(call, timeout.total_seconds())
    except TimeoutError:
        # The thread cannot be killed: it is asked to stop and the run fails now all the same.
        if job.lease is not None:
            job.lease.stop_event.set()
        raise JobTimeout(f"timed out after {_format_seconds(timeout)}") from None
