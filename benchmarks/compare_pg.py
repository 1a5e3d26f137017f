"""PostgreSQL side by side: agendapy (``PostgresJobStore``), Node Agenda 6.2.6 with
``@agendajs/postgres-backend`` 3.0.6, and procrastinate 3.10 (PyPI), on the same PostgreSQL build.

    python benchmarks/compare.py --store postgres [--quick] [--only drain,latency,claim]
                                 [--skip-node] [--skip-procrastinate] [--drain-n 1000,10000] [--workers 1,4]

Every library gets a fresh server of its own (``tests/pg_server.py``, durable: PostgreSQL's defaults,
fsync on, with ``pg_stat_statements`` preloaded) and a fresh database per measurement. Workloads:

* drain: N no-op one-off jobs already due, drained by 1 and by 4 worker processes (20 jobs at once each;
  agendapy and Node poll every 100 ms, all three also wake on ``NOTIFY``); jobs/s from the spawn of the
  first worker and from the first job's start to the last one's finish;
* statements and transactions per job while draining: ``pg_stat_statements`` calls (every statement a
  worker sends, ``BEGIN``/``COMMIT`` included) and the ``xact_commit`` delta of ``pg_stat_database``
  (server transactions: each listening connection reading a ``NOTIFY`` also runs one, and autovacuum's
  count), the harness's own queries excluded;
* worker RSS: the peak (VmHWM) of a worker process draining the largest N alone;
* latency now() -> handler start on one idle worker with the library's default settings: each job saved
  through the library's own API (Node's through ``benchmarks/node/pg-client.mjs``, so its NOTIFY is
  sent), 100-400 ms apart;
* claim cost: the server's execution time of the library's claim statement (``FOR UPDATE SKIP LOCKED``
  for agendapy and Node, ``procrastinate_fetch_job`` for procrastinate), per call and per job claimed,
  while one worker drains 200 due jobs from a table that also holds 10k / 100k / 1M jobs not due (half
  finished, half scheduled a day ahead). A call of agendapy's claims up to 20 jobs, Node's and
  procrastinate's one.

Prints a markdown table (agendapy's ratio to each peer, ">1x" = agendapy better) and writes it to
``benchmarks/results/compare-pg-<date>-<time>.md``. ``--quick``: N = 1,000, claim at 10k only, 20
latency samples (a few minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "node"
RESULTS_DIR = BENCH_DIR / "results"
JOB = "bench-noop"
LIBS = ("agendapy", "node", "procrastinate")
SECTIONS = ("drain", "latency", "claim")
#: Every query of the harness carries this comment, so the statement counts leave them out.
TAG = "/* bench-harness */"
CONCURRENCY = 20
RESULT_COLUMNS = "lib TEXT, job_id TEXT, t0 FLOAT8, t1 FLOAT8"
CLAIM_DUE = 200

sys.path.insert(0, str(ROOT / "tests"))  # pg_server
sys.path.insert(0, str(BENCH_DIR))  # procrastinate_worker


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q / 100.0 * len(ordered))) - 1]


def source_digest() -> str:
    """A short digest of the agendapy sources measured (the tree changes between runs)."""
    import agendapy

    root = Path(agendapy.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (peak resident set) of a process in MB, from /proc."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# -- server ------------------------------------------------------------------------------------------------


class Server:
    """A fresh durable PostgreSQL with pg_stat_statements, and fresh databases on it."""

    def __init__(self) -> None:
        from pg_server import PostgresServer

        self.pg = PostgresServer(durable=True)
        self.serial = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)
        async with await self.connect(self.pg.url) as conn:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            # 'top': the statements clients send (not those run inside functions and triggers).
            await conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'")
            # Room for every distinct statement: each NOTIFY payload is one (its text is not normalised).
            await conn.execute("ALTER SYSTEM SET pg_stat_statements.max = 50000")
        # A preload library needs a restart; the cluster is empty, so its crash recovery takes no time.
        await asyncio.to_thread(self.pg.kill)
        await asyncio.to_thread(self.pg.restart)

    def stop(self) -> None:
        self.pg.stop()

    @staticmethod
    async def connect(url: str) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def fresh_database(self) -> str:
        self.serial += 1
        name = f"bench_{self.serial}"
        async with await self.connect(self.pg.url) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"')
        url = self.pg.url_for(name)
        async with await self.connect(url) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return url


async def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """One harness query on a short-lived connection (tagged: left out of the statement counts)."""
    # Inside the statement: pg_stat_statements keeps a statement's text without its leading comments.
    verb, rest = sql.split(" ", 1)
    async with await Server.connect(url) as conn:
        cur = await conn.execute(f"{verb} {TAG} {rest}", params)
        return list(await cur.fetchall()) if cur.description else []


# -- the three libraries -------------------------------------------------------------------------------


@dataclass
class Side:
    """How the harness drives one library: schema, jobs, workers, progress queries."""

    lib: str

    @property
    def table(self) -> str:
        return "procrastinate_jobs" if self.lib == "procrastinate" else "agenda_jobs"

    async def schema(self, url: str) -> None:
        if self.lib == "agendapy":
            from agendapy.store.postgres import PostgresJobStore

            store = PostgresJobStore(url)
            await store.connect()
            await store.close()
        elif self.lib == "node":
            # Node's backend creates its table on connect; a client started and stopped does just that.
            proc = await asyncio.create_subprocess_exec(
                "node", "pg-client.mjs", "--url", url,
                cwd=NODE_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"node pg-client.mjs failed: {err.decode(errors='replace')[-1500:]}")
        else:
            from procrastinate_worker import make_app

            app = make_app(url)
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
        await query(url, f"CREATE TABLE IF NOT EXISTS bench_results ({RESULT_COLUMNS})")

    async def enqueue_due(self, url: str, n: int) -> None:
        """``n`` jobs due now. agendapy and Node share Node's table, so one INSERT fills it for both (the
        rows Node's ``now()`` writes); procrastinate through its bulk ``batch_defer_async``."""
        if self.lib != "procrastinate":
            await query(
                url,
                "INSERT INTO agenda_jobs (name, next_run_at, data)"
                " SELECT %s, now(), jsonb_build_object('i', g) FROM generate_series(1, %s) g",
                JOB,
                n,
            )
            return
        from procrastinate_worker import TASK, make_app

        app = make_app(url)
        async with app.open_async():
            task = app.tasks[TASK]
            for start in range(0, n, 1000):
                await task.batch_defer_async(*[{} for _ in range(min(1000, n - start))])

    async def fill_not_due(self, url: str, m: int) -> None:
        """``m`` jobs no claim may take: half finished, half scheduled a day ahead."""
        half = m // 2
        if self.lib != "procrastinate":
            await query(
                url,
                "INSERT INTO agenda_jobs (name, next_run_at, last_run_at, last_finished_at, data)"
                " SELECT %s, CASE WHEN g %% 2 = 0 THEN now() + interval '1 day' END,"
                " CASE WHEN g %% 2 = 1 THEN now() - interval '1 hour' END,"
                " CASE WHEN g %% 2 = 1 THEN now() - interval '1 hour' END, jsonb_build_object('i', g)"
                " FROM generate_series(1, %s) g",
                JOB,
                m,
            )
        else:
            await query(
                url,
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at)"
                " SELECT 'default', %s, '{}'::jsonb, 'succeeded', NULL FROM generate_series(1, %s)",
                "bench_noop",
                half,
            )
            await query(
                url,
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at)"
                " SELECT 'default', %s, '{}'::jsonb, 'todo', now() + interval '1 day'"
                " FROM generate_series(1, %s)",
                "bench_noop",
                m - half,
            )
        await query(url, f"ANALYZE {self.table}")

    async def done(self, url: str) -> int:
        if self.lib == "procrastinate":
            sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        else:
            sql = "SELECT count(*) FROM agenda_jobs WHERE last_finished_at IS NOT NULL AND locked_at IS NULL"
        return int((await query(url, sql))[0][0])

    async def run_span(self, url: str) -> tuple[float, float] | None:
        """(first start, last finish) in epoch seconds of the drained jobs."""
        if self.lib == "procrastinate":
            sql = (
                "SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'started')),"
                " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) FROM procrastinate_events"
            )
        else:
            sql = (
                "SELECT extract(epoch FROM min(last_run_at)), extract(epoch FROM max(last_finished_at))"
                " FROM agenda_jobs WHERE next_run_at IS NULL AND last_run_at > now() - interval '1 hour'"
            )
        row = (await query(url, sql))[0]
        return None if row[0] is None or row[1] is None else (float(row[0]), float(row[1]))

    def command(
        self, url: str, index: int, *, drain: bool, results: bool
    ) -> tuple[list[str], Path, dict[str, str]]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("AGENDAPY_MONGO_URL", None)
        env.pop("AGENDAPY_DATABASE_URL", None)
        if self.lib == "agendapy":
            env.update(BENCH_PG_URL=url, BENCH_JOB_NAME=JOB)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH")) if p)
            if drain:
                env.update(
                    BENCH_PROCESS_EVERY="0.1",
                    BENCH_MAX_CONCURRENCY=str(CONCURRENCY),
                    BENCH_DEFAULT_CONCURRENCY=str(CONCURRENCY),
                )
            if results:
                env["BENCH_RESULTS"] = "1"
            cmd = [sys.executable, "-m", "agendapy", "worker", "pg_worker:agenda", "--name", f"py-w{index}"]
            return cmd, BENCH_DIR, env
        if self.lib == "node":
            cmd = ["node", "pg-worker.mjs", "--url", url, "--name", f"node-w{index}", "--job-name", JOB]
            if drain:
                cmd += ["--process-every", "100", "--max-concurrency", str(CONCURRENCY)]
                cmd += ["--default-concurrency", str(CONCURRENCY)]
            if results:
                cmd.append("--results")
            return cmd, NODE_DIR, env
        cmd = [sys.executable, str(BENCH_DIR / "procrastinate_worker.py"), "--url", url]
        if drain:
            cmd += ["--concurrency", str(CONCURRENCY)]
        if results:
            cmd.append("--results")
        return cmd, BENCH_DIR, env


