"""Side-by-side benchmark: Node Agenda 6.2.6, APScheduler 4.0.0a6 and agendapy on the same server build.

    python benchmarks/compare.py [--quick | --full] [--mongo-url URL] [--only drain,latency,...]
    python benchmarks/compare.py --store postgres [--quick]    (PostgreSQL: see benchmarks/compare_pg.py)

Starts its own SecantusDB (``agendapy.embedded.EmbeddedServer`` in a temporary directory, and a fresh
one for every drain cell) unless ``--mongo-url`` is given, runs every workload through Node Agenda
(``benchmarks/node``, npm packages ``agenda@6.2.6`` + ``@agendajs/mongo-backend@4.0.3``), through
agendapy and, in the drains, through APScheduler 4 (``benchmarks/aps_worker.py``, ``MongoDBDataStore``),
and prints one table with every column and agendapy's ratio to each peer (">1x" = agendapy better). The
table is also written as markdown to ``benchmarks/results/compare-<date>-<time>.md``. Workloads (see
docs/performance.md):

* drain throughput: N one-off jobs whose handler does nothing or one ``update_one``, drained by 1 and by
  4 worker processes (20 jobs at once each), agendapy and Node at several ``process_every`` values, the
  best reported; jobs/s from the first worker's spawn and from the first claim; a cell that exceeds the
  time budget is stopped and reports its partial rate;
* database commands, commits (write statements) and server and worker CPU per job while draining,
  counted inside the worker processes;
* latency now() -> handler start on an idle worker with default settings (process_every 5 s);
* lock query cost at 10k/100k(/1M) documents, and ``explain`` of both libraries' lock queries;
* worker RSS with 100k due jobs;
* scheduling throughput: now() one at a time, and in bulk where the library has a bulk API.

Modes: ``--quick`` (10-15 minutes), default (45-70 minutes), ``--full`` (default + 1M documents).
Without ``node``/``npm``, or without ``apscheduler`` 4.0.0a6, that column is skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymongo
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.table import Table

import agendapy
from agendapy import Agenda

BENCH_DIR = Path(__file__).resolve().parent
NODE_DIR = BENCH_DIR / "node"
RESULTS_DIR = BENCH_DIR / "results"
DB_NAME = "agendapy_bench"
JOB = "bench-noop"
CLAIM_JOB = "bench-claim"
POLL_S = 0.1
CLAIM_TIME_CAP = 120.0  # seconds of claim timing per library and collection size, at most
SECTIONS = ("drain", "latency", "lock", "rss", "schedule")

console = Console(stderr=True, highlight=False)


# -- small helpers -------------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (query string kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def source_digest() -> str:
    """A short digest of the agendapy sources measured (the tree changes between runs)."""
    root = Path(agendapy.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def rss_of(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process in MB, from /proc."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process so far (from /proc), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.{max(digits - 1, 0)}f}" if digits > 1 else f"{value:.0f}"
    else:
        text = f"{value:.{digits}f}" if abs(value) >= 1 or value == 0 else f"{value:.{digits + 1}g}"
    return f"{text}{unit}"


def fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def breakdown(counts: Mapping[str, float], per: float, digits: int = 2, limit: int = 6) -> str:
    """``findAndModify 1.02, update 2.00`` — the biggest entries first, each divided by ``per``."""
    if not counts or per <= 0:
        return ""
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{name} {value / per:.{digits}f}" for name, value in items)


# -- processes -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Worker:
    lib: str
    name: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    counts_file: Path | None
    spawned_at: float  # epoch seconds

    def ready_at(self) -> float | None:
        """Epoch seconds of the worker's ready line, if printed."""
        try:
            text = self.out_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and msg.get("event") == "ready":
                    return float(msg["t"]) / 1000.0
        return None

    def warnings(self) -> list[str]:
        """Warning and error lines the worker logged (its own stop messages left out)."""
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return []
        found = []
        for line in text.splitlines():
            if any(word in line for word in ("WARNING", "ERROR", "Error", "error")) and not any(
                quiet in line for quiet in ("received SIGTERM", "received SIGINT")
            ):
                found.append(" ".join(line.split()))
        return found

    def tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self.err_path, self.out_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append("\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no output)"


class Processes:
    """Every child this harness starts, so none outlives it."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def track(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.children.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    proc.wait(5)


# -- settings ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    mode: str
    budget: float
    drain_ns: list[int]
    workers: list[int]
    handlers: list[str]
    fresh_servers: bool
    node_pe: list[float]
    py_pe: list[float]
    concurrency: int
    latency_jobs: int
    gap_ms: tuple[float, float]
    schedule_jobs: int
    lock_sizes: list[int]
    rss_docs: int
    rss_wait: float
    claims: dict[int, int]
    sections: list[str]
    seed: int
    py_options: dict[str, Any]


HANDLERS = ("noop", "counter")  # the handler bodies: nothing; one update_one ($inc of a counter)


def handlers(text: str | None) -> list[str]:
    chosen = list(HANDLERS) if not text else [h.strip() for h in text.split(",") if h.strip()]
    unknown = sorted(set(chosen) - set(HANDLERS))
    if unknown:
        raise SystemExit(f"--handlers: unknown {', '.join(unknown)}; known: {', '.join(HANDLERS)}")
    return chosen


def make_settings(args: argparse.Namespace) -> Settings:
    mode = "quick" if args.quick else "full+1M" if args.full else "full"
    quick = args.quick

    def ints(text: str | None, default: list[int]) -> list[int]:
        return default if not text else [int(float(x)) for x in text.split(",") if x]

    def floats(text: str | None, default: list[float]) -> list[float]:
        return default if not text else [float(x) for x in text.split(",") if x]

    lock_default = [10_000] if quick else [10_000, 100_000] + ([1_000_000] if args.full else [])
    sections = SECTIONS if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return Settings(
        mode=mode,
        budget=args.budget if args.budget else (30.0 if quick else 120.0),
        drain_ns=ints(args.drain_n, [100, 300] if quick else [100, 300, 1000]),
        workers=ints(args.workers, [1, 4]),
        handlers=handlers(args.handlers),
        fresh_servers=not args.mongo_url,
        node_pe=floats(args.node_process_every, [0.1, 1.0]),
        py_pe=floats(args.py_process_every, [1.0] if quick else [0.1, 1.0]),
        concurrency=args.concurrency,
        latency_jobs=args.latency_jobs or (50 if quick else 200),
        gap_ms=(20.0, 200.0),
        schedule_jobs=args.schedule_jobs or (200 if quick else 1000),
        lock_sizes=ints(args.lock_sizes, lock_default),
        rss_docs=args.rss_docs or (10_000 if quick else 100_000),
        rss_wait=5.0 if quick else 10.0,
        claims={10_000: 10, 100_000: 4, 1_000_000: 2} if not quick else {10_000: 6},
        sections=list(sections),
        seed=args.seed,
        py_options=json.loads(args.py_options) if args.py_options else {},
    )


# -- the harness ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DrainResult:
    lib: str
    n: int
    workers: int
    pe: float
    done: int
    elapsed: float
    complete: bool
    startup: float | None
    counts: dict[str, int]
    ms: dict[str, float]
    poll_ms: float
    locked: int = 0
    counted: int = 0  # workers whose command counts were read
    server_cpu: float | None = None  # seconds of the database server's CPU during the cell
    worker_cpu: float | None = None  # seconds of CPU of the worker processes, summed
    error: str | None = None
    handler: str = "noop"
    load: str = ""  # the 1-minute load average when the cell ended
    from_claim: float | None = None  # seconds from the first claim command to the last finish
    statements: dict[str, int] = dataclasses.field(default_factory=dict)
    by_collection: dict[str, int] = dataclasses.field(default_factory=dict)
    per_worker: list[dict[str, int]] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def claim_rate(self) -> float:
        """Jobs per second from the first claim (process start-up left out)."""
        if not self.from_claim or self.from_claim <= 0:
            return math.nan
        return self.done / self.from_claim

    def own_commits(self) -> float:
        """Write statements per job sent by the library (the handler's own update left out)."""
        if not self.done or self.counted != self.workers:
            return math.nan
        handler = sum(v for k, v in self.by_collection.items() if k.endswith(" bench_counter"))
        return (sum(self.statements.values()) - handler) / self.done

    def commands_per_job(self) -> float:
        if not self.done or self.counted != self.workers:
            return math.nan
        return sum(self.counts.values()) / self.done


@dataclasses.dataclass
class Row:
    section: str
    label: str
    node: str
    py: str
    ratio: str
    notes: str = ""
    aps: str = "—"
    ratio_aps: str = ""


class Harness:
    def __init__(
        self,
        url: str,
        settings: Settings,
        node_ok: bool,
        workdir: Path,
        server_pid: int | None = None,
        aps_ok: bool = False,
    ) -> None:
        self.aps_ok = aps_ok
        self.server_pid = server_pid
        self.url = with_database(url, DB_NAME)
        self.settings = settings
        self.node_ok = node_ok
        self.workdir = workdir
        self.procs = Processes()
        self.client: MongoClient[dict[str, Any]] = MongoClient(self.url, tz_aware=True)
        self.db = self.client[DB_NAME]
        self.rows: list[Row] = []
        self.details: list[str] = []
        self.drains: list[DrainResult] = []
        self.spawned = 0
        self.rng = random.Random(settings.seed)
        self.timings: dict[str, float] = {}

    # -- infrastructure ----------------------------------------------------------------------------

    def missing_node(self) -> str:
        return "skipped" if not self.node_ok else "failed"

    def libs(self) -> list[str]:
        return ["node", "py"] if self.node_ok else ["py"]

    def drain_libs(self) -> list[str]:
        return (["node"] if self.node_ok else []) + (["aps"] if self.aps_ok else []) + ["py"]

    @contextlib.contextmanager
    def cell_server(self, label: str) -> Iterable[None]:
        """A fresh embedded server for one drain cell (unless --mongo-url): no cell pays for the
        files, caches or queued work an earlier one left, and the server's CPU is this cell's."""
        if not self.settings.fresh_servers:
            yield
            return
        from agendapy.embedded import EmbeddedServer

        saved = (self.url, self.client, self.db, self.server_pid)
        data_dir = self.workdir / f"db-{label}"
        server = EmbeddedServer(data_dir)
        try:
            self.url = with_database(server.start(), DB_NAME)
            self.client = MongoClient(self.url, tz_aware=True)
            self.db = self.client[DB_NAME]
            self.server_pid = server.pid
            yield
        finally:
            with contextlib.suppress(Exception):
                self.client.close()
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
            self.url, self.client, self.db, self.server_pid = saved

    def fresh(self, *names: str) -> None:
        for name in names:
            self.db.drop_collection(name)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the server writes promptly again: a killed client's queries may still be running
        (SecantusDB finishes them), and the next measurement must not pay for them."""
        probe = self.db["bench_probe"]
        started = time.monotonic()
        fast = 0
        while fast < 3 and time.monotonic() - started < timeout:
            t = time.perf_counter()
            try:
                probe.insert_one({"t": t})
                probe.delete_many({})
            except Exception:
                fast = 0
                time.sleep(0.2)
                continue
            fast = fast + 1 if time.perf_counter() - t < 0.03 else 0
            time.sleep(0.05)
        waited = time.monotonic() - started
        if waited > 2:
            console.print(f"[dim]waited {waited:.1f} s for the server to settle[/]")

    def prepare_collection(self, lib: str, name: str) -> None:
        """The indexes each library creates on connect, created up front (not timed)."""
        self.fresh(name)
        if lib == "py":

            async def connect() -> None:
                agenda = Agenda(self.url, collection=name, name="bench-setup")
                try:
                    await agenda.connect()
                finally:
                    await agenda.close()

            asyncio.run(connect())
        else:
            self.db[name].create_index(
                [("name", 1), ("nextRunAt", 1), ("priority", -1), ("lockedAt", 1), ("disabled", 1)],
                name="findAndLockNextJobIndex",
            )

    def job_docs(self, lib: str, name: str, count: int, start: int = 0) -> list[dict[str, Any]]:
        """Documents as each library's now() writes them (due now)."""
        now = datetime.now(UTC)
        if lib == "py":
            from agendapy.store.schema import document_from_job

            agenda = Agenda(self.url, name="bench-client")
            docs = []
            for i in range(start, start + count):
                job = agenda.create(name, {"i": i})
                job.last_modified_by = "bench-client"
                job.next_run_at = now
                docs.append(document_from_job(job))
            return docs
        # Node Agenda 6.2.6's saveJob for now() (checked against `node client.mjs shape`).
        return [
            {
                "name": name, "data": {"i": i}, "type": "normal", "priority": 0, "nextRunAt": now,
                "lockedAt": None, "lastFinishedAt": None, "failedAt": None, "failCount": None,
                "failReason": None, "repeatTimezone": None, "lastRunAt": None, "repeatInterval": None,
                "repeatAt": None, "disabled": None, "progress": None, "debounceStartedAt": None,
                "fork": None, "startDate": None, "endDate": None, "skipDays": None,
                "lastModifiedBy": "node-client",
            }
            for i in range(start, start + count)
        ]  # fmt: skip

    def insert_jobs(self, lib: str, collection: str, name: str, count: int, batch: int = 5000) -> float:
        started = time.perf_counter()
        for start in range(0, count, batch):
            docs = self.job_docs(lib, name, min(batch, count - start), start)
            self.db[collection].insert_many(docs, ordered=False)
        return time.perf_counter() - started

    def spawn(
        self,
        lib: str,
        collection: str,
        *,
        job_name: str = JOB,
        process_every: float | None = None,
        concurrency: int | None = None,
        results: str | None = None,
        count_commands: bool = False,
        node_change_streams: bool = False,
        handler: str = "noop",
    ) -> Worker:
        index = self.spawned
        self.spawned += 1
        name = f"{lib}-w{index}"
        out_path = self.workdir / f"{name}.out"
        err_path = self.workdir / f"{name}.err"
        counts_file = self.workdir / f"{name}.counts.json" if count_commands else None
        if lib == "aps":
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_HANDLER": handler}
            if counts_file:
                env["BENCH_COUNTS_FILE"] = str(counts_file)
            command = [
                sys.executable, str(BENCH_DIR / "aps_worker.py"), "--url", self.url, "--database", DB_NAME,
                "--name", name, "--max-concurrent-jobs", str(concurrency or self.settings.concurrency),
            ]  # fmt: skip
            cwd = BENCH_DIR
        elif lib == "py":
            env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "BENCH_COLLECTION": collection,
                "BENCH_JOB_NAME": job_name,
                "BENCH_HANDLER": handler,
            }
            for key in ("BENCH_PROCESS_EVERY", "BENCH_MAX_CONCURRENCY", "BENCH_DEFAULT_CONCURRENCY"):
                env.pop(key, None)
            if process_every is not None:
                env["BENCH_PROCESS_EVERY"] = str(process_every)
            if concurrency is not None:
                env["BENCH_MAX_CONCURRENCY"] = str(concurrency)
                env["BENCH_DEFAULT_CONCURRENCY"] = str(concurrency)
            if results:
                env["BENCH_RESULTS"] = results
            if counts_file:
                env["BENCH_COUNTS_FILE"] = str(counts_file)
            if self.settings.py_options:
                env["BENCH_AGENDA_OPTIONS"] = json.dumps(self.settings.py_options)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
            command = [
                sys.executable, "-m", "agendapy", "worker", "bench_worker:agenda",
                "--mongo-url", self.url, "--name", name, "--grace", "2", "--log-level", "WARNING",
            ]  # fmt: skip
            cwd = BENCH_DIR
        else:
            env = {**os.environ, "BENCH_HANDLER": handler}
            command = [
                "node", str(NODE_DIR / "worker.mjs"), "--url", self.url, "--collection", collection,
                "--job-name", job_name, "--name", name,
            ]  # fmt: skip
            if process_every is not None:
                command += ["--process-every", str(round(process_every * 1000))]
            if concurrency is not None:
                command += ["--max-concurrency", str(concurrency), "--default-concurrency", str(concurrency)]
            if results:
                command += ["--results", results]
            if counts_file:
                command += ["--counts-file", str(counts_file)]
            if node_change_streams:
                command += ["--change-streams"]
            cwd = NODE_DIR
        with out_path.open("wb") as out, err_path.open("wb") as err:
            spawned_at = time.time()
            proc = self.procs.track(
                subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            )
        return Worker(lib, name, proc, out_path, err_path, counts_file, spawned_at)

    def wait_ready(self, workers: Iterable[Worker], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(workers)
        while pending:
            for worker in list(pending):
                if worker.ready_at() is not None:
                    pending.remove(worker)
                elif worker.proc.poll() is not None:
                    raise RuntimeError(
                        f"{worker.name} exited with {worker.proc.returncode}:\n{worker.tail()}"
                    )
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{pending[0].name} not ready after {timeout:g} s:\n{pending[0].tail()}")
            time.sleep(0.05)

    def stop(
        self, workers: Sequence[Worker], term_wait: float = 10.0
    ) -> tuple[dict[str, int], dict[str, float], int]:
        """Freeze the command counters (SIGUSR2), then stop the workers; returns the summed counts
        and how many workers' counts were read (each worker's whole file in ``self.snapshots``)."""
        counts: Counter[str] = Counter()
        ms: Counter[str] = Counter()
        counted = 0
        self.snapshots: list[dict[str, Any]] = []
        counting = [w for w in workers if w.counts_file is not None and w.proc.poll() is None]
        for worker in counting:
            with contextlib.suppress(OSError):
                worker.proc.send_signal(signal.SIGUSR2)
        for worker in counting:
            assert worker.counts_file is not None
            deadline = time.monotonic() + 10
            while not worker.counts_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            try:
                data = json.loads(worker.counts_file.read_text())
            except (OSError, ValueError) as exc:
                console.print(f"[yellow]no command counts from {worker.name}: {exc}[/]")
                continue
            counts.update({k: int(v) for k, v in data.get("counts", {}).items()})
            ms.update({k: float(v) for k, v in data.get("ms", {}).items()})
            self.snapshots.append(data)
            counted += 1
        for worker in workers:
            if worker.proc.poll() is None:
                with contextlib.suppress(OSError):
                    worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + term_wait
        for worker in workers:
            while worker.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        return dict(counts), dict(ms), counted

    # -- drain -----------------------------------------------------------------------------------------

    def drain_cell(self, lib: str, n: int, workers: int, pe: float, handler: str = "noop") -> DrainResult:
        """One drain cell on its own fresh server (see ``cell_server``)."""
        label = f"{lib}-{handler}-{n}-{workers}w-{round(pe * 1000)}ms"
        with self.cell_server(label):
            return self._drain_cell(lib, n, workers, pe, handler)

    def _prepare_drain(self, lib: str, collection: str, n: int) -> None:
        if lib == "aps":
            sys.path.insert(0, str(BENCH_DIR))
            try:
                import aps_worker
            finally:
                sys.path.remove(str(BENCH_DIR))
            for name in ("tasks", "jobs", "job_results", "schedules", "bench_counter"):
                self.db.drop_collection(name)
            asyncio.run(aps_worker.add_jobs(self.url, DB_NAME, n))
            return
        self.prepare_collection(lib, collection)
        self.insert_jobs(lib, collection, JOB, n)
        self.db.drop_collection("bench_counter")

    def _drain_cell(self, lib: str, n: int, workers: int, pe: float, handler: str) -> DrainResult:
        s = self.settings
        collection = "jobs" if lib == "aps" else f"drain_{lib}_{n}_{workers}w_{round(pe * 1000)}ms"
        self._prepare_drain(lib, collection, n)
        col = self.db[collection]
        if lib == "aps" or (lib == "py" and s.py_options.get("remove_on_complete")):
            # APScheduler deletes a job when it releases it (results are not kept), as agendapy does
            # with remove_on_complete.

            def count_done() -> int:
                return n - col.count_documents({})
        else:

            def count_done() -> int:
                return col.count_documents({"name": JOB, "lastFinishedAt": {"$ne": None}})

        poll_times: list[float] = []
        fleet: list[Worker] = []
        error = None
        done = 0
        locked = 0
        server_cpu0 = cpu_seconds(self.server_pid)
        started = time.time()
        try:
            fleet = [
                self.spawn(
                    lib, collection, process_every=pe, concurrency=s.concurrency, count_commands=True,
                    handler=handler,
                )
                for _ in range(workers)
            ]  # fmt: skip
            complete = False
            while True:
                t = time.perf_counter()
                # A jammed server (SecantusDB behind a pile of Node claims) may queue the poll for
                # long: never wait past the budget for it.
                left = max(1.0, s.budget - (time.time() - started) + 1.0)
                try:
                    with pymongo.timeout(left):
                        done = count_done()
                except PyMongoError as exc:
                    if not getattr(exc, "timeout", False):
                        raise
                took = time.perf_counter() - t
                poll_times.append(took)
                now = time.time()
                if done >= n:
                    complete = True
                    break
                if now - started > s.budget:
                    try:
                        with pymongo.timeout(15):
                            locked = (
                                col.count_documents({"acquired_by": {"$exists": True}})
                                if lib == "aps"
                                else col.count_documents({"name": JOB, "lockedAt": {"$ne": None}})
                            )
                    except PyMongoError:
                        locked = -1  # unknown: the server did not answer in time
                    break
                dead = [w for w in fleet if w.proc.poll() is not None]
                if dead:
                    error = f"{dead[0].name} exited with {dead[0].proc.returncode}: {dead[0].tail(5)}"
                    break
                # Every 100 ms, but polling at most a tenth of the time: on a server that scans for
                # the count and serialises queries (SecantusDB) frequent polls would slow the workers.
                # The end time is the last finish the workers wrote, so the interval does not change it.
                budget_left = s.budget - (time.time() - started)
                time.sleep(min(max(POLL_S - took, 9 * took), 2.0, max(budget_left, 0.0) + 0.05))
            ended = time.time()
            server_cpu1 = cpu_seconds(self.server_pid)
            worker_cpus = [cpu_seconds(w.proc.pid) for w in fleet]
            # What the workers logged while measured (not their shutdown messages).
            warnings = {w.name: w.warnings() for w in fleet}
            counts, ms, counted = self.stop(fleet, term_wait=5.0)
        except BaseException:
            self.stop(fleet, term_wait=2.0)
            raise
        snapshots = list(self.snapshots)
        if complete:
            # The precise end: the last finish the workers wrote (same machine clock).
            if lib == "aps":
                last_releases = [d.get("last_release") for d in snapshots if d.get("last_release")]
                if last_releases and len(snapshots) == workers:
                    ended = min(ended, max(last_releases))
            else:
                last = col.find_one(
                    {"name": JOB, "lastFinishedAt": {"$ne": None}},
                    sort=[("lastFinishedAt", -1)],
                    projection={"lastFinishedAt": 1},
                )
                if last and isinstance(last.get("lastFinishedAt"), datetime):
                    ended = min(ended, last["lastFinishedAt"].timestamp())
        # The first claim: the first read of the jobs collection by any worker (Node's claim is a
        # findAndModify; agendapy's a find or findAndModify; APScheduler's a find on ``jobs``).
        firsts = [
            t
            for d in snapshots
            for key, t in d.get("first", {}).items()
            if key in (f"find {collection}", f"findAndModify {collection}")
        ]
        first_claim = min(firsts) if firsts else None
        for worker in fleet:
            warned = warnings.get(worker.name, [])
            if warned:
                note = f"{lib} N={n} {workers}w pe {pe:g}: {worker.name} logged {len(warned)} warning(s)"
                console.print(f"[yellow]{note}, first: {warned[0][:300]}[/]")
                self.details.append(f"{note}: {warned[0][:500]}")
        ready = [w.ready_at() for w in fleet]
        startup = max(r - started for r in ready) if ready and all(r is not None for r in ready) else None
        statements: Counter[str] = Counter()
        by_collection: Counter[str] = Counter()
        for d in snapshots:
            statements.update({k: int(v) for k, v in d.get("statements", {}).items()})
            by_collection.update({k: int(v) for k, v in d.get("by_collection", {}).items()})
        if not s.fresh_servers:
            self.fresh(collection)
            self.settle()
        return DrainResult(
            lib=lib,
            n=n,
            workers=workers,
            pe=pe,
            done=done,
            elapsed=max(ended - started, 1e-6),
            complete=complete,
            startup=startup,
            counts=counts,
            ms=ms,
            poll_ms=statistics.mean(poll_times) * 1000 if poll_times else math.nan,
            locked=locked,
            counted=counted,
            server_cpu=None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0,
            worker_cpu=None if None in worker_cpus else sum(c for c in worker_cpus if c is not None),
            error=error,
            handler=handler,
            load=f"{os.getloadavg()[0]:.2f}",
            from_claim=None if first_claim is None or not complete else max(ended - first_claim, 1e-6),
            statements=dict(statements),
            by_collection=dict(by_collection),
            per_worker=[{k: int(v) for k, v in d.get("by_collection", {}).items()} for d in snapshots],
        )

    def run_drain(self) -> None:
        s = self.settings
        for handler in s.handlers:
            for n in s.drain_ns:
                for workers in s.workers:
                    cells: dict[str, list[DrainResult]] = {}
                    for lib in self.drain_libs():
                        pes = {"node": s.node_pe, "py": s.py_pe}.get(lib, [0.0])
                        for pe in pes:
                            label = f"drain {handler:7} {lib:4} N={n:<5} {workers}w pe={pe:g}s"
                            try:
                                result = self.drain_cell(lib, n, workers, pe, handler)
                            except Exception as exc:
                                console.print(f"[red]{label}: failed: {exc}[/]")
                                continue
                            self.drains.append(result)
                            cells.setdefault(lib, []).append(result)
                            state = (
                                ""
                                if result.complete
                                else f" [yellow]stopped: {result.done}/{n} done, {result.locked} locked[/]"
                            )
                            if result.error:
                                state += f" [red]{result.error[:200]}[/]"
                            console.print(
                                f"{label}: {result.rate:6.1f} jobs/s in {fmt_s(result.elapsed)}, "
                                f"{result.claim_rate:6.1f} from the first claim, "
                                f"{result.own_commits():.2f} commits/job, load {load_average()}{state}"
                            )
                            if workers > 1 and result.per_worker:
                                per = "; ".join(
                                    f"w{i}: " + breakdown(dict(c), result.done / workers, 2, 5)
                                    for i, c in enumerate(result.per_worker)
                                )
                                self.details.append(
                                    f"{lib} {handler} N={n} {workers}w pe {pe:g} s, commands per job per "
                                    f"worker (each worker's count / (N/workers)): {per}"
                                )
                    self.rows.append(self.drain_row(n, workers, cells, handler))

    def drain_row(self, n: int, workers: int, cells: dict[str, list[DrainResult]], handler: str) -> Row:
        best = {lib: max(results, key=lambda r: r.rate) for lib, results in cells.items() if results}

        def cell(lib: str) -> str:
            r = best.get(lib)
            if r is None:
                return "skipped" if lib == "node" and not self.node_ok else "failed"
            star = "" if r.complete else "*"
            pe = f"; pe {r.pe:g} s" if lib != "aps" else ""
            return f"{fmt(r.rate)}{star} / {fmt(r.claim_rate)} ({r.own_commits():.2f} c/job{pe})"

        names = {"node": "Node", "py": "agendapy", "aps": "APScheduler"}
        notes = []
        for lib, results in cells.items():
            parts = []
            for r in results:
                text = (
                    f"pe {r.pe:g} s: {fmt(r.rate)}/s in {fmt_s(r.elapsed)}"
                    if lib != "aps"
                    else (f"{fmt(r.rate)}/s in {fmt_s(r.elapsed)}")
                )
                if not r.complete:
                    locked = "?" if r.locked < 0 else str(r.locked)
                    text += f", stopped with {r.done}/{r.n} finished, {locked} locked"
                parts.append(text)
            startups = [r.startup for r in results if r.startup is not None]
            start = f"; start-up {fmt_s(max(startups))}" if startups else ""
            notes.append(f"{names[lib]}: {'; '.join(parts)}{start}")

        def ratio(other: str) -> str:
            if other not in best or "py" not in best:
                return ""
            rate = best[other].rate
            text = f"{best['py'].rate / rate:.2f}x" if rate > 0 else "inf (finished none)"
            claim = best[other].claim_rate
            if claim > 0 and not math.isnan(claim) and not math.isnan(best["py"].claim_rate):
                text += f" / {best['py'].claim_rate / claim:.2f}x"
            if not best[other].complete or not best["py"].complete:
                text += "*"
            return text

        w = f"{workers} worker{'s' if workers > 1 else ''}"
        return Row(
            "drain", f"drain N={n}, {w}, {handler} handler (jobs/s)", cell("node"), cell("py"),
            ratio("node"), " | ".join(notes), aps=cell("aps") if self.aps_ok else "skipped",
            ratio_aps=ratio("aps"),
        )  # fmt: skip

    def commands_rows(self) -> None:
        """Commands, commits and CPU per job from the drain cells: per handler and worker count, at the
        largest N every library finished something at, process_every 1 s where a library ran there."""
        names = {"node": "Node", "py": "agendapy", "aps": "APScheduler"}
        for handler in self.settings.handlers:
            for workers in self.settings.workers:
                usable = [
                    r
                    for r in self.drains
                    if r.workers == workers and r.handler == handler and r.done > 0 and r.counted == workers
                ]
                libs = [lib for lib in self.drain_libs() if any(r.lib == lib for r in usable)]
                ns = [n for n in sorted({r.n for r in usable}, reverse=True)
                      if all(any(r.lib == lib and r.n == n for r in usable) for lib in libs)]  # fmt: skip
                if not ns:
                    continue
                chosen: dict[str, DrainResult] = {}
                for lib in libs:
                    runs = [r for r in usable if r.lib == lib and r.n == ns[0]]
                    at_1s = [r for r in runs if abs(r.pe - 1.0) < 1e-9]
                    chosen[lib] = at_1s[0] if at_1s else max(runs, key=lambda r: r.rate)
                w = f"{workers} worker{'s' if workers > 1 else ''}, {handler}, N={ns[0]}"
                metrics: list[tuple[str, Callable[[DrainResult], float | None], str]] = [
                    ("DB commands per job", lambda r: r.commands_per_job(), "by command and collection"),
                    ("commits per job (write statements, the library's own)", lambda r: r.own_commits(),
                     "each update/delete statement, inserted document and findAndModify; the handler's "
                     "own update left out"),
                    ("database server CPU per job (ms)",
                     lambda r: None if r.server_cpu is None else r.server_cpu * 1000.0 / r.done,
                     "the server process's user+system CPU during the drain, divided by jobs done"),
                    ("worker CPU per job (ms)",
                     lambda r: None if r.worker_cpu is None else r.worker_cpu * 1000.0 / r.done,
                     "the worker processes' user+system CPU, summed"),
                ]  # fmt: skip
                for label, metric, what in metrics:
                    values: dict[str, float] = {}
                    for lib, r in chosen.items():
                        value = metric(r)
                        if value is not None and not math.isnan(value):
                            values[lib] = value
                    notes = what
                    if label.startswith("DB commands"):
                        notes += " | " + " | ".join(
                            f"{names[lib]}: {breakdown(r.by_collection, r.done, 2, 8)}"
                            for lib, r in chosen.items()
                        )
                    self.rows.append(Row(
                        "commands", f"{label}, {w}", self._metric_cell("node", values, chosen),
                        self._metric_cell("py", values, chosen), _ratio(values, "node"), notes,
                        aps=self._metric_cell("aps", values, chosen), ratio_aps=_ratio(values, "aps"),
                    ))  # fmt: skip

    def _metric_cell(self, lib: str, values: dict[str, float], chosen: dict[str, DrainResult]) -> str:
        if lib not in values:
            return "skipped" if lib not in self.drain_libs() else "n/a"
        r = chosen[lib]
        return f"{values[lib]:.2f}" + (f" (pe {r.pe:g} s)" if lib != "aps" else "")

    # -- latency -----------------------------------------------------------------------------------------

    def run_latency(self) -> None:
        s = self.settings
        gaps = [self.rng.uniform(*s.gap_ms) for _ in range(s.latency_jobs)]
        stats: dict[str, dict[str, float]] = {}
        variants = [(lib, False) for lib in self.libs()]
        if self.node_ok:
            variants.append(("node", True))  # Node's opt-in change-stream channel, for reference
        for lib, node_cs in variants:
            key = "node-cs" if node_cs else lib
            collection, results = f"latency_{key}", f"latency_results_{key}"
            self.prepare_collection(lib, collection)
            self.fresh(results)
            # Library defaults: process_every 5 s, default concurrency.
            worker = self.spawn(lib, collection, results=results, node_change_streams=node_cs)
            try:
                self.wait_ready([worker])
                time.sleep(1.0)
                if lib == "py":
                    asyncio.run(self._py_latency_producer(collection, gaps))
                else:
                    self._node_client("latency", collection, ["--gaps", ",".join(f"{g:.0f}" for g in gaps)])
                deadline = time.monotonic() + 30
                while self.db[results].count_documents({}) < len(gaps) and time.monotonic() < deadline:
                    time.sleep(0.2)
            finally:
                self.stop([worker])
            records = list(self.db[results].find({}, {"t0": 1, "t1": 1}))
            lat = [r["t1"] - r["t0"] for r in records if r.get("t0") is not None]
            if lat:
                stats[key] = {
                    "p50": percentile(lat, 50),
                    "p99": percentile(lat, 99),
                    "mean": statistics.mean(lat),
                    "max": max(lat),
                    "n": len(lat),
                    "missing": len(gaps) - len(lat),
                }
                console.print(
                    f"latency {key:7}: p50 {stats[key]['p50']:.0f} ms, p99 {stats[key]['p99']:.0f} ms "
                    f"({len(lat)} jobs, {len(gaps) - len(lat)} missing)"
                )
            self.fresh(collection, results)
        gap_note = (
            f"{len(gaps)} jobs, gaps {s.gap_ms[0]:g}-{s.gap_ms[1]:g} ms (one client, one now() at a time)"
        )
        names = {"node": "Node", "py": "agendapy", "node-cs": "Node + change-stream channel"}

        def describe(key: str) -> str:
            st = stats[key]
            text = f"{names[key]}: mean {st['mean']:,.0f} ms, max {st['max']:,.0f} ms, {st['n']:.0f} jobs"
            return text + (f", {st['missing']:.0f} never started" if st["missing"] else "")

        for node_key, label in (("node", "defaults"), ("node-cs", "Node with its opt-in change streams")):
            for q in ("p50", "p99"):
                if node_key == "node-cs" and node_key not in stats:
                    continue
                cells = {k: f"{st[q]:,.0f} ms" for k, st in stats.items()}
                ratio = ""
                if node_key in stats and "py" in stats and stats["py"][q] > 0:
                    ratio = f"{stats[node_key][q] / stats['py'][q]:.2f}x"
                if node_key == "node":
                    notes = (
                        " | ".join(describe(k) for k in ("node", "py") if k in stats)
                        if q == "p50"
                        else gap_note
                    )
                else:
                    notes = (
                        "Node worker with MongoChangeStreamNotificationChannel (notifyVia), agendapy as above"
                        + (f" | {describe('node-cs')}" if q == "p50" else "")
                    )
                self.rows.append(Row(
                    "latency", f"now() -> handler start {q} (idle worker, {label})",
                    cells.get(node_key, self.missing_node()), cells.get("py", "failed"), ratio, notes,
                ))  # fmt: skip

    async def _py_latency_producer(self, collection: str, gaps: list[float]) -> None:
        agenda = Agenda(self.url, collection=collection, name="bench-client")
        try:
            await agenda.connect()
            for i, gap in enumerate(gaps):
                await agenda.now(JOB, {"t0": time.time() * 1000.0, "i": i})
                await asyncio.sleep(gap / 1000.0)
        finally:
            await agenda.close()

    def _node_client(
        self, mode: str, collection: str, extra: list[str], timeout: float = 600
    ) -> dict[str, Any]:
        command = ["node", str(NODE_DIR / "client.mjs"), mode, "--url", self.url, "--collection", collection]
        result = subprocess.run(
            command + extra, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"node client.mjs {mode} failed ({result.returncode}): {result.stderr[-2000:]}"
            )
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    # -- lock query cost ---------------------------------------------------------------------------------

    def run_lock(self) -> None:
        s = self.settings
        sizes = sorted(set(s.lock_sizes))
        rss_done = False
        for size in sizes:
            collection = f"lock_{size}"
            self.prepare_collection("py", collection)  # agendapy's indexes include Agenda's
            console.print(f"lock query: inserting {size:,} due jobs ...")
            took = self.insert_jobs("node", collection, CLAIM_JOB, size)
            console.print(f"lock query: inserted {size:,} in {took:.1f} s")
            k = s.claims.get(size, 2)
            times: dict[str, list[float]] = {}
            batches: list[tuple[float, int]] = []
            try:
                times["py"], batches = asyncio.run(self._py_claims(collection, k))
            except Exception as exc:
                console.print(f"[red]agendapy claim timing failed: {exc}[/]")
            if self.node_ok:
                try:
                    times["node"] = self._node_client(
                        "claim", collection, ["--job-name", CLAIM_JOB, "--count", str(k)]
                    )["times"]
                except Exception as exc:
                    console.print(f"[red]node claim timing failed: {exc}[/]")
            plans = self.explain_claims(collection)
            med = {lib: statistics.median(t) for lib, t in times.items() if t}
            for lib, t in med.items():
                console.print(
                    f"lock query {lib:4} at {size:,}: median {t:.1f} ms over {len(times[lib])} claims"
                )
            ratio = f"{med['node'] / med['py']:.2f}x" if "node" in med and "py" in med else ""
            note = f"one job per claim, median of {k}; all {size:,} documents due and unlocked"
            if batches:
                per_call = statistics.median(t for t, _ in batches)
                claimed = sum(c for _, c in batches)
                per_job = sum(t for t, _ in batches) / claimed if claimed else math.nan
                note += (
                    f"; agendapy batched claim (limit {s.concurrency}): {per_call:,.1f} ms per call, "
                    f"{per_job:,.1f} ms per job ({claimed} jobs in {len(batches)} calls)"
                )
                console.print(
                    f"lock query py   at {size:,}: batched {per_call:.1f} ms per call, "
                    f"{per_job:.1f} ms per job"
                )
            self.rows.append(Row(
                "lock", f"time per claim at {size:,} docs (ms)",
                f"{med['node']:,.1f}" if "node" in med else ("skipped" if not self.node_ok else "failed"),
                f"{med['py']:,.1f}" if "py" in med else "failed", ratio, note,
            ))  # fmt: skip
            self.rows.append(Row(
                "lock", f"explain of the claim query at {size:,} docs",
                plans.get("node", ""), plans.get("py", ""), "",
                "plan, docs examined / keys examined / returned (explain of find + sort + limit 1)",
            ))  # fmt: skip
            if "rss" in s.sections and size == s.rss_docs:
                self.run_rss(collection, size)
                rss_done = True
            self.fresh(collection)
        if "rss" in s.sections and not rss_done:
            collection = f"rss_{s.rss_docs}"
            self.prepare_collection("py", collection)
            console.print(f"rss: inserting {s.rss_docs:,} due jobs ...")
            self.insert_jobs("node", collection, JOB, s.rss_docs)
            self.run_rss(collection, s.rss_docs, job_name=JOB)
            self.fresh(collection)

    async def _py_claims(self, collection: str, count: int) -> tuple[list[float], list[tuple[float, int]]]:
        """agendapy's claim path: ``MongoJobStore.claim`` with a ClaimRequest as the worker builds it.

        Returns the times (ms) of single claims and, when ``claim`` takes a ``limit`` (batched claims),
        (time, jobs claimed) of claims of up to ``--concurrency`` jobs at once.
        """
        from agendapy.store.base import ClaimRequest

        agenda = Agenda(self.url, collection=collection, name="bench-claim")
        singles: list[float] = []
        batches: list[tuple[float, int]] = []
        try:
            await agenda.connect()
            store: Any = agenda.store
            cap = time.monotonic() + CLAIM_TIME_CAP
            for _ in range(count):
                request = self._claim_request(ClaimRequest, agenda)
                t = time.perf_counter()
                await store.claim(request, uuid.uuid4().hex)
                singles.append((time.perf_counter() - t) * 1000.0)
                if time.monotonic() > cap:
                    break
            if "limit" in inspect.signature(store.claim).parameters:
                cap = time.monotonic() + CLAIM_TIME_CAP
                for _ in range(max(2, count // 2)):
                    if batches and time.monotonic() > cap:
                        break
                    request = self._claim_request(ClaimRequest, agenda)
                    t = time.perf_counter()
                    got = await store.claim(request, uuid.uuid4().hex, limit=self.settings.concurrency)
                    took = (time.perf_counter() - t) * 1000.0
                    batches.append((took, len(got) if isinstance(got, list) else int(got is not None)))
        finally:
            await agenda.close()
        return singles, batches

    @staticmethod
    def _claim_request(cls: Any, agenda: Agenda) -> Any:
        now = datetime.now(UTC)
        known = {
            "names": [CLAIM_JOB],
            "now": now,
            "next_scan_at": now + agenda.process_every,
            "lock_deadlines": {CLAIM_JOB: now - agenda.default_lock_lifetime},
            "owner": "bench-claim",
        }
        if dataclasses.is_dataclass(cls):
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in known.items() if k in fields})
        params = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in known.items() if k in params})

    def claim_filters(self) -> dict[str, tuple[dict[str, Any], list[tuple[str, int]]]]:
        now = datetime.now(UTC)
        lifetime = timedelta(minutes=10)
        filters: dict[str, tuple[dict[str, Any], list[tuple[str, int]]]] = {
            "node": (
                {
                    "name": CLAIM_JOB,
                    "disabled": {"$ne": True},
                    "$or": [
                        {"lockedAt": {"$eq": None}, "nextRunAt": {"$lte": now + timedelta(seconds=5)}},
                        {"lockedAt": {"$lte": now - lifetime}},
                    ],
                },
                [("nextRunAt", 1), ("priority", -1)],
            )
        }
        try:
            from agendapy.store import queries
            from agendapy.store.base import ClaimRequest

            agenda = Agenda(self.url, name="bench-claim")
            request = self._claim_request(ClaimRequest, agenda)
            filters["py"] = (queries.claim_filter(request), list(queries.CLAIM_SORT))
        except Exception as exc:  # the claim path is being reworked; say so rather than guess
            console.print(f"[yellow]could not build agendapy's claim filter: {exc}[/]")
        return filters

    def explain_claims(self, collection: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for lib, (flt, sort) in self.claim_filters().items():
            if lib == "node" and not self.node_ok:
                continue
            try:
                cursor = self.db[collection].find(flt, sort=sort, limit=1)
                plan = cursor.explain()
            except Exception as exc:
                out[lib] = f"explain failed: {exc}"
                continue
            winning = plan.get("queryPlanner", {}).get("winningPlan", {})
            stats = plan.get("executionStats", {})
            text = (
                f"{describe_plan(winning)}; {stats.get('totalDocsExamined', '?')} docs / "
                f"{stats.get('totalKeysExamined', '?')} keys / {stats.get('nReturned', '?')} returned"
            )
            out[lib] = text
            self.details.append(f"explain ({lib}) on {collection}: {json.dumps(winning, default=str)[:1500]}")
        return out

    # -- RSS ---------------------------------------------------------------------------------------------

    def run_rss(self, collection: str, size: int, job_name: str = CLAIM_JOB) -> None:
        s = self.settings
        cells: dict[str, dict[str, float]] = {}
        for lib in self.libs():
            worker = self.spawn(lib, collection, job_name=job_name)  # library defaults
            try:
                self.wait_ready([worker])
                time.sleep(s.rss_wait)
                mem = rss_of(worker.proc.pid)
            finally:
                self.stop([worker], term_wait=2.0)
            ran = self.db[collection].count_documents({"lastModifiedBy": worker.name})
            if mem:
                cells[lib] = {**mem, "touched": ran}
                console.print(
                    f"rss {lib:4} with {size:,} due jobs: {mem.get('VmRSS', 0):.0f} MB "
                    f"(peak {mem.get('VmHWM', 0):.0f} MB, {ran} jobs claimed)"
                )
            # Let the next library see the same backlog.
            self.db[collection].update_many(
                {"lastModifiedBy": worker.name},
                {"$set": {"lockedAt": None, "lastFinishedAt": None, "lastRunAt": None,
                          "nextRunAt": datetime.now(UTC), "lastModifiedBy": "node-client"}},
            )  # fmt: skip
            self.settle()
        ratio = ""
        if "node" in cells and "py" in cells:
            ratio = f"{cells['node']['VmRSS'] / cells['py']['VmRSS']:.2f}x"
        notes = " | ".join(
            f"{'Node' if lib == 'node' else 'agendapy'}: peak {c.get('VmHWM', 0):.0f} MB, "
            f"{c['touched']:.0f} jobs claimed in {s.rss_wait:g} s"
            for lib, c in cells.items()
        )
        self.rows.append(Row(
            "rss", f"worker RSS with {size:,} due jobs (MB)",
            f"{cells['node']['VmRSS']:.0f}" if "node" in cells else self.missing_node(),
            f"{cells['py']['VmRSS']:.0f}" if "py" in cells else "failed", ratio,
            f"defaults, measured {s.rss_wait:g} s after ready | {notes}",
        ))  # fmt: skip

    # -- scheduling ----------------------------------------------------------------------------------------

    def run_schedule(self) -> None:
        n = self.settings.schedule_jobs
        one: dict[str, float] = {}
        bulk_py: float | None = None
        bulk_note = ""
        raw: float | None = None
        for lib in self.libs():
            collection = f"schedule_{lib}"
            self.prepare_collection(lib, collection)
            try:
                if lib == "py":
                    one["py"] = asyncio.run(self._py_now_one_by_one(collection, n))
                else:
                    result = self._node_client("schedule", collection, ["--count", str(n)])
                    one["node"] = result["count"] / result["seconds"]
            except Exception as exc:
                console.print(f"[red]scheduling {lib} failed: {exc}[/]")
            self.fresh(collection)
        collection = "schedule_py_bulk"
        self.prepare_collection("py", collection)
        try:
            bulk_py, bulk_note = asyncio.run(self._py_bulk(collection, n))
        except Exception as exc:
            bulk_note = f"bulk API failed: {exc}"
        self.fresh(collection)
        self.prepare_collection("py", collection)
        docs = self.job_docs("py", JOB, n)
        t = time.perf_counter()
        self.db[collection].insert_many(docs, ordered=False)
        raw = n / (time.perf_counter() - t)
        self.fresh(collection)
        for lib, rate in one.items():
            console.print(f"schedule {lib:4}: now() one at a time {rate:.0f} jobs/s")
        console.print(
            f"schedule py  : bulk {fmt(bulk_py)} jobs/s ({bulk_note}); raw insert_many {raw:.0f} jobs/s"
        )
        ratio = f"{one['py'] / one['node']:.2f}x" if "node" in one and "py" in one else ""
        self.rows.append(Row(
            "schedule", f"now() one at a time ({n} jobs, jobs/s)",
            f"{one['node']:,.0f}" if "node" in one else ("skipped" if not self.node_ok else "failed"),
            f"{one['py']:,.0f}" if "py" in one else "failed", ratio, "sequential awaits from one client",
        ))  # fmt: skip
        self.rows.append(Row(
            "schedule", f"bulk scheduling ({n} jobs, jobs/s)", "N/A (no bulk API)",
            fmt(bulk_py) if bulk_py else "N/A", "",
            f"{bulk_note}; driver insert_many of the same documents: {raw:,.0f} jobs/s (ceiling)",
        ))  # fmt: skip

    async def _py_now_one_by_one(self, collection: str, n: int) -> float:
        agenda = Agenda(self.url, collection=collection, name="bench-client")
        try:
            await agenda.connect()
            t = time.perf_counter()
            for i in range(n):
                await agenda.now(JOB, {"i": i})
            return n / (time.perf_counter() - t)
        finally:
            await agenda.close()

    async def _py_bulk(self, collection: str, n: int) -> tuple[float | None, str]:
        """``now_many`` (or ``schedule_many``) if agendapy has it; the call shape is probed."""
        agenda = Agenda(self.url, collection=collection, name="bench-client")
        try:
            await agenda.connect()
            datas = [{"i": i} for i in range(n)]
            attempts: list[tuple[str, Callable[[], Any]]] = []
            if hasattr(agenda, "now_many"):
                fn = agenda.now_many
                attempts += [
                    ("now_many(name, datas)", lambda: fn(JOB, datas)),
                    ("now_many([(name, data)])", lambda: fn([(JOB, d) for d in datas])),
                    ("now_many([{name, data}])", lambda: fn([{"name": JOB, "data": d} for d in datas])),
                ]
            if hasattr(agenda, "schedule_many"):
                fn2 = agenda.schedule_many
                attempts += [
                    ("schedule_many('now', name, datas)", lambda: fn2("now", JOB, datas)),
                    ("schedule_many([(when, name, data)])", lambda: fn2([("now", JOB, d) for d in datas])),
                ]
            if not attempts:
                return None, "agendapy has no now_many/schedule_many yet"
            errors = []
            for label, call in attempts:
                await agenda.cancel_all()
                t = time.perf_counter()
                try:
                    await call()
                except (TypeError, ValueError) as exc:
                    errors.append(f"{label}: {exc}")
                    continue
                took = time.perf_counter() - t
                stored = await agenda.store.collection.count_documents({"name": JOB})
                if stored != n:
                    errors.append(f"{label}: stored {stored} of {n}")
                    continue
                return n / took, f"agendapy {label}"
            return None, "bulk API present but no known call shape worked: " + "; ".join(errors)[:300]
        finally:
            await agenda.close()

    # -- output ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        s = self.settings
        # Cheap, contention-sensitive workloads first; the large collections last.
        steps: list[tuple[str, Callable[[], None]]] = []
        if "schedule" in s.sections:
            steps.append(("schedule", self.run_schedule))
        if "latency" in s.sections:
            steps.append(("latency", self.run_latency))
        if "drain" in s.sections:
            steps.append(("drain", lambda: (self.run_drain(), self.commands_rows())))
        if "lock" in s.sections or "rss" in s.sections:
            if "lock" not in s.sections:
                s.lock_sizes = []
            steps.append(("lock/rss", self.run_lock))
        for name, step in steps:
            self.settle()
            t = time.monotonic()
            step()
            self.timings[name] = time.monotonic() - t
            console.print(f"[dim]{name}: {self.timings[name]:.0f} s[/]")
        order = {"drain": 0, "commands": 1, "latency": 2, "lock": 3, "rss": 4, "schedule": 5}
        self.rows.sort(key=lambda r: order.get(r.section, 9))


def _ratio(values: dict[str, float], other: str) -> str:
    """``other``'s value / agendapy's (>1: agendapy uses less)."""
    a, b = values.get(other), values.get("py")
    return f"{a / b:.2f}x" if a is not None and b else ""


def describe_plan(stage: dict[str, Any]) -> str:
    """``SORT(limit 1) <- COLLSCAN`` / ``LIMIT <- FETCH <- IXSCAN findAndLockNextJobIndex``."""
    parts = []
    node: dict[str, Any] | None = stage
    while node:
        name = str(node.get("stage", "?"))
        if node.get("indexName"):
            name += f" {node['indexName']}"
        if node.get("limitAmount"):
            name += f"(limit {node['limitAmount']})"
        parts.append(name)
        inputs = node.get("inputStages")
        if inputs:
            parts.append("[" + " | ".join(describe_plan(i) for i in inputs) + "]")
            break
        node = node.get("inputStage")
    return " <- ".join(parts)


def server_info(client: MongoClient[dict[str, Any]]) -> str:
    try:
        status = client.admin.command("serverStatus")
        build = client.admin.command("buildInfo")
    except Exception as exc:
        return f"unknown server ({exc})"
    if "secantus" in status:
        try:
            secantus = version("secantusdb")
        except PackageNotFoundError:
            secantus = "?"
        return f"SecantusDB {secantus} (reports MongoDB {build.get('version', '?')})"
    return f"MongoDB {build.get('version', '?')}"


APS_VERSION = "4.0.0a6"


def aps_check() -> tuple[bool, str]:
    """Whether the APScheduler column can run: ``apscheduler`` 4.0.0a6 importable here."""
    try:
        found = version("apscheduler")
    except PackageNotFoundError:
        return False, (
            f"apscheduler not installed (pip install --pre apscheduler=={APS_VERSION}): "
            "the APScheduler column is skipped"
        )
    if found != APS_VERSION:
        return False, f"apscheduler {found} installed, the harness needs {APS_VERSION}: column skipped"
    return True, (
        f"APScheduler {found}, MongoDBDataStore, AsyncScheduler(role=worker, max_concurrent_jobs="
        "concurrency), task max_running_jobs=None, local event broker (none for MongoDB)"
    )


def node_check() -> tuple[bool, str]:
    """Whether the Node column can run: node + npm, and benchmarks/node's packages (installed if absent)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if not p)
        return False, f"{missing} not found on PATH: the Node Agenda column is skipped"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    if not (NODE_DIR / "node_modules" / "agenda" / "package.json").exists():
        console.print("installing benchmarks/node's packages (npm install) ...")
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return (
                False,
                "npm install in benchmarks/node failed; the Node column is skipped:\n"
                + result.stderr[-1500:],
            )
    try:
        pkg = json.loads((NODE_DIR / "node_modules" / "agenda" / "package.json").read_text())
        agenda_version = pkg.get("version", "?")
    except (OSError, ValueError):
        agenda_version = "?"
    return True, f"Node {out}, agenda {agenda_version}"


def per_job_ms(seconds: float | None, done: int) -> str:
    return "n/a" if seconds is None or not done else f"{seconds * 1000.0 / done:.1f} ms"


TITLE = "Node Agenda 6.2.6, APScheduler 4.0.0a6 and agendapy (same server build, one run)"


def star(r: DrainResult) -> str:
    return "" if r.complete else "*"


def render(harness: Harness, header: dict[str, str], took: float) -> tuple[Table, str]:
    table = Table(title=TITLE, show_lines=True)
    table.add_column("workload", style="bold")
    table.add_column("Node Agenda 6.2.6", justify="right")
    table.add_column("APScheduler 4", justify="right")
    table.add_column("agendapy", justify="right")
    table.add_column("vs Node", justify="right")
    table.add_column("vs APScheduler", justify="right")
    table.add_column("notes", overflow="fold")
    for row in harness.rows:
        table.add_row(row.label, row.node, row.aps, row.py, row.ratio, row.ratio_aps, row.notes)

    lines = [f"# {TITLE} — {header['date']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items() if k != "date"]
    lines += [f"- **run time**: {took / 60:.1f} min", ""]
    lines += [
        "| workload | Node Agenda 6.2.6 | APScheduler 4 | agendapy | vs Node | vs APScheduler | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in harness.rows:
        cells = [row.label, row.node, row.aps, row.py, row.ratio, row.ratio_aps, row.notes]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    lines += [
        "",
        "Drain cells read `spawn-to-finish / from-first-claim` jobs/s and the library's own commits "
        "(write statements) per job; `*` = stopped at the time budget (the rate is jobs done / time). "
        'Ratios ("vs") of throughput are agendapy/other (spawn-to-finish / from the first claim), of '
        "latency, commands, commits, CPU, time and memory other/agendapy: >1 = agendapy better.",
        "",
        "## Drain cells",
        "",
        "| lib | handler | N | workers | process_every | done | time | jobs/s | jobs/s from first claim "
        "| start-up | commands/job | commits/job | server CPU/job | worker CPU/job | load at end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in harness.drains:
        lines.append(
            f"| {r.lib} | {r.handler} | {r.n} | {r.workers} | {r.pe:g} s | {r.done}{star(r)} | "
            f"{fmt_s(r.elapsed)} | {r.rate:.1f} | {r.claim_rate:.1f} | "
            f"{fmt_s(r.startup) if r.startup is not None else 'n/a'} | {r.commands_per_job():.2f} | "
            f"{r.own_commits():.2f} | {per_job_ms(r.server_cpu, r.done)} | "
            f"{per_job_ms(r.worker_cpu, r.done)} | {r.load} |"
        )
    if harness.details:
        lines += ["", "## Details", ""] + [f"- {d}" for d in harness.details]
    return table, "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes and budgets (under ~5 minutes)")
    size.add_argument("--full", action="store_true", help="also the 1M-document lock query")
    p.add_argument(
        "--store",
        choices=("mongo", "postgres"),
        default="mongo",
        help="postgres: the PostgreSQL comparison (benchmarks/compare_pg.py, its own options)",
    )
    p.add_argument("--mongo-url", default=None, help="use this server instead of an embedded SecantusDB")
    p.add_argument("--only", default=None, help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--skip-node", action="store_true", help="agendapy column only")
    p.add_argument("--budget", type=float, default=None, help="seconds per drain cell (120; --quick 30)")
    p.add_argument("--drain-n", default=None, help="job counts, e.g. 100,300,1000")
    p.add_argument("--workers", default=None, help="worker process counts, e.g. 1,4")
    p.add_argument("--handlers", default=None, help="drain handler bodies: noop,counter (both)")
    p.add_argument("--skip-aps", action="store_true", help="no APScheduler 4 column")
    p.add_argument("--node-process-every", default=None, help="seconds, e.g. 0.1,1 (best reported)")
    p.add_argument("--py-process-every", default=None, help="seconds, e.g. 0.1,1 (best reported)")
    p.add_argument(
        "--py-options",
        default=None,
        help="JSON of further Agenda() options for agendapy's workers, e.g. '{\"change_streams\": false}'",
    )
    p.add_argument(
        "--concurrency", type=int, default=20, help="maxConcurrency = defaultConcurrency in drains"
    )
    p.add_argument("--latency-jobs", type=int, default=None, help="200; --quick 50")
    p.add_argument("--schedule-jobs", type=int, default=None, help="1000; --quick 200")
    p.add_argument("--lock-sizes", default=None, help="documents, e.g. 10000,100000")
    p.add_argument(
        "--rss-docs", type=int, default=None, help="due jobs while measuring RSS (100000; --quick 10000)"
    )
    p.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="with --mongo-url on this machine: count the server's CPU",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the latency gaps")
    p.add_argument("--keep", action="store_true", help="keep the worker logs and counts (path printed)")
    p.add_argument("--out", default=None, help="markdown file (default benchmarks/results/compare-<date>.md)")
    return p.parse_args(argv)


def store_of(argv: Sequence[str]) -> str:
    """The ``--store`` named on the command line (``mongo`` when absent)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--store="):
            return arg.split("=", 1)[1]
        if arg == "--store" and i + 1 < len(argv):
            return argv[i + 1]
    return "mongo"


def main(argv: list[str] | None = None) -> int:
    if store_of(sys.argv[1:] if argv is None else argv) == "postgres":
        # PostgreSQL has its own harness and peers (Node's postgres backend, procrastinate).
        import compare_pg

        return compare_pg.main(argv)
    args = parse_args(argv)
    settings = make_settings(args)
    started = time.monotonic()
    digest_before = source_digest()
    if args.skip_node:
        node_ok, node_msg = False, "--skip-node: the Node Agenda column is skipped"
    else:
        node_ok, node_msg = node_check()
    console.print(("" if node_ok else "[yellow]") + node_msg + ("" if node_ok else "[/]"))
    aps_ok, aps_msg = (
        (False, "--skip-aps: the APScheduler column is skipped") if args.skip_aps else aps_check()
    )
    console.print(("" if aps_ok else "[yellow]") + aps_msg + ("" if aps_ok else "[/]"))
    workdir = Path(tempfile.mkdtemp(prefix="agendapy-compare-"))
    server = None
    harness: Harness | None = None
    try:
        if args.mongo_url:
            url = args.mongo_url
        else:
            from agendapy.embedded import EmbeddedServer

            server = EmbeddedServer(workdir / "db")
            url = server.start()
            console.print(f"embedded SecantusDB at {url} (data in {workdir / 'db'})")
        server_pid = server.pid if server is not None else args.server_pid
        harness = Harness(url, settings, node_ok, workdir, server_pid, aps_ok=aps_ok)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if busy > 0.5 * (os.cpu_count() or 1):
            console.print(
                f"[yellow]load average {busy:.2f} on {os.cpu_count()} CPUs: other processes are busy, "
                "absolute numbers will be noisy (CPU per job much less so)[/]"
            )
        harness.db.client.drop_database(DB_NAME)
        header = {
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "mode": settings.mode,
            "server": server_info(harness.client)
            + ("" if args.mongo_url else " (embedded, --sync-on-commit)"),
            "Node": node_msg,
            "APScheduler": aps_msg,
            "agendapy": f"{version('agendapy') if _has_dist('agendapy') else '?'}, sources {digest_before}",
            "Python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}; load average at start {load_average()}",
            "settings": (
                f"drain N={settings.drain_ns}, workers={settings.workers}, handlers={settings.handlers}, "
                f"{'a fresh server per drain cell' if settings.fresh_servers else 'one server'}, "
                f"Node process_every="
                f"{settings.node_pe} s, agendapy process_every={settings.py_pe} s, concurrency "
                f"{settings.concurrency}/{settings.concurrency}, budget {settings.budget:g} s per cell; "
                f"latency jobs {settings.latency_jobs}; schedule jobs {settings.schedule_jobs}; lock sizes "
                f"{settings.lock_sizes}; RSS with {settings.rss_docs:,} due jobs"
                + (
                    f"; agendapy worker options {json.dumps(settings.py_options)}"
                    if settings.py_options
                    else ""
                )
            ),
        }
        harness.run()
        took = time.monotonic() - started
        header["machine"] += f", at end {load_average()}"
        digest_after = source_digest()
        if digest_after != digest_before:
            header["agendapy"] += f" [changed during the run: {digest_after} at the end]"
            console.print(
                f"[yellow]agendapy's sources changed during the run ({digest_before} -> {digest_after})[/]"
            )
        header["section times"] = ", ".join(f"{k} {v:.0f} s" for k, v in harness.timings.items())
        table, markdown = render(harness, header, took)
        Console(width=max(160, shutil.get_terminal_size((160, 40)).columns)).print(table)
        out = Path(args.out) if args.out else RESULTS_DIR / f"compare-{datetime.now():%Y-%m-%d-%H%M}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown, encoding="utf-8")
        console.print(f"run time {took / 60:.1f} min; markdown written to {out}")
        return 0
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    finally:
        if harness is not None:
            harness.procs.kill_all()
            with contextlib.suppress(Exception):
                if args.mongo_url:
                    harness.client.drop_database(DB_NAME)
                harness.client.close()
        if server is not None:
            server.stop()
        if args.keep:
            console.print(f"worker logs and counts kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _has_dist(name: str) -> bool:
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
