"""Chaos harness: kill workers (and optionally the database) while jobs run; count lost and duplicate runs.

One command::

    python benchmarks/chaos.py --workers 3 --jobs 1000 --kill-every 2 [--restart-db-every 10]

It starts its own SecantusDB (or uses ``--mongo-url``; with ``--store postgres`` its own PostgreSQL from
``tests/pg_server.py``, or ``--postgres-url``), schedules one-off jobs (a few long ones that
checkpoint in chunks) and a few short-interval recurring jobs, runs ``--workers`` worker processes through
the real CLI (``python -m agendapy worker``), and every ``--kill-every`` seconds kills one of them with
SIGKILL or SIGTERM (alternating) and starts a replacement. Every handler run writes a record to a ``runs``
collection (job id, worker pid, start, handler finish, whether its success reached the job document).

What counts as a duplicate:

* *started twice* — a one-off job with more than one run record. Expected after a SIGKILL (at-least-once:
  the job comes back one lock lifetime later) and after a SIGTERM that outlasted the grace period
  (released, resumed from its checkpoint).
* *completed twice* — more than one run whose success was saved to the job document. Must be 0.
* *run after completion* — a run that started after another run of the job had been saved as
  succeeded. Must be 0.
* *overlapping runs* — two runs of one job whose ``[start, end)`` intersect, where the end of a run
  killed by SIGKILL is the moment its process was dead, of an interrupted run the moment it was
  cancelled, of a handler that raised (e.g. ``LockLost`` at a checkpoint) the moment it raised. Must be
  0: a lock excludes that.
* *success saved but job left locked* — the run's success is in the document but ``lockedAt`` is still
  set, so the job is claimed again once the lock expires (the cause of "run after completion").
* *stranded* — unlocked, unfinished and without ``nextRunAt``: no claim matches it again (lost).

On PostgreSQL the workers use ``PostgresJobStore`` on the ``agenda_jobs`` table, write their run records
to JSON-lines files in the work directory (they survive a server restart without retries), and a database
restart is a SIGKILL of the postmaster followed by a restart of the same cluster (crash recovery).

Workers import a frozen copy of the agendapy sources taken at start (its digest is in the table), so
edits to the checkout during a run do not mix versions. ``--trace`` also records each worker's lock
operations (claim, heartbeat, saves, releases with their timings) in ``trace-PID.jsonl``. The run stops
when every one-off job is finished, at ``--duration-limit``, or after ``--stall-limit`` seconds without
progress. The raw records of anomalies go to ``chaos-report.json`` in the work directory (printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure
from rich.console import Console
from rich.table import Table

import agendapy
from agendapy import Agenda

TASK = "chaos-task"
#: tests/pg_server.py lives there (a temporary PostgreSQL for --store postgres).
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
RECURRING = "chaos-recurring"

# The worker module the harness writes to a temporary directory and runs through the CLI.
WORKER_MODULE = textwrap.dedent(
    '''
    """Chaos worker: every run writes a record to the `runs` collection."""
    import asyncio, contextlib, os, random, time
    from bson import ObjectId
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConnectionFailure, DuplicateKeyError
    from agendapy import Agenda

    LOCK_LIFETIME = float(os.environ["CHAOS_LOCK_LIFETIME"])
    PID = os.getpid()

    agenda = Agenda(
        process_every=float(os.environ["CHAOS_PROCESS_EVERY"]),
        max_concurrency=int(os.environ["CHAOS_CONCURRENCY"]),
        default_concurrency=int(os.environ["CHAOS_CONCURRENCY"]),
        default_lock_lifetime=LOCK_LIFETIME,
        **({"state_write_window": float(os.environ["CHAOS_STATE_WRITE_WINDOW"])}
           if os.environ.get("CHAOS_STATE_WRITE_WINDOW") else {}),
    )

    _db = None
    _records = {}   # Job -> run record id (the same Job object reaches the handler and the events)
    _outcome = {}   # Job -> None (success) or the error text

    def db():
        global _db
        if _db is None:
            client = AsyncMongoClient(
                os.environ["CHAOS_RESULTS_URL"], tz_aware=True, serverSelectionTimeoutMS=60_000
            )
            _db = client[os.environ["CHAOS_DB"]]
        return _db

    async def write(op):
        """Retry a results write through a database restart (the harness measures agendapy, not us)."""
        delay = 0.05
        deadline = time.monotonic() + 120
        while True:
            try:
                return await op()
            except DuplicateKeyError:
                return None  # an insert retried after it had landed
            except ConnectionFailure:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def run(job):
        rec = ObjectId()
        _records[job] = rec
        data = job.data or {}
        resumed = job.checkpoint_state
        await write(lambda: db().runs.insert_one({
            "_id": rec, "jobId": job.id, "name": job.name, "pid": PID, "worker": agenda.name,
            "key": job.id if not job.repeat_interval else f"{job.id}@{job.last_run_at.isoformat()}",
            "start": time.time(), "resumedFrom": resumed, "long": bool(data.get("chunks")),
            "lockedAt": job.locked_at.timestamp() if job.locked_at else None,
        }))
        try:
            chunks = data.get("chunks")
            if chunks:
                first = (resumed or {}).get("chunk", 0)
                for i in range(first, chunks):
                    await asyncio.sleep(data["chunk_s"])
                    await job.checkpoint({"chunk": i + 1})
            else:
                await asyncio.sleep(data.get("sleep", random.uniform(0, 0.2)))
        except asyncio.CancelledError:
            # Graceful stop ran out of grace: agendapy cancels the run, saves and unlocks it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    db().runs.update_one({"_id": rec}, {"$set": {"interrupted": time.time()}}), 2
                )
            raise
        except Exception as exc:
            # e.g. LockLost or DatabaseUnavailable from job.checkpoint(): the handler stops here.
            failed_at = time.time()
            await write(lambda: db().runs.update_one(
                {"_id": rec}, {"$set": {"raised": failed_at, "raisedError": repr(exc)}}
            ))
            raise
        await write(lambda: db().runs.update_one({"_id": rec}, {"$set": {"finish": time.time()}}))

    if os.environ.get("CHAOS_TRACE"):
        # Diagnosis only: time every lock operation of this worker (claim, heartbeat, state saves,
        # releases) into a JSON-lines file, by wrapping the store's methods from outside.
        import json
        from agendapy.store.mongo import MongoJobStore

        _trace = open(os.path.join(os.environ["CHAOS_TRACE"], f"trace-{PID}.jsonl"), "a", buffering=1)

        def _emit(**fields):
            _trace.write(json.dumps({"pid": PID, **fields}, default=str) + "\\n")

        def _ts(value):
            return value.timestamp() if value is not None else None

        _claim, _renew = MongoJobStore.claim, MongoJobStore.renew_locks
        _save, _release = MongoJobStore.save_state, MongoJobStore.release
        _batched = getattr(MongoJobStore, "save_state_batched", None)

        # Signature-agnostic wrappers: the store's methods change as agendapy evolves.
        async def claim(self, request, *args, **kwargs):
            t0 = time.time()
            result = await _claim(self, request, *args, **kwargs)
            jobs = result if isinstance(result, list) else [result] if result is not None else []
            for job in jobs:
                _emit(op="claim", t0=t0, t1=time.time(), job=job.id, token=job.lease.token[:8],
                      now=_ts(request.now), next=_ts(job.next_run_at), batch=len(jobs))
            return result

        async def renew_locks(self, jobs, *args, **kwargs):
            t0 = time.time()
            ages = {j.id: t0 - _ts(j.lease.locked_at) for j in jobs if j.lease is not None}
            try:
                lost = await _renew(self, jobs, *args, **kwargs)
            except BaseException as exc:
                _emit(op="renew", t0=t0, t1=time.time(), ages=ages, error=repr(exc))
                raise
            _emit(op="renew", t0=t0, t1=time.time(), ages=ages, lost=[j.id for j in lost])
            return lost

        async def save_state(self, job, *args, **kwargs):
            t0 = time.time()
            lease = job.lease
            ok = await _save(self, job, *args, **kwargs)
            _emit(op="save", t0=t0, t1=time.time(), job=job.id, fields=kwargs.get("fields"), ok=ok,
                  token=lease.token[:8] if lease else None, lockedAt=_ts(job.locked_at))
            return ok

        async def save_state_batched(self, job, *args, **kwargs):
            t0 = time.time()
            lease = job.lease
            ok = await _batched(self, job, *args, **kwargs)
            _emit(op="save", t0=t0, t1=time.time(), job=job.id, fields="batched", ok=ok,
                  token=lease.token[:8] if lease else None, lockedAt=_ts(job.locked_at))
            return ok

        async def release(self, jobs, *args, **kwargs):
            t0 = time.time()
            await _release(self, jobs, *args, **kwargs)
            _emit(op="release", t0=t0, t1=time.time(), jobs=[j.id for j in jobs],
                  reschedule=kwargs.get("reschedule_at") is not None)

        MongoJobStore.claim, MongoJobStore.renew_locks = claim, renew_locks
        MongoJobStore.save_state, MongoJobStore.release = save_state, release
        if _batched is not None:
            MongoJobStore.save_state_batched = save_state_batched

    agenda.define("chaos-task", run)
    for i in range(int(os.environ["CHAOS_RECURRING"])):
        agenda.define(f"chaos-recurring-{i}", run, concurrency=1)

    @agenda.on("success")
    def _success(job):
        _outcome[job] = None

    @agenda.on("fail")
    def _fail(exc, job):
        _outcome[job] = f"{type(exc).__name__}: {exc}"

    @agenda.on("lock lost")
    async def _lock_lost(job):
        rec = _records.get(job)
        if rec is not None:
            await write(lambda: db().runs.update_one({"_id": rec}, {"$set": {"lockLost": time.time()}}))

    @agenda.on("complete")
    async def _complete(job):
        # Emitted after the final state save: a run counts as completed only if its success is
        # what the job document now says (lastFinishedAt equal to this run's, to the millisecond).
        rec = _records.pop(job, None)
        if rec is None:
            return
        error = _outcome.pop(job, "no success or fail event")
        doc = await write(lambda: db().agendaJobs.find_one({"_id": ObjectId(job.id)}))
        stored = (doc or {}).get("lastFinishedAt")
        saved = (
            error is None and not job.lock_lost and stored is not None
            and job.last_finished_at is not None
            and abs((stored - job.last_finished_at).total_seconds()) < 0.002
        )
        await write(lambda: db().runs.update_one({"_id": rec}, {"$set": {
            "completeEvent": time.time(), "error": error, "saved": saved, "lockLostFlag": job.lock_lost,
            # A saved success must leave the job unlocked; a lock left behind gets it run again.
            "lockedAfterSave": bool(saved and (doc or {}).get("lockedAt") is not None),
        }}))
    '''
)

# The PostgreSQL worker: the same handler and the same record fields as WORKER_MODULE, the records
# appended to runs-PID.jsonl (one line per change of a record: the harness merges them by "rec").
WORKER_MODULE_PG = textwrap.dedent(
    '''
    """Chaos worker on PostgreSQL: every run appends its record's changes to runs-PID.jsonl."""
    import asyncio, json, os, random, time, uuid
    from agendapy import Agenda
    from agendapy.store.postgres import PostgresJobStore

    LOCK_LIFETIME = float(os.environ["CHAOS_LOCK_LIFETIME"])
    PID = os.getpid()

    agenda = Agenda(
        PostgresJobStore(
            os.environ["CHAOS_PG_URL"],
            **({"state_write_window": float(os.environ["CHAOS_STATE_WRITE_WINDOW"])}
               if os.environ.get("CHAOS_STATE_WRITE_WINDOW") else {}),
        ),
        process_every=float(os.environ["CHAOS_PROCESS_EVERY"]),
        max_concurrency=int(os.environ["CHAOS_CONCURRENCY"]),
        default_concurrency=int(os.environ["CHAOS_CONCURRENCY"]),
        default_lock_lifetime=LOCK_LIFETIME,
    )

    _log = open(os.path.join(os.environ["CHAOS_RUNS_DIR"], f"runs-{PID}.jsonl"), "a", buffering=1)
    _records = {}   # Job -> run record id (the same Job object reaches the handler and the events)
    _outcome = {}   # Job -> None (success) or the error text

    def note(rec, **fields):
        _log.write(json.dumps({"rec": rec, **fields}) + "\\n")

    async def read_job(job_id):
        # Through agendapy's own store; retried through a server restart.
        deadline = time.monotonic() + 120
        while True:
            try:
                return await agenda.get_job(job_id)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def run(job):
        rec = uuid.uuid4().hex
        _records[job] = rec
        data = job.data or {}
        resumed = job.checkpoint_state
        note(rec, jobId=job.id, name=job.name, pid=PID, worker=agenda.name,
             key=job.id if not job.repeat_interval else f"{job.id}@{job.last_run_at.isoformat()}",
             start=time.time(), resumedFrom=resumed, long=bool(data.get("chunks")),
             lockedAt=job.locked_at.timestamp() if job.locked_at else None)
        try:
            chunks = data.get("chunks")
            if chunks:
                first = (resumed or {}).get("chunk", 0)
                for i in range(first, chunks):
                    await asyncio.sleep(data["chunk_s"])
                    await job.checkpoint({"chunk": i + 1})
            else:
                await asyncio.sleep(data.get("sleep", random.uniform(0, 0.2)))
        except asyncio.CancelledError:
            note(rec, interrupted=time.time())
            raise
        except Exception as exc:
            note(rec, raised=time.time(), raisedError=repr(exc))
            raise
        note(rec, finish=time.time())

    agenda.define("chaos-task", run)
    for i in range(int(os.environ["CHAOS_RECURRING"])):
        agenda.define(f"chaos-recurring-{i}", run, concurrency=1)

    @agenda.on("success")
    def _success(job):
        _outcome[job] = None

    @agenda.on("fail")
    def _fail(exc, job):
        _outcome[job] = f"{type(exc).__name__}: {exc}"

    @agenda.on("lock lost")
    def _lock_lost(job):
        rec = _records.get(job)
        if rec is not None:
            note(rec, lockLost=time.time())

    @agenda.on("complete")
    async def _complete(job):
        # A run counts as completed only if its success is what the row now says (lastFinishedAt
        # equal to this run's, to the millisecond) and the row is unlocked.
        rec = _records.pop(job, None)
        if rec is None:
            return
        error = _outcome.pop(job, "no success or fail event")
        stored_job = await read_job(job.id)
        stored = stored_job.last_finished_at if stored_job is not None else None
        saved = (
            error is None and not job.lock_lost and stored is not None
            and job.last_finished_at is not None
            and abs((stored - job.last_finished_at).total_seconds()) < 0.002
        )
        note(rec, completeEvent=time.time(), error=error, saved=saved, lockLostFlag=job.lock_lost,
             lockedAfterSave=bool(saved and stored_job.locked_at is not None))
    '''
)


def snapshot_sources(workdir: Path) -> Path:
    """Copy the agendapy package into ``workdir/src``: workers started during a run then all run the
    same code, even if the checkout changes meanwhile."""
    target = workdir / "src" / "agendapy"
    shutil.copytree(Path(agendapy.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def source_digest(root: Path) -> str:
    """A short digest of the agendapy sources the workers run."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.time)
    terminating: bool = False


@dataclass
class Chaos:
    """What the chaos loop did, for the analysis."""

    sigkills: list[tuple[int, float]] = field(default_factory=list)  # (pid, dead at, epoch s)
    sigterms: list[tuple[int, float, float]] = field(default_factory=list)  # (pid, sent, exited)
    sigterm_hung: list[int] = field(default_factory=list)
    sigterm_codes: Counter[int] = field(default_factory=Counter)
    unexpected_exits: list[tuple[int, int, str]] = field(default_factory=list)  # (pid, code, log)
    db_restarts: list[tuple[float, float]] = field(default_factory=list)  # (down at, back at)
    exits: dict[int, float] = field(default_factory=dict)  # pid -> exit time (epoch s)


class Fleet:
    """The worker processes: spawn, kill, replace."""

    def __init__(self, args: argparse.Namespace, module_dir: Path, jobs_url: str, db_name: str) -> None:
        self.args = args
        self.module_dir = module_dir
        self.jobs_url = jobs_url
        self.db_name = db_name
        self.workers: list[Worker] = []
        self.all_workers: list[Worker] = []
        self.spawned = 0
        self.chaos = Chaos()
        self.rng = random.Random(args.seed)
        self._monitors: set[asyncio.Task[None]] = set()

    def spawn(self) -> Worker:
        index = self.spawned
        self.spawned += 1
        log_path = self.module_dir / f"worker-{index}.log"
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "CHAOS_RESULTS_URL": self.jobs_url,
            "CHAOS_DB": self.db_name,
            "CHAOS_LOCK_LIFETIME": str(self.args.lock_lifetime),
            "CHAOS_PROCESS_EVERY": str(self.args.process_every),
            "CHAOS_CONCURRENCY": str(self.args.concurrency),
            "CHAOS_RECURRING": str(self.args.recurring),
            "CHAOS_STATE_WRITE_WINDOW": ""
            if self.args.state_write_window is None
            else str(self.args.state_write_window),
            # Every worker of a run imports the same frozen copy of agendapy (see snapshot_sources).
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(self.module_dir / "src"), os.environ.get("PYTHONPATH")) if p
            ),
        }
        if self.args.trace:
            env["CHAOS_TRACE"] = str(self.module_dir)
        command = [
            sys.executable, "-m", "agendapy", "worker", "chaosjobs:agenda",
            "--grace", str(self.args.grace), "--name", f"w{index}", "--log-level", "INFO",
        ]  # fmt: skip
        if self.args.store == "postgres":
            # The module's Agenda carries its PostgresJobStore: no URL option, none from the environment.
            env.pop("AGENDAPY_MONGO_URL", None)
            env.pop("AGENDAPY_DATABASE_URL", None)
            env.update(CHAOS_PG_URL=self.jobs_url, CHAOS_RUNS_DIR=str(self.module_dir / "runs"))
        else:
            command += ["--mongo-url", self.jobs_url]
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                command, cwd=self.module_dir, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        worker = Worker(index, proc, log_path)
        self.workers.append(worker)
        self.all_workers.append(worker)
        return worker

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None and not w.terminating]

    def reap(self) -> None:
        """Replace workers that exited on their own (a crash is reported, not hidden)."""
        for worker in list(self.workers):
            code = worker.proc.poll()
            if code is None or worker.terminating:
                continue
            self.workers.remove(worker)
            self.chaos.exits[worker.proc.pid] = time.time()
            tail = worker.log_path.read_text(errors="replace").splitlines()[-15:]
            self.chaos.unexpected_exits.append((worker.proc.pid, code, "\n".join(tail)))
            self.spawn()

    async def kill_one(self, sig: signal.Signals) -> None:
        candidates = self.alive()
        if not candidates:
            return
        worker = self.rng.choice(candidates)
        pid = worker.proc.pid
        if sig == signal.SIGKILL:
            worker.proc.kill()
            await asyncio.to_thread(worker.proc.wait)
            dead_at = time.time()
            self.chaos.sigkills.append((pid, dead_at))
            self.chaos.exits[pid] = dead_at
            self.workers.remove(worker)
        else:
            worker.terminating = True
            sent = time.time()
            worker.proc.send_signal(signal.SIGTERM)
            task = asyncio.create_task(self._await_exit(worker, sent))
            self._monitors.add(task)
            task.add_done_callback(self._monitors.discard)
        self.spawn()

    async def _await_exit(self, worker: Worker, sent: float) -> None:
        limit = self.args.grace + 10
        while worker.proc.poll() is None and time.time() - sent < limit:  # noqa: ASYNC110 - a child process
            await asyncio.sleep(0.01)
        if worker.proc.poll() is None:
            self.chaos.sigterm_hung.append(worker.proc.pid)
            worker.proc.kill()
            await asyncio.to_thread(worker.proc.wait)
        exited = time.time()
        self.chaos.sigterms.append((worker.proc.pid, sent, exited))
        self.chaos.sigterm_codes[worker.proc.returncode] += 1
        self.chaos.exits[worker.proc.pid] = exited
        self.workers.remove(worker)

    async def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None and not worker.terminating:
                worker.terminating = True
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + self.args.grace + 10
        while any(w.proc.poll() is None for w in self.workers) and time.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
            self.chaos.exits.setdefault(worker.proc.pid, time.time())
        for task in list(self._monitors):
            task.cancel()


def _connection_errors() -> tuple[type[BaseException], ...]:
    """The errors of a server that is restarting, for both stores."""
    errors: list[type[BaseException]] = [ConnectionFailure]
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.OperationalError)
    return tuple(errors)


async def retrying(op: Any, attempts: int = 200) -> Any:
    """Run a harness query, waiting out a database restart."""
    errors = _connection_errors()
    for attempt in range(attempts):
        try:
            return await op()
        except errors:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
    return None


def producer_agenda(args: argparse.Namespace, jobs_url: str) -> Agenda:
    if args.store == "postgres":
        from agendapy.store.postgres import PostgresJobStore

        return Agenda(PostgresJobStore(jobs_url), name="chaos-producer")
    return Agenda(jobs_url, name="chaos-producer")


async def schedule_jobs(args: argparse.Namespace, jobs_url: str, rng: random.Random) -> None:
    producer = producer_agenda(args, jobs_url)
    try:
        for i in range(args.recurring):
            await producer.every(f"{1 + i % 3} seconds", f"{RECURRING}-{i}", {"i": i, "sleep": 0.05})
        now = datetime.now(UTC)
        for n in range(args.jobs):
            data: dict[str, Any] = {"n": n}
            if rng.random() < args.long_fraction:
                chunks = rng.randint(4, 10)
                data.update(chunks=chunks, chunk_s=0.5)  # 2-5 s, checkpointed every 0.5 s
            else:
                data["sleep"] = rng.uniform(0, 0.2)
            if rng.random() < 0.1:
                # A few due later, so jobs also become due while the chaos runs.
                await producer.schedule(now + timedelta(seconds=rng.uniform(1, 20)), TASK, data)
            else:
                await producer.now(TASK, data)
    finally:
        await producer.close()


async def all_done(jobs: Any) -> tuple[bool, int]:
    pending = await retrying(
        lambda: jobs.count_documents(
            {"name": TASK, "$or": [{"lastFinishedAt": None}, {"lockedAt": {"$ne": None}}]}
        )
    )
    return pending == 0, pending


async def chaos_loop(
    args: argparse.Namespace,
    fleet: Fleet,
    server: Any,
    pending_jobs: Callable[[], Awaitable[tuple[bool, int]]],
    console: Console,
) -> tuple[bool, float]:
    started = time.time()
    next_kill = started + args.kill_every
    next_restart = started + args.restart_db_every if args.restart_db_every else None
    next_check = started
    next_status = started + 10
    restart_task: asyncio.Task[None] | None = None
    kills = 0
    pending = args.jobs
    last_progress = started
    signals = [signal.SIGKILL, signal.SIGTERM]
    fleet.rng.shuffle(signals)

    async def restart_db() -> None:
        down = time.time()
        await asyncio.to_thread(server.restart)
        fleet.chaos.db_restarts.append((down, time.time()))

    while True:
        now = time.time()
        if now - started > args.duration_limit:
            return False, now - started
        fleet.reap()
        if len(fleet.chaos.unexpected_exits) > 3 * args.workers:
            console.print("[red]workers keep exiting on their own: giving up (see below)[/]")
            return False, now - started
        if now >= next_check and (restart_task is None or restart_task.done()):
            done, now_pending = await pending_jobs()
            if done:
                return True, time.time() - started
            if now_pending != pending:
                pending, last_progress = now_pending, time.time()
            elif time.time() - last_progress > args.stall_limit:
                console.print(f"[red]no job completed for {args.stall_limit:g} s: giving up[/]")
                return False, time.time() - started
            next_check = time.time() + 0.5
        if now >= next_status:
            console.log(
                f"{now - started:5.0f} s: {args.jobs - pending}/{args.jobs} one-off jobs done, "
                f"{len(fleet.chaos.sigkills)} SIGKILL, {len(fleet.chaos.sigterms)} SIGTERM, "
                f"{len(fleet.chaos.db_restarts)} database restarts"
            )
            next_status += 10
        if args.kill_every and now >= next_kill:
            await fleet.kill_one(signals[kills % 2])
            kills += 1
            next_kill += args.kill_every
        if next_restart is not None and now >= next_restart and (restart_task is None or restart_task.done()):
            restart_task = asyncio.create_task(restart_db())
            next_restart += args.restart_db_every
        await asyncio.sleep(0.05)


def analyse(
    args: argparse.Namespace,
    docs: list[dict[str, Any]],
    records: list[dict[str, Any]],
    chaos: Chaos,
    end: float,
) -> dict[str, Any]:
    one_off = [d for d in docs if d["name"] == TASK]
    ids = {str(d["_id"]) for d in one_off}

    def succeeded(d: dict[str, Any]) -> bool:
        failed = d.get("failedAt") is not None and (
            d.get("lastFinishedAt") is None or d["failedAt"] >= d["lastFinishedAt"]
        )
        return d.get("lastFinishedAt") is not None and d.get("lockedAt") is None and not failed

    completed = {str(d["_id"]) for d in one_off if succeeded(d)}
    failed_docs = [d for d in one_off if d.get("failedAt") is not None]
    # Unlocked, never finished and not due: no claim branch matches it any more.
    stranded = [
        str(d["_id"])
        for d in one_off
        if d.get("lockedAt") is None and d.get("nextRunAt") is None and d.get("lastFinishedAt") is None
    ]
    lost = sorted(ids - completed)

    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_job[r["jobId"]].append(r)
    killed_at = dict(chaos.sigkills)

    def end_of(r: dict[str, Any]) -> float:
        # The moment the run certainly stopped running.
        for key in ("finish", "interrupted", "raised", "completeEvent"):
            if r.get(key) is not None:
                return float(r[key])
        if r["pid"] in killed_at:
            return killed_at[r["pid"]]
        return chaos.exits.get(r["pid"], end)

    started_twice, finished_twice, completed_twice, after_completion, overlaps = [], [], [], [], []
    finished_not_saved = 0
    for job_id, runs in by_job.items():
        runs.sort(key=lambda r: r["start"])
        for a_i, a in enumerate(runs):
            for b in runs[a_i + 1 :]:
                if b["start"] < end_of(a) and a["start"] < end_of(b):
                    overlaps.append({"jobId": job_id, "runs": [_brief(a), _brief(b)]})
        saved = [r for r in runs if r.get("saved")]
        for s in saved:
            later = [r for r in runs if r["start"] > s["completeEvent"]]
            if later and job_id in ids:
                after_completion.append(
                    {"jobId": job_id, "saved": _brief(s), "later": [_brief(r) for r in later]}
                )
        if job_id not in ids:
            continue
        finished_not_saved += sum(1 for r in runs if r.get("finish") is not None and not r.get("saved"))
        if len(runs) > 1:
            started_twice.append(job_id)
        if sum(1 for r in runs if r.get("finish") is not None) > 1:
            finished_twice.append(job_id)
        if len(saved) > 1:
            completed_twice.append({"jobId": job_id, "runs": [_brief(r) for r in runs]})

    recurring = [r for r in records if r["name"].startswith(RECURRING)]
    resumed = [r for r in records if r["jobId"] in ids and r.get("resumedFrom")]
    term_times = sorted(exited - sent for _, sent, exited in chaos.sigterms)
    return {
        "scheduled": len(one_off),
        "completed": len(completed),
        "failed": len(failed_docs),
        "stranded": stranded,
        # Recurring jobs are legitimately locked again at once by the worker that claims their next run.
        "locked_after_save": sum(1 for r in records if r.get("lockedAfterSave") and r["jobId"] in ids),
        "failed_reasons": Counter(str(d.get("failReason")) for d in failed_docs).most_common(5),
        "lost": lost,
        "started_twice": started_twice,
        "finished_twice": finished_twice,
        "finished_not_saved": finished_not_saved,
        "completed_twice": completed_twice,
        "after_completion": after_completion,
        "overlaps": overlaps,
        "recurring_runs": len(recurring),
        "recurring_saved": sum(1 for r in recurring if r.get("saved")),
        "resumed_from_checkpoint": len(resumed),
        "interrupted": sum(1 for r in records if r.get("interrupted") is not None),
        "lock_lost_events": sum(1 for r in records if r.get("lockLost") is not None),
        "term_times": term_times,
        "run_records": len(records),
    }


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "pid", "worker", "start", "finish", "interrupted", "raised", "completeEvent", "saved", "error",
        "lockLost", "lockedAfterSave",
    )  # fmt: skip
    return {k: r.get(k) for k in keys if k in r}


def print_report(
    console: Console,
    args: argparse.Namespace,
    result: dict[str, Any],
    chaos: Chaos,
    wall: float,
    finished: bool,
) -> None:
    def bad(n: int) -> str:
        return f"[bold red]{n}[/]" if n else "[green]0[/]"

    term = result["term_times"]
    table = Table(title="agendapy chaos run", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "workers / kill every / lock lifetime / grace",
        f"{args.workers} / {args.kill_every:g} s / {args.lock_lifetime:g} s / {args.grace:g} s",
    )
    table.add_row(
        "state write window",
        "agendapy's default" if args.state_write_window is None else f"{args.state_write_window:g} s",
    )
    table.add_row("one-off jobs scheduled", str(result["scheduled"]))
    table.add_row("completed", str(result["completed"]))
    table.add_row("lost (never completed)", bad(len(result["lost"])))
    table.add_row("  of which failed", bad(result["failed"]))
    table.add_row("  of which stranded (unlocked, never due again)", bad(len(result["stranded"])))
    table.add_row("started twice (at-least-once after a kill)", str(len(result["started_twice"])))
    table.add_row("  resumed from a checkpoint", str(result["resumed_from_checkpoint"]))
    table.add_row("  handler finished twice (killed before its save)", str(len(result["finished_twice"])))
    table.add_row("completed twice (duplicate success)", bad(len(result["completed_twice"])))
    table.add_row("  success saved but job left locked", bad(result["locked_after_save"]))
    table.add_row("run again after completion", bad(len(result["after_completion"])))
    table.add_row("overlapping runs of one job", bad(len(result["overlaps"])))
    table.add_row("recurring runs (saved)", f"{result['recurring_runs']} ({result['recurring_saved']})")
    table.add_row("runs interrupted by SIGTERM grace expiry", str(result["interrupted"]))
    table.add_row("lock-lost events", str(result["lock_lost_events"]))
    if term:
        table.add_row(
            "SIGTERM exit time min / median / max",
            f"{term[0]:.2f} / {statistics.median(term):.2f} / {term[-1]:.2f} s",
        )
    else:
        table.add_row("SIGTERM exit time", "-")
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(chaos.sigterm_codes.items()))
    table.add_row("SIGTERMs (exit codes)", f"{len(term)} ({codes or '-'})")
    table.add_row(
        "SIGTERM exits over grace + 1 s / hung",
        f"{sum(t > args.grace + 1 for t in term)} / {len(chaos.sigterm_hung)}",
    )
    table.add_row("SIGKILLs", str(len(chaos.sigkills)))
    table.add_row("unexpected worker exits", bad(len(chaos.unexpected_exits)))
    outages = [b - a for a, b in chaos.db_restarts]
    table.add_row(
        "database restarts (outage max)", f"{len(outages)}" + (f" ({max(outages):.2f} s)" if outages else "")
    )
    table.add_row("agendapy sources (sha256)", result["digest"])
    table.add_row("wall time", f"{wall:.1f} s" + ("" if finished else " [red](limit reached)[/]"))
    console.print(table)


def report(
    console: Console,
    args: argparse.Namespace,
    docs: list[dict[str, Any]],
    records: list[dict[str, Any]],
    fleet: Fleet,
    end: float,
    wall: float,
    finished: bool,
    digest: str,
    workdir: Path,
) -> int:
    """Analyse, print the table, write chaos-report.json; the exit status (1 on any anomaly)."""
    result = analyse(args, docs, records, fleet.chaos, end)
    result["digest"] = digest
    print_report(console, args, result, fleet.chaos, wall, finished)
    report_path = workdir / "chaos-report.json"
    anomalies = {
        k: result[k]
        for k in ("lost", "stranded", "completed_twice", "after_completion", "overlaps", "failed_reasons")
    }
    anomalies["unexpected_exits"] = fleet.chaos.unexpected_exits
    anomalies["sigkills"] = fleet.chaos.sigkills
    anomalies["sigterms"] = fleet.chaos.sigterms
    anomalies["db_restarts"] = fleet.chaos.db_restarts
    anomalies["workers"] = {w.proc.pid: w.index for w in fleet.all_workers}
    anomalies["records_of_anomalies"] = [
        r
        for r in records
        if r["jobId"]
        in {a["jobId"] for key in ("overlaps", "completed_twice", "after_completion") for a in result[key]}
    ]
    anomalies["lost_docs"] = [
        {k: v for k, v in d.items() if k != "data"} | {"data": d.get("data")}
        for d in docs
        if str(d["_id"]) in set(result["lost"])
    ]
    report_path.write_text(json.dumps(anomalies, default=str, indent=1))
    console.print(f"details: {report_path} (worker logs in {workdir})")
    for key in ("completed_twice", "after_completion", "overlaps"):
        for item in result[key][:3]:
            console.print(f"[red]{key}[/]: {item}")
    for pid, code, tail in fleet.chaos.unexpected_exits[:3]:
        console.print(f"[red]worker {pid} exited with {code}[/]:\n{tail}")
    bad = (
        len(result["lost"])
        + len(result["completed_twice"])
        + len(result["after_completion"])
        + len(result["overlaps"])
    )
    return 1 if bad or not finished else 0


async def main(args: argparse.Namespace) -> int:
    if args.store == "postgres":
        return await main_postgres(args)
    console = Console()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="agendapy-chaos-"))
    (workdir / "chaosjobs.py").write_text(WORKER_MODULE)
    digest = source_digest(snapshot_sources(workdir))
    server = None
    if args.mongo_url:
        if args.restart_db_every:
            console.print("[red]--restart-db-every needs the embedded server (no --mongo-url)[/]")
            return 2
        base_url = args.mongo_url
    else:
        from agendapy.embedded import EmbeddedServer

        server = EmbeddedServer(workdir / "db")
        base_url = await server.astart()
    db_name = f"chaos_{uuid.uuid4().hex[:8]}"
    jobs_url = with_database(base_url, db_name)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(base_url, tz_aware=True)
    db = client[db_name]
    fleet = Fleet(args, workdir, jobs_url, db_name)
    console.log(f"work dir {workdir}; database {jobs_url}")
    try:
        await schedule_jobs(args, jobs_url, rng)
        console.log(f"scheduled {args.jobs} one-off and {args.recurring} recurring jobs")
        wall_start = time.time()
        for _ in range(args.workers):
            fleet.spawn()
        finished, _ = await chaos_loop(args, fleet, server, lambda: all_done(db.agendaJobs), console)
        # Leave the surviving fleet running a little longer, so a late duplicate (a stale lock
        # recovered after its lifetime) would still show up in the records.
        await asyncio.sleep(args.settle)
        await fleet.stop_all()
        wall = time.time() - wall_start
        end = time.time()
        docs = await retrying(lambda: db.agendaJobs.find({}).to_list())
        records = await retrying(lambda: db.runs.find({}).to_list())
        return report(console, args, docs, records, fleet, end, wall, finished, digest, workdir)
    finally:
        await fleet.stop_all()
        if not args.keep:
            with contextlib.suppress(Exception):
                await client.drop_database(db_name)
        await client.close()
        if server is not None:
            await server.astop()


class _RestartedByKill:
    """``server.restart`` for the chaos loop: SIGKILL the postmaster, then start the same cluster."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def restart(self) -> None:
        self.server.kill()
        self.server.restart()


#: The job row as the analysis reads it (the MongoDB document's field names).
_PG_DOCS = """
    SELECT id::text AS "_id", name, data, next_run_at AS "nextRunAt", locked_at AS "lockedAt",
           last_finished_at AS "lastFinishedAt", failed_at AS "failedAt", fail_reason AS "failReason"
    FROM agenda_jobs
"""
_PG_PENDING = """
    SELECT count(*) FROM agenda_jobs
    WHERE name = %s AND (last_finished_at IS NULL OR locked_at IS NOT NULL)
"""


def read_run_records(folder: Path) -> list[dict[str, Any]]:
    """The workers' run records: each file's lines are changes of one record, merged by ``rec``."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("runs-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                change = json.loads(line)
            except ValueError:
                continue  # the last line of a worker killed mid-write
            merged.setdefault(change.pop("rec"), {}).update(change)
    return [record for record in merged.values() if "start" in record]


async def main_postgres(args: argparse.Namespace) -> int:
    """The chaos run on PostgreSQL (``--store postgres``)."""
    import psycopg
    from psycopg.rows import dict_row

    sys.path.insert(0, str(TESTS_DIR))
    from pg_server import PostgresServer

    console = Console()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="agendapy-chaos-pg-"))
    (workdir / "chaosjobs.py").write_text(WORKER_MODULE_PG)
    (workdir / "runs").mkdir()
    digest = source_digest(snapshot_sources(workdir))
    server: PostgresServer | None = None
    if args.postgres_url:
        if args.restart_db_every:
            console.print("[red]--restart-db-every needs the harness's own server (no --postgres-url)[/]")
            return 2
        base_url = args.postgres_url
    else:
        server = PostgresServer(durable=True)
        await asyncio.to_thread(server.start)
        base_url = server.url
    db_name = f"chaos_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{db_name}"')
    jobs_url = with_database(base_url, db_name)
    fleet = Fleet(args, workdir, jobs_url, db_name)
    console.log(f"work dir {workdir}; database {jobs_url}")

    async def query(sql: str, *params: Any) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(
            jobs_url, autocommit=True, connect_timeout=5
        ) as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql, params)  # type: ignore[arg-type]
            return list(await cur.fetchall())

    async def pending() -> tuple[bool, int]:
        rows = await retrying(lambda: query(_PG_PENDING, TASK))
        count = int(rows[0]["count"])
        return count == 0, count

    try:
        await schedule_jobs(args, jobs_url, rng)
        console.log(f"scheduled {args.jobs} one-off and {args.recurring} recurring jobs")
        wall_start = time.time()
        for _ in range(args.workers):
            fleet.spawn()
        restarter = _RestartedByKill(server) if server is not None else None
        finished, _ = await chaos_loop(args, fleet, restarter, pending, console)
        await asyncio.sleep(args.settle)
        await fleet.stop_all()
        wall = time.time() - wall_start
        end = time.time()
        docs = await retrying(lambda: query(_PG_DOCS))
        records = read_run_records(workdir / "runs")
        return report(console, args, docs, records, fleet, end, wall, finished, digest, workdir)
    finally:
        await fleet.stop_all()
        if not args.keep:
            with contextlib.suppress(Exception):
                async with await psycopg.AsyncConnection.connect(base_url, autocommit=True) as admin:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if server is not None:
            await asyncio.to_thread(server.stop)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1000, help="one-off jobs")
    p.add_argument("--kill-every", type=float, default=2.0, help="seconds between kills (0: none)")
    p.add_argument("--restart-db-every", type=float, default=0.0, help="seconds between database restarts")
    p.add_argument("--duration-limit", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument(
        "--stall-limit",
        type=float,
        default=90.0,
        help="give up when no one-off job completes for this many seconds",
    )
    p.add_argument("--store", choices=("mongo", "postgres"), default="mongo", help="the job store (mongo)")
    p.add_argument("--mongo-url", default=None, help="use this server instead of an embedded SecantusDB")
    p.add_argument(
        "--postgres-url",
        default=None,
        help="with --store postgres: use this server instead of a temporary one (tests/pg_server.py)",
    )
    p.add_argument("--recurring", type=int, default=3, help="recurring jobs (every 1-3 s)")
    p.add_argument("--long-fraction", type=float, default=0.03, help="share of 2-5 s checkpointed jobs")
    p.add_argument("--lock-lifetime", type=float, default=3.0)
    p.add_argument("--grace", type=float, default=3.0)
    p.add_argument("--process-every", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=10, help="max_concurrency per worker")
    p.add_argument(
        "--state-write-window",
        type=float,
        default=None,
        help="seconds the workers' run writes gather before going out together (default: agendapy's)",
    )
    p.add_argument("--settle", type=float, default=4.0, help="seconds to keep running after the last job")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the database (with --mongo-url/--postgres-url)")
    p.add_argument(
        "--trace",
        action="store_true",
        help="write each worker's lock operations to trace-PID.jsonl (diagnosis)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