@dataclass
class Workers:
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def spawn(cls, side: Side, url: str, count: int, workdir: Path, *, drain: bool, results: bool) -> Workers:
        workers = cls()
        for index in range(count):
            cmd, cwd, env = side.command(url, index, drain=drain, results=results)
            log_path = workdir / f"{side.lib}-w{index}-{time.time_ns()}.log"
            with log_path.open("wb") as out:
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
            workers.procs.append(proc)
            workers.logs.append(log_path)
        return workers

    def check_alive(self) -> None:
        for proc, path in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"worker {proc.args} exited with {proc.returncode}:\n{tail}")

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all('"ready"' in path.read_text(errors="replace") for path in self.logs):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready within {timeout} s: {self.logs}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


async def statement_counts(url: str) -> tuple[int, list[tuple[int, str]]]:
    """Calls of every statement the workers sent to this database (harness queries left out), and the
    most frequent ones."""
    rows = await query(
        url,
        "SELECT calls, query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
        " WHERE datname = current_database()) AND query NOT LIKE %s ORDER BY calls DESC",
        f"%{TAG}%",
    )
    return sum(int(r[0]) for r in rows), [(int(r[0]), " ".join(str(r[1]).split())[:70]) for r in rows[:4]]


async def commits(url: str) -> int:
    rows = await query(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return int(rows[0][0])


# -- workloads ---------------------------------------------------------------------------------------------


@dataclass
class Drain:
    lib: str
    n: int
    workers: int
    done: int
    seconds: float
    run_seconds: float | None
    statements: float | None = None
    commits: float | None = None
    top: list[tuple[int, str]] = field(default_factory=list)
    peak_rss_mb: float | None = None

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else math.nan

    @property
    def run_rate(self) -> float | None:
        return self.done / self.run_seconds if self.run_seconds else None


async def drain(side: Side, server: Server, n: int, count: int, budget: float, workdir: Path) -> Drain:
    url = await server.fresh_database()
    await side.schema(url)
    await side.enqueue_due(url, n)
    await query(url, "SELECT pg_stat_statements_reset()")
    await asyncio.sleep(1.2)  # let earlier backends' counters reach pg_stat_database
    before = await commits(url)
    polls = 1
    started = time.time()
    workers = Workers.spawn(side, url, count, workdir, drain=True, results=False)
    done = 0
    peak: float | None = None
    try:
        while time.time() - started < budget:
            await asyncio.sleep(0.25)
            workers.check_alive()
            done = await side.done(url)
            polls += 1
            for proc in workers.procs:
                rss = peak_rss_mb(proc.pid)
                peak = max(peak or 0.0, rss or 0.0)
            if done >= n:
                break
        seconds = time.time() - started
    finally:
        await workers.stop()
    span = await side.run_span(url)
    statements, top = await statement_counts(url)
    await asyncio.sleep(1.2)
    after = await commits(url)
    polls += 3  # run_span, statement_counts, the last commits read
    per = max(done, 1)
    return Drain(
        side.lib,
        n,
        count,
        done,
        seconds,
        None if span is None else max(span[1] - span[0], 1e-6),
        statements=statements / per,
        commits=(after - before - polls) / per,
        top=top,
        peak_rss_mb=peak,
    )


async def latency(side: Side, server: Server, samples: int, workdir: Path, rng: random.Random) -> list[float]:
    url = await server.fresh_database()
    await side.schema(url)
    workers = Workers.spawn(side, url, 1, workdir, drain=False, results=True)
    try:
        await workers.ready()
        await asyncio.sleep(1.0)  # past the worker's first poll: from here on only a wake-up is fast
        async with saver(side, url) as save:
            for _ in range(samples):
                await save()
                await asyncio.sleep(rng.uniform(0.1, 0.4))
        deadline = time.time() + 60
        while time.time() < deadline:
            rows = await query(url, "SELECT t1 - t0 FROM bench_results WHERE t0 IS NOT NULL")
            if len(rows) >= samples:
                return [float(r[0]) for r in rows]
            workers.check_alive()
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{side.lib}: only {len(rows)} of {samples} latency jobs ran within 60 s")
    finally:
        await workers.stop()


@contextlib.asynccontextmanager
async def saver(side: Side, url: str) -> AsyncIterator[Any]:
    """A coroutine function saving one job through the library's own API, its data ``{t0: epoch ms}``."""
    if side.lib == "agendapy":
        from agendapy import Agenda
        from agendapy.store.postgres import PostgresJobStore

        agenda = Agenda(PostgresJobStore(url), name="bench-client")
        await agenda.connect()

        async def save_py() -> None:
            await agenda.now(JOB, {"t0": time.time() * 1000.0})

        try:
            yield save_py
        finally:
            await agenda.close()
    elif side.lib == "node":
        proc = await asyncio.create_subprocess_exec(
            "node", "pg-client.mjs", "--url", url, "--job-name", JOB,
            cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout
        await stdout.readline()  # ready

        async def save_node() -> None:
            stdin.write(b"now\n")
            await stdin.drain()
            await stdout.readline()

        try:
            yield save_node
        finally:
            stdin.close()
            await proc.wait()
    else:
        from procrastinate_worker import TASK, make_app

        app = make_app(url)
        async with app.open_async():
            task = app.tasks[TASK]

            async def save_proc() -> None:
                await task.defer_async(t0=time.time() * 1000.0)

            yield save_proc


CLAIM_PATTERNS = {
    "agendapy": "%SKIP LOCKED%",
    "node": "%SKIP LOCKED%",
    "procrastinate": "%procrastinate_fetch_job%",
}


async def claim_cost(side: Side, server: Server, rows: int, workdir: Path) -> tuple[float, int] | None:
    """Total server time (ms) and calls of the claim statement, draining CLAIM_DUE jobs among ``rows``."""
    url = await server.fresh_database()
    await side.schema(url)
    await side.fill_not_due(url, rows)
    await side.enqueue_due(url, CLAIM_DUE)
    await query(url, "SELECT pg_stat_statements_reset()")
    workers = Workers.spawn(side, url, 1, workdir, drain=True, results=False)
    baseline = rows // 2  # the finished half of fill_not_due
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            await asyncio.sleep(0.25)
            workers.check_alive()
            if await side.done(url) >= baseline + CLAIM_DUE:
                break
    finally:
        await workers.stop()
    found = await query(
        url,
        "SELECT sum(total_exec_time), sum(calls) FROM pg_stat_statements"
        " WHERE query ILIKE %s AND query NOT LIKE %s AND dbid = (SELECT oid FROM pg_database"
        " WHERE datname = current_database())",
        CLAIM_PATTERNS[side.lib],
        f"%{TAG}%",
    )
    if not found or found[0][0] is None or not found[0][1]:
        return None
    return float(found[0][0]), int(found[0][1])


# -- report --------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> str:
    if not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return "-"
    return f"{(ours / theirs if higher_is_better else theirs / ours):.2f}x"


def render(libs: Sequence[str], rows: list[tuple[str, dict[str, float | None], bool, int]]) -> str:
    peers = [lib for lib in libs if lib != "agendapy"]
    head = ["workload", *libs, *[f"agendapy vs {p}" for p in peers]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, values, higher, digits in rows:
        cells = [fmt(values.get(lib), digits) for lib in libs]
        cells += [ratio(values.get("agendapy"), values.get(p), higher) for p in peers]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def lib_versions(libs: Sequence[str]) -> str:
    out = []
    for lib in libs:
        if lib == "agendapy":
            try:
                out.append(f"agendapy {version('agendapy')} (sources {source_digest()})")
            except PackageNotFoundError:
                out.append(f"agendapy (sources {source_digest()})")
        elif lib == "procrastinate":
            try:
                out.append(f"procrastinate {version('procrastinate')}")
            except PackageNotFoundError:
                out.append("procrastinate ?")
        else:
            pkg = NODE_DIR / "node_modules" / "@agendajs" / "postgres-backend" / "package.json"
            node_v = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout
            backend = json.loads(pkg.read_text()).get("version", "?") if pkg.exists() else "?"
            out.append(f"Node {node_v.strip()} agenda 6.2.6 + @agendajs/postgres-backend {backend}")
    return ", ".join(out)


def node_ready() -> tuple[bool, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return False, "node/npm not on PATH: the Node column is skipped"
    if not (NODE_DIR / "node_modules" / "@agendajs" / "postgres-backend" / "package.json").exists():
        log("installing benchmarks/node's packages (npm install) ...")
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            return False, "npm install in benchmarks/node failed (Node column skipped):\n" + result.stderr[
                -800:
            ]
    return True, ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", choices=("postgres",), default="postgres")
    p.add_argument("--quick", action="store_true", help="N = 1,000, claim at 10k, 20 latency samples")
    p.add_argument("--only", default=None, help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--libs", default=",".join(LIBS), help=f"columns, of {', '.join(LIBS)} (all)")
    p.add_argument("--skip-node", action="store_true")
    p.add_argument("--skip-procrastinate", action="store_true")
    p.add_argument("--drain-n", default=None, help="job counts (1000,10000; --quick 1000)")
    p.add_argument("--workers", default="1,4", help="worker process counts (1,4)")
    p.add_argument("--claim-rows", default=None, help="jobs not due (10000,100000,1000000; --quick 10000)")
    p.add_argument("--latency-jobs", type=int, default=None, help="samples (100; --quick 20)")
    p.add_argument("--budget", type=float, default=None, help="seconds per drain cell (180; --quick 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="markdown file (default: results/compare-pg-<date>.md)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    sections = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown sections {sorted(unknown)} (known: {', '.join(SECTIONS)})")
    drain_ns = [int(x) for x in (args.drain_n or ("1000" if args.quick else "1000,10000")).split(",")]
    worker_counts = [int(x) for x in args.workers.split(",")]
    claim_default = "10000" if args.quick else "10000,100000,1000000"
    claim_rows = [int(x) for x in (args.claim_rows or claim_default).split(",")]
    samples = args.latency_jobs or (20 if args.quick else 100)
    budget = args.budget or (60.0 if args.quick else 180.0)
    wanted = set(args.libs.split(","))
    libs = ["agendapy"] if "agendapy" in wanted else []
    notes: list[str] = []
    if not args.skip_node and "node" in wanted:
        ok, why = node_ready()
        libs.append("node") if ok else notes.append(why)
    if not args.skip_procrastinate and "procrastinate" in wanted:
        try:
            version("procrastinate")
            libs.append("procrastinate")
        except PackageNotFoundError:
            notes.append("procrastinate is not installed (pip install procrastinate==3.10.0; group bench)")
    load_before = os.getloadavg()
    started = time.monotonic()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"agendapy-compare-pg-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    drains: dict[tuple[str, int, int], Drain] = {}
    latencies: dict[str, list[float]] = {}
    claims: dict[tuple[str, int], tuple[float, int] | None] = {}
    server_version = "?"
    for lib in libs:
        side = Side(lib)
        server = Server()
        await server.start()
        try:
            server_version = str((await query(server.pg.url, "SHOW server_version"))[0][0])
            if "drain" in sections:
                for n in drain_ns:
                    for count in worker_counts:
                        log(f"{lib}: drain {n:,} jobs with {count} worker(s)")
                        result = await drain(side, server, n, count, budget, workdir)
                        drains[(lib, n, count)] = result
                        log(
                            f"  {result.done}/{n} in {result.seconds:.1f} s: {result.rate:,.0f} jobs/s,"
                            f" {fmt(result.statements, 2)} statements/job,"
                            f" {fmt(result.commits, 2)} commits/job"
                        )
            if "latency" in sections:
                log(f"{lib}: latency now() -> start, {samples} jobs")
                latencies[lib] = await latency(side, server, samples, workdir, rng)
                log(f"  p50 {percentile(latencies[lib], 50):.1f} ms")
            if "claim" in sections:
                for rows in claim_rows:
                    log(f"{lib}: claim cost among {rows:,} jobs not due")
                    claims[(lib, rows)] = await claim_cost(side, server, rows, workdir)
                    log(f"  total ms, calls: {claims[(lib, rows)]}")
        finally:
            await asyncio.to_thread(server.stop)

    table: list[tuple[str, dict[str, float | None], bool, int]] = []
    for n in drain_ns:
        for count in worker_counts:
            cells = {lib: drains[(lib, n, count)] for lib in libs if (lib, n, count) in drains}
            if not cells:
                continue
            cell = f"drain {n:,} x {count}w"
            table.append((f"{cell}: jobs/s from spawn", {k: v.rate for k, v in cells.items()}, True, 0))
            table.append(
                (
                    f"{cell}: jobs/s first start to last finish",
                    {k: v.run_rate for k, v in cells.items()},
                    True,
                    0,
                )
            )
            table.append((f"{cell}: statements/job", {k: v.statements for k, v in cells.items()}, False, 2))
            table.append(
                (
                    f"{cell}: server transactions/job",
                    {k: v.commits for k, v in cells.items()},
                    False,
                    2,
                )
            )
    if drains:
        largest = max(drain_ns)
        rss = {lib: d.peak_rss_mb for (lib, n, c), d in drains.items() if n == largest and c == 1}
        table.append((f"worker peak RSS, MB (1 worker, {largest:,} jobs)", rss, False, 0))
    if latencies:
        for q in (50, 95):
            by_lib = {lib: percentile(v, q) for lib, v in latencies.items()}
            table.append((f"now() -> start p{q}, ms (idle worker, defaults)", by_lib, False, 1))
    for rows in claim_rows:
        found = {lib: c for (lib, r), c in claims.items() if r == rows and c is not None}
        if found:
            # Per call (a call of agendapy's claims up to 20 jobs, Node's one) and per job claimed.
            per_call = {lib: total / calls for lib, (total, calls) in found.items()}
            per_job = {lib: total / CLAIM_DUE for lib, (total, _) in found.items()}
            table.append((f"claim statement, ms per call ({rows:,} not due)", dict(per_call), False, 3))
            table.append((f"claim statement, ms per job claimed ({rows:,} not due)", dict(per_job), False, 3))

    load_after = os.getloadavg()
    took = time.monotonic() - started
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:])
    header = [
        f"# PostgreSQL comparison {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"- command: `{command}`",
        f"- libraries: {lib_versions(libs)}",
        f"- server: PostgreSQL {server_version} (tests/pg_server.py, durable; a fresh server per library)",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()};"
        f" load average before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f},"
        f" after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}",
        f"- took {took / 60:.1f} min; drain: {CONCURRENCY} jobs at once per worker, agendapy and Node"
        " poll every 100 ms; ratios: >1x = agendapy better",
        *[f"- note: {note}" for note in notes],
        "",
        "",
    ]
    tops = [
        f"- {d.lib} {d.n:,} x {d.workers}w top statements: "
        + "; ".join(f"{calls}x `{text}`" for calls, text in d.top[:3])
        for d in drains.values()
        if d.n == max(drain_ns) and d.workers == 1
    ]
    markdown = "\n".join(header) + render(libs, table) + "\n\n" + "\n".join(tops) + "\n"
    print(markdown)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS_DIR / f"compare-pg-{datetime.now():%Y%m%d-%H%M}.md"
    out.write_text(markdown, encoding="utf-8")
    log(f"written to {out}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
