"""Jobs in a child process: ``define(name, fn, fork=True)``, ``job.fork_mode(True)`` or ``fork: true``.

The parent (the worker) starts one child process per run with ``multiprocessing`` (``forkserver`` where
the platform has it, else ``spawn``: never a bare ``fork`` of a process running an event loop and
database connections). The child imports the handler by its module path, builds the job from its
document, and runs it. Parent and child talk over a pipe in BSON documents only, so neither handlers
nor data are pickled:

=========================  ======================================================================
parent -> child            ``run`` (the job document), ``ack`` (answer to touch/checkpoint), ``stop``
child -> parent            ``touch`` (progress), ``checkpoint`` (state), ``done`` (result or error)
=========================  ======================================================================

The parent keeps the lock alive (the worker's heartbeat renews it as for any run), writes progress and
checkpoints with its fenced writes, and owns the child's lifetime: a timeout, or a stop past its
grace, sends SIGTERM and then SIGKILL, so a handler stuck in C code never outlives its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

import bson
from bson.codec_options import CodecOptions

from .errors import ChildProcessDied, ForkedJobError, Interrupted, InvalidInput, JobTimeout, LockLost
from .job import Job, JobOwner, Lease, set_lease

if TYPE_CHECKING:
    from multiprocessing.context import SpawnContext, SpawnProcess

    from .definition import JobDefinition
    from .worker_context import WorkerContext

__all__ = ["DEFAULT_METHOD", "ForkMethod", "check_importable", "run_forked", "uses_fork"]

log = logging.getLogger("agendapy")

ForkMethod = Literal["forkserver", "spawn"]

#: ``forkserver`` starts a child by forking a small, clean server process (cheap); ``spawn`` starts a
#: fresh interpreter (portable, slower).
DEFAULT_METHOD: ForkMethod = (
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)

#: How long a child has to exit after SIGTERM before it gets SIGKILL.
KILL_AFTER = 2.0

_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


def uses_fork(definition: JobDefinition | None, job: Job) -> bool:
    """Whether this run goes to a child process (the definition or the document asks for it)."""
    return job.fork or (definition is not None and definition.fork)


def check_importable(fn: Any, *, field: str = "fn") -> tuple[str, str]:
    """The (module, qualified name) a child process imports ``fn`` by; refuses what it cannot import.

    Only the shape is checked here (``define`` runs while its module is still being imported); the
    child reports a handler it cannot find as the run's failure.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if inspect.ismethod(fn) or not isinstance(module, str) or not isinstance(qualname, str):
        raise InvalidInput(
            field, fn, "a forked handler must be a module-level function (a child process imports it by name)"
        )
    if module == "__main__":
        raise InvalidInput(
            field,
            fn,
            "a forked handler defined in __main__ cannot be imported by a child process; move it into "
            "a module and run the worker with `agendapy worker module:agenda`",
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidInput(
            field,
            fn,
            "a forked handler must be a module-level function, not a lambda or a nested function "
            "(a child process imports it by name)",
        )
    return module, qualname


def describe_exit(exitcode: int | None) -> str:
    """A child's end in words: Agenda's "child process exited with code: N", or the signal's name."""
    if exitcode is None:
        return "child process did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"child process killed by {name}"
    return f"child process exited with code: {exitcode}"


def _encode(message: dict[str, Any]) -> bytes:
    return bson.encode(message)


def _decode(raw: bytes) -> dict[str, Any]:
    return bson.decode(raw, codec_options=_CODEC)


# -- parent -----------------------------------------------------------------------------------------


async def run_forked(ctx: WorkerContext, definition: JobDefinition, job: Job) -> None:
    """Run ``job`` in a child process; returns on success, raises the run's failure otherwise."""
    from .store.schema import document_from_job

    module, qualname = check_importable(definition.fn)
    document = document_from_job(job)
    document["_id"] = job.id
    context = cast("SpawnContext", multiprocessing.get_context(ctx.fork_method))
    if ctx.fork_method == "forkserver":
        # Imported once in the fork server, not in every child; naming a module also makes the server
        # take this process's sys.path, so the child imports handlers from where the worker does.
        cast("Any", context).set_forkserver_preload(["agendapy.fork"])
    parent_end, child_end = context.Pipe(duplex=True)
    process = context.Process(
        target=child_main, args=(child_end, module, qualname), name=f"agendapy: {job.name}"
    )
    try:
        # Starting may start the fork server first (once per worker): keep the event loop free.
        await asyncio.to_thread(process.start)
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    child = _Child(ctx.owner, job, process, parent_end)
    try:
        await child.run(document, definition.timeout)
    finally:
        await child.close()


class _Child:
    """The parent's side of one forked run."""

    def __init__(self, owner: JobOwner, job: Job, process: SpawnProcess, conn: Connection) -> None:
        self._owner = owner
        self._job = job
        self._process = process
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._send_lock = threading.Lock()
        # A blocking reader thread per run: it ends when the child's end of the pipe closes.
        self._reader = threading.Thread(target=self._read, name=f"agendapy: pipe of {job.name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                raw = self._conn.recv_bytes()
                message: dict[str, Any] | None = _decode(raw)
            except (EOFError, OSError):
                message = None
            except Exception as exc:  # a malformed message: the child is not ours to trust further
                log.warning("unreadable message from the child of %s: %s", self._job.name, exc)
                message = None
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            if message is None:
                return

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            self._conn.send_bytes(_encode(message))  # a child that is gone cannot be told anything

    async def run(self, document: dict[str, Any], timeout: timedelta | None) -> None:
        with self._send_lock:  # unlike later messages, a run the child never got must fail loudly
            self._conn.send_bytes(_encode({"op": "run", "job": document}))
        lease = self._job.lease
        stop_relay = None if lease is None else asyncio.create_task(self._relay_stop(lease))
        try:
            if timeout is None:
                result = await self._serve()
            else:
                try:
                    async with asyncio.timeout(timeout.total_seconds()):
                        result = await self._serve()
                except TimeoutError:
                    how = await self.kill()
                    raise JobTimeout(f"timed out after {timeout.total_seconds():g} s; {how}") from None
        finally:
            if stop_relay is not None:
                stop_relay.cancel()
        # A child exits right after its result (or its pipe closes as it dies); one that lingers
        # (a thread of the handler's that will not end) is killed, its result stands.
        exitcode = await self._exited(KILL_AFTER)
        if exitcode is None:
            how = await self.kill()
            log.warning("%s (%s): did not exit after its run; %s", self._job.name, self._job.id, how)
            exitcode = self._process.exitcode
        if result is None:
            raise ChildProcessDied(describe_exit(exitcode), exitcode)
        if not result.get("ok"):
            if result.get("type") == "Interrupted":
                # The handler stopped on request (job.stop_requested): hand the job back, as in-process.
                raise Interrupted(str(result.get("message") or "interrupted"))
            raise ForkedJobError(
                str(result.get("message") or result.get("type") or "the child process failed"),
                str(result.get("type") or "Exception"),
                str(result.get("traceback") or ""),
            )

    async def _relay_stop(self, lease: Lease) -> None:
        await lease.stop_event.wait()
        self._send({"op": "stop"})

    async def _serve(self) -> dict[str, Any] | None:
        """Answer the child's requests until it reports its result (or its pipe closes)."""
        while True:
            message = await self._inbox.get()
            if message is None:
                return None
            op = message.get("op")
            if op == "done":
                return message
            if op in ("touch", "checkpoint"):
                await self._write(message)
            else:
                log.warning("unknown message %r from the child of %s", op, self._job.name)

    async def _write(self, message: dict[str, Any]) -> None:
        job, owner = self._job, self._owner
        answer: dict[str, Any] = {"op": "ack", "seq": message.get("seq")}
        try:
            progress = message.get("progress")
            if progress is not None:
                job.progress = progress
            if message["op"] == "touch":
                await owner.touch_job(job)
            else:
                job.checkpoint_state = message.get("state")
                await owner.checkpoint_job(job)
        except LockLost as exc:
            answer.update(error=str(exc), lock_lost=True)
        except Exception as exc:
            answer.update(error=str(exc) or type(exc).__name__, lock_lost=False)
        self._send(answer)

    async def _exited(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end; its exit code (negative: the signal), None if still alive."""
        process = self._process
        if process.exitcode is None:
            ended = self._loop.create_future()
            sentinel = process.sentinel

            def on_end() -> None:
                if not ended.done():
                    ended.set_result(None)

            self._loop.add_reader(sentinel, on_end)
            try:
                await asyncio.wait_for(ended, timeout)
            except TimeoutError:
                return None
            finally:
                self._loop.remove_reader(sentinel)
            # The sentinel closes as the child exits, a moment before it can be reaped: a blocking
            # join (not join(0)) waits for that moment instead of reading "still running".
            process.join(KILL_AFTER)
        return process.exitcode

    async def kill(self) -> str:
        """SIGTERM, then SIGKILL after ``KILL_AFTER`` seconds; says how the child ended."""
        process = self._process
        if process.exitcode is None:
            with contextlib.suppress(ProcessLookupError, ValueError):
                process.terminate()
            if await self._exited(KILL_AFTER) is None:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    process.kill()
        exitcode = await self._exited(KILL_AFTER)
        return describe_exit(exitcode)

    async def close(self) -> None:
        """Make sure the child is gone and every resource of this run is released."""
        if self._process.exitcode is None:
            # Cancelled (a stop past its grace) or a relay error: the child must not outlive its run.
            how = await asyncio.shield(self.kill())
            log.warning("%s (%s): %s", self._job.name, self._job.id, how)
        await asyncio.to_thread(self._reader.join, KILL_AFTER)
        with contextlib.suppress(OSError):
            self._conn.close()
        with contextlib.suppress(ValueError):
            self._process.close()


# -- child ------------------------------------------------------------------------------------------


def child_main(conn: Connection, module: str, qualname: str) -> None:
    """The child process: read the job, import the handler, run it, report, exit."""
    # Ctrl-C reaches the whole process group: the parent decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        first = _decode(conn.recv_bytes())
    except (EOFError, OSError):
        sys.exit(1)
    try:
        fn = _resolve(module, qualname)
    except Exception as exc:
        _report(conn, exc, f"cannot import the handler {module}:{qualname} in the child process: {exc}")
        return
    from .store.schema import job_from_document

    job = job_from_document(first["job"])
    try:
        asyncio.run(_ChildRun(conn, job, fn).run())
    finally:
        with contextlib.suppress(OSError):
            conn.close()
    # The result is sent: exit now, without waiting for threads the handler may have left behind.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _resolve(module: str, qualname: str) -> Callable[..., Any]:
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{module}:{qualname} is not callable")
    return cast("Callable[..., Any]", target)


def _report(conn: Connection, exc: BaseException, message: str) -> None:
    with contextlib.suppress(OSError):
        conn.send_bytes(_encode({**_failure(exc), "message": message, "op": "done"}))


class _ChildRun:
    """The child's side: a stand-in for the Agenda that a job's ``touch`` and ``checkpoint`` call."""

    def __init__(self, conn: Connection, job: Job, fn: Callable[..., Any]) -> None:
        self._conn = conn
        self._job = job
        self._fn = fn
        self._seq = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._send_lock = threading.Lock()

    async def run(self) -> None:
        from .definition import _is_async_callable

        self._loop = asyncio.get_running_loop()
        job = self._job
        set_lease(job, Lease(token="child", locked_at=job.locked_at or job.last_run_at or _now()))
        job.agenda = self
        threading.Thread(target=self._read, name="agendapy: pipe to the worker", daemon=True).start()
        try:
            if _is_async_callable(self._fn):
                await self._fn(job)
            else:
                # In a thread, so the loop can still pass a stop request to job.stop_requested.
                await asyncio.to_thread(self._fn, job)
        except Exception as exc:
            self._send_now({**_failure(exc), "op": "done"})
            return
        self._send_now({"op": "done", "ok": True})

    def _read(self) -> None:
        while True:
            try:
                message = _decode(self._conn.recv_bytes())
            except Exception:
                # The worker is gone (its end closed): a child never outlives it.
                os._exit(70)
            self._loop.call_soon_threadsafe(self._dispatch, message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "stop":
            lease = self._job.lease
            if lease is not None:
                lease.stop_event.set()
        elif op == "ack":
            future = self._pending.pop(message.get("seq", -1), None)
            if future is not None and not future.done():
                future.set_result(message)

    def _send_now(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._conn.send_bytes(_encode(message))

    async def _ask(self, message: dict[str, Any]) -> None:
        self._seq += 1
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[self._seq] = future
        self._send_now({**message, "seq": self._seq})
        answer = await future
        error = answer.get("error")
        if error is not None:
            if answer.get("lock_lost"):
                lease = self._job.lease
                if lease is not None:
                    lease.lost = True
                raise LockLost(str(error))
            raise RuntimeError(str(error))

    # The JobOwner protocol: Job.touch() and Job.checkpoint() reach the worker, the rest is refused.
    async def touch_job(self, job: Job) -> None:
        await self._ask({"op": "touch", "progress": job.progress})

    async def checkpoint_job(self, job: Job) -> None:
        await self._ask({"op": "checkpoint", "state": job.checkpoint_state, "progress": job.progress})

    async def save_job(self, job: Job) -> Job:
        self._refuse("save_job")

    async def remove_job(self, job: Job) -> int:
        self._refuse("remove_job")

    async def run_job_now(self, job: Job) -> None:
        self._refuse("run_job_now")

    async def refresh_run_fields(self, job: Job) -> None:
        self._refuse("refresh_run_fields")

    def _refuse(self, name: str) -> NoReturn:
        raise RuntimeError(
            f"agenda.{name} is not available to a job running in a child process "
            "(only touch() and checkpoint() reach the worker)"
        )

    def __getattr__(self, name: str) -> Any:
        self._refuse(name)


def _failure(exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _now() -> Any:
    from .schedule import utcnow

    return utcnow()
