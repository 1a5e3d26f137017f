"""Jobs in a child process (``define(..., fork=True)``, ``job.fork_mode(True)``), against the real server.

The handlers are module-level functions of this module: the child process imports them by name. Each
writes what it saw (its pid) into a file named by the job's data, so the test sees the child's view.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda, Interrupted, InvalidInput, Job

from support import EventLog, wait_until

#: What the leaking handler keeps: in the child it grows, here it must stay empty.
LEAK: list[bytes] = []


def _mark(job: Job, suffix: str = "") -> None:
    # Written aside, then renamed: a test that sees the file also sees the pid in it.
    mark = Path(job.data["dir"], f"{job.data.get('n', 0)}{suffix}")
    aside = mark.with_name(mark.name + ".writing")
    aside.write_text(str(os.getpid()))
    aside.replace(mark)


async def record_pid(job: Job) -> None:
    _mark(job)


def leaky(job: Job) -> None:
    LEAK.append(bytearray(5_000_000))  # never freed: the child's exit frees it
    _mark(job)


async def progress_then_wait(job: Job) -> None:
    await job.touch(42)
    await job.checkpoint({"step": 1})
    go = Path(job.data["dir"], "go")
    while not go.exists():  # noqa: ASYNC110, ASYNC240 - another process creates the file
        await asyncio.sleep(0.02)
    _mark(job)


def exit_three(job: Job) -> None:
    os._exit(3)


def stuck(job: Job) -> None:
    _mark(job, "-started")
    time.sleep(60)  # a C call: no cancellation reaches it


async def stubborn(job: Job) -> None:
    # A coroutine handler runs on the child's main thread, where a signal handler can be set.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _mark(job, "-started")
    time.sleep(60)  # noqa: ASYNC251 - blocking on purpose


async def raises(job: Job) -> None:
    raise ValueError(f"bad input {job.data['n']}")


async def stops_when_asked(job: Job) -> None:
    _mark(job, "-started")
    await job.stopping()
    _mark(job, "-stopped")


async def interrupts_when_asked(job: Job) -> None:
    _mark(job, "-started")
    await job.stopping()
    raise Interrupted("stopping; resume later")


def leaves_a_thread(job: Job) -> None:
    threading.Thread(target=time.sleep, args=(600,), name="left behind").start()  # not a daemon
    _mark(job)


def slow(job: Job) -> None:
    _mark(job, f"-run-{os.getpid()}")
    time.sleep(2.5)


def _pid_of(directory: Path, name: str) -> int:
    return int((directory / name).read_text())


def _files(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _finished(jobs_collection: Any, job: Job) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def done() -> bool:
        doc = await jobs_collection.find_one({"_id": _oid(job)})
        found.update(doc or {})
        return doc is not None and doc.get("lastFinishedAt") is not None and doc.get("lockedAt") is None

    await wait_until(done, timeout=60)
    return found


def _oid(job: Job) -> Any:
    from bson import ObjectId

    assert job.id is not None
    return ObjectId(job.id)


@pytest.fixture
async def forking(make_agenda: Any) -> Agenda:
    agenda: Agenda = await make_agenda(process_every=0.05)
    return agenda


async def test_a_forked_job_runs_in_a_child_process(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("pid", record_pid, fork=True)
    events = EventLog(forking, "start", "success", "complete")
    await forking.start()
    job = await forking.now("pid", {"dir": str(tmp_path)})
    doc = await _finished(jobs_collection, job)
    await events.wait("complete")
    child = _pid_of(tmp_path, "0")
    assert child != os.getpid()
    assert doc.get("failReason") is None
    assert events.names() == ["start", "success", "complete"]


async def test_progress_and_checkpoints_reach_the_database(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("steps", progress_then_wait, fork=True)
    await forking.start()
    job = await forking.now("steps", {"dir": str(tmp_path)})

    async def relayed() -> bool:
        doc = await jobs_collection.find_one({"_id": _oid(job)})
        return doc is not None and doc.get("progress") == 42 and doc.get("checkpoint") == {"step": 1}

    await wait_until(relayed, timeout=60)
    (tmp_path / "go").write_text("")
    doc = await _finished(jobs_collection, job)
    assert doc.get("failReason") is None
    assert _pid_of(tmp_path, "0") != os.getpid()


async def test_a_leaking_handler_leaks_in_its_children_only(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("leaky", leaky, fork=True, concurrency=2)
    await forking.start()
    runs = 12
    await forking.now_many("leaky", [{"dir": str(tmp_path), "n": n} for n in range(runs)])
    # Every mark by name: counting the directory would also count a mark still being written aside.
    await wait_until(lambda: all((tmp_path / str(n)).exists() for n in range(runs)), timeout=90)
    pids = {_pid_of(tmp_path, str(n)) for n in range(runs)}
    assert len(pids) == runs  # a new child each run
    assert os.getpid() not in pids
    assert LEAK == []  # nothing the children kept ever reached the worker


async def test_a_child_that_exits_fails_the_run_with_its_exit_code(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("exit", exit_three, fork=True)
    forking.define("pid", record_pid, fork=True)
    await forking.start()
    job = await forking.now("exit", {"dir": str(tmp_path)})
    doc = await _finished(jobs_collection, job)
    assert doc["failReason"] == "child process exited with code: 3"
    after = await forking.now("pid", {"dir": str(tmp_path), "n": 1})
    assert (await _finished(jobs_collection, after)).get("failReason") is None


async def test_a_handler_stuck_in_a_c_call_is_killed_at_its_timeout(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    # The timeout runs from the child's start, which imports this module (and pytest) first: 3 s
    # leaves a loaded machine room to reach the C call before it.
    forking.define("stuck", stuck, fork=True, timeout=3)
    forking.define("pid", record_pid, fork=True)
    await forking.start()
    job = await forking.now("stuck", {"dir": str(tmp_path)})
    doc = await _finished(jobs_collection, job)
    assert doc["failReason"] == "timed out after 3 s; child process killed by SIGTERM"
    assert not _alive(_pid_of(tmp_path, "0-started"))
    after = await forking.now("pid", {"dir": str(tmp_path), "n": 1})
    assert (await _finished(jobs_collection, after)).get("failReason") is None


async def test_a_child_that_ignores_sigterm_gets_sigkill(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    # As above: the handler must have ignored SIGTERM before the timeout sends it.
    forking.define("stubborn", stubborn, fork=True, timeout=3)
    await forking.start()
    job = await forking.now("stubborn", {"dir": str(tmp_path)})
    doc = await _finished(jobs_collection, job)
    assert doc["failReason"] == "timed out after 3 s; child process killed by SIGKILL"
    assert not _alive(_pid_of(tmp_path, "0-started"))


async def test_a_handler_error_in_the_child_is_the_fail_reason(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("raises", raises, fork=True)
    fails = EventLog(forking, "fail")
    await forking.start()
    job = await forking.now("raises", {"n": 7})
    doc = await _finished(jobs_collection, job)
    assert doc["failReason"] == "bad input 7"
    ((error, _job),) = await fails.wait("fail")
    assert error.type_name == "ValueError"
    assert "raise ValueError" in error.child_traceback


async def test_a_thread_left_running_does_not_keep_the_run_or_the_child(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("threads", leaves_a_thread, fork=True)
    await forking.start()
    job = await forking.now("threads", {"dir": str(tmp_path)})
    doc = await _finished(jobs_collection, job)
    assert doc.get("failReason") is None
    assert not _alive(_pid_of(tmp_path, "0"))


async def test_the_worker_keeps_a_forked_runs_lock_alive(
    forking: Agenda, make_agenda: Any, jobs_collection: Any, tmp_path: Path
) -> None:
    """The lock lives 1 s; the run takes 2.5 s; another worker waits to take over an expired lock."""
    other: Agenda = await make_agenda(process_every=0.05)
    for agenda in (forking, other):
        agenda.define("slow", slow, fork=True, lock_lifetime=1)
    lost = EventLog(forking, "lock lost")
    await forking.start()
    job = await forking.now("slow", {"dir": str(tmp_path)})
    await wait_until(lambda: any(tmp_path.iterdir()), timeout=60)
    await other.start()
    doc = await _finished(jobs_collection, job)
    assert doc.get("failReason") is None
    assert len(_files(tmp_path, "0-run-*")) == 1
    assert lost.calls == []


async def test_a_document_in_fork_mode_runs_in_a_child(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("pid", record_pid)  # not a fork definition: the document asks for it
    job = forking.create("pid", {"dir": str(tmp_path)}).fork_mode(True)
    await job.save()
    assert (await jobs_collection.find_one({"_id": _oid(job)}))["fork"] is True
    await forking.start()
    await _finished(jobs_collection, job)
    assert _pid_of(tmp_path, "0") != os.getpid()


async def test_a_stop_asks_the_child_and_kills_it_past_the_grace(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("polite", stops_when_asked, fork=True)
    forking.define("stuck", stuck, fork=True)
    await forking.start()
    polite = await forking.now("polite", {"dir": str(tmp_path), "n": 1})
    stuck_job = await forking.now("stuck", {"dir": str(tmp_path), "n": 2})
    await wait_until(
        lambda: (tmp_path / "1-started").exists() and (tmp_path / "2-started").exists(), timeout=60
    )
    await forking.stop(grace=1.0)
    assert (tmp_path / "1-stopped").exists()  # job.stopping() in the child heard the stop
    assert not _alive(_pid_of(tmp_path, "2-started"))
    doc = await jobs_collection.find_one({"_id": _oid(stuck_job)})
    assert doc["lockedAt"] is None  # handed back for another worker
    assert (await jobs_collection.find_one({"_id": _oid(polite)}))["lockedAt"] is None


async def test_interrupted_in_the_child_hands_the_job_back(
    forking: Agenda, jobs_collection: Any, tmp_path: Path
) -> None:
    forking.define("resumable", interrupts_when_asked, fork=True)
    fails = EventLog(forking, "fail")
    await forking.start()
    job = await forking.now("resumable", {"dir": str(tmp_path)})
    await wait_until(lambda: (tmp_path / "0-started").exists(), timeout=60)
    await forking.stop(grace=5)
    doc = await jobs_collection.find_one({"_id": _oid(job)})
    assert doc["lockedAt"] is None
    assert doc["nextRunAt"] is not None  # due again, for another worker to resume
    assert doc.get("failReason") is None
    assert fails.count("fail") == 0


def test_handlers_a_child_cannot_import_are_refused_at_define(make_agenda: Any) -> None:
    agenda = Agenda("mongodb://127.0.0.1:1/unused")

    def nested(job: Job) -> None: ...

    with pytest.raises(InvalidInput, match=r"fn.*nested function"):
        agenda.define("nested", nested, fork=True)
    with pytest.raises(InvalidInput, match="lambda"):
        agenda.define("lambda", lambda job: None, fork=True)
    main_handler: Any = lambda job: None  # noqa: E731
    main_handler.__qualname__ = "handler"
    main_handler.__module__ = "__main__"
    with pytest.raises(InvalidInput, match="__main__"):
        agenda.define("main", main_handler, fork=True)
    with pytest.raises(InvalidInput, match="fork"):
        agenda.define("flag", record_pid, fork="yes")  # type: ignore[arg-type]
    agenda.define("fine", record_pid, fork=True)
    assert agenda.definitions["fine"].fork is True
