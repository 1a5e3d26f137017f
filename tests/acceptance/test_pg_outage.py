"""PostgreSQL going away under running workers: killed (SIGKILL of the postmaster), back after ~2 s.

Workers are real ``python -m agendapy worker`` processes on a PostgreSQL server of the test's own. Each
handler run appends a line (job id, "start"/"done") to a file, so the records outlive the server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agendapy import Agenda

from support import wait_until

pytestmark = pytest.mark.slow

MODULE = textwrap.dedent(
    """
    import asyncio, os
    from agendapy import Agenda

    agenda = Agenda(process_every=0.1, default_lock_lifetime=6, max_concurrency=5)
    RECORDS = os.environ["RECORDS"]

    def record(job, what):
        with open(RECORDS, "a") as out:
            out.write(f"{job.id} {what}\\n")

    @agenda.define("work")
    async def work(job):
        record(job, "start")
        await asyncio.sleep(float((job.data or {}).get("seconds", 0.05)))
        record(job, "done")
    """
)


class Worker:
    def __init__(self, directory: Path, url: str, name: str, grace: float) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RECORDS": str(directory / "records.txt")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agendapy", "worker", "outage:agenda", "--database-url", url,
                 "--name", name, "--grace", str(grace), "--log-level", "INFO"],
                cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def started(self) -> None:
        await wait_until(
            lambda: f"worker {self.name} started" in self.log() or self.proc.poll() is not None, timeout=60
        )
        assert self.proc.poll() is None, self.log()


@pytest.fixture
def server() -> Iterator[object]:
    from pg_server import PostgresServer

    # Durable: with synchronous_commit off (the other tests' setting) a killed server forgets its last
    # commits, claims included, which no production server does.
    own = PostgresServer(durable=True)
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


@pytest.fixture
def url(server: object, tmp_path: Path) -> str:
    (tmp_path / "outage.py").write_text(MODULE)
    return str(server.url)  # type: ignore[attr-defined]


def _records(directory: Path) -> list[tuple[str, str]]:
    path = directory / "records.txt"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]  # type: ignore[misc]


async def _schedule(url: str, count: int, seconds: float) -> list[str]:
    agenda = Agenda(url)
    try:
        return [str(job.id) for job in await agenda.now_many("work", [{"seconds": seconds}] * count)]
    finally:
        await agenda.close()


async def test_workers_ride_out_a_killed_server_and_lose_nothing(
    server: object, url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    ids = await _schedule(url, 150, 0.05)
    for i in range(2):
        workers.append(Worker(tmp_path, url, f"w{i}", grace=2))
    for worker in workers:
        await worker.started()
    await wait_until(lambda: sum(1 for _, what in _records(tmp_path) if what == "done") >= 20, timeout=60)

    server.kill()  # type: ignore[attr-defined]
    await asyncio.sleep(2)
    await asyncio.to_thread(server.restart)  # type: ignore[attr-defined]

    def finished() -> bool:
        return {job for job, what in _records(tmp_path) if what == "done"} >= set(ids)

    await wait_until(finished, timeout=90, interval=0.2)
    for worker in workers:
        assert worker.proc.poll() is None, worker.log()

    async def all_done_in_table() -> bool:
        try:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                row = await (
                    await conn.execute(
                        "SELECT count(*) FROM agenda_jobs WHERE name = 'work' AND last_finished_at IS NOT NULL"
                        " AND locked_at IS NULL"
                    )
                ).fetchone()
        except psycopg.OperationalError:
            return False
        return row is not None and row[0] == len(ids)

    await wait_until(all_done_in_table, timeout=60, interval=0.3)
    logs = "".join(worker.log() for worker in workers)
    said = [line for line in logs.splitlines() if "database" in line.lower() or "postgres" in line.lower()]
    assert said, f"no worker said the database went away:\n{logs[-3000:]}"
    assert "Traceback" not in logs, logs[-5000:]
    done = Counter(job for job, what in _records(tmp_path) if what == "done")
    # Final writes wait for the server (the lease stays valid meanwhile): no job ran twice.
    again = {job: n for job, n in done.items() if n > 1}
    assert again == {}, again


async def test_sigterm_during_the_outage_exits_within_the_grace(
    server: object, url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    await _schedule(url, 2, 30)
    worker = Worker(tmp_path, url, "stopper", grace=2)
    workers.append(worker)
    await worker.started()
    await wait_until(lambda: sum(1 for _, what in _records(tmp_path) if what == "start") >= 2, timeout=60)

    server.kill()  # type: ignore[attr-defined]
    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.proc.wait, 30)
    took = time.monotonic() - began
    assert took <= 2 + 1, f"exited after {took:.1f} s:\n{worker.log()[-3000:]}"
    assert code == 0, worker.log()[-3000:]


class SilentableProxy:
    """A TCP proxy to the server that can go silent: connections stay open, nothing passes either way
    and new ones are accepted but never answered (a server hung, or a network path dropping packets),
    the case where nothing fails fast and every wait is on a timeout."""

    def __init__(self, port: int) -> None:
        self._target_port = port
        self.silent = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.silent.is_set():
            await asyncio.Event().wait()  # accepted, never answered
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self._target_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                if self.silent.is_set():
                    await asyncio.Event().wait()
                writer.write(data)
                await writer.drain()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w), return_exceptions=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_sigterm_while_the_server_is_silent_exits_within_the_grace(
    server: object, url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """Nothing refuses at once here: each write, the unlocks, the goodbye, closing the pool and the
    listening connection would wait on the silent server; the stop still ends within grace + 1 s."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = SilentableProxy(port)
    proxied = url.replace(f":{port}/", f":{await proxy.start()}/")
    try:
        await _schedule(url, 3, 30)
        await _schedule(url, 100, 0.05)
        worker = Worker(tmp_path, proxied, "silenced", grace=2)
        workers.append(worker)
        await worker.started()
        await wait_until(
            lambda: sum(1 for _, what in _records(tmp_path) if what == "start") >= 20, timeout=60
        )

        proxy.silent.set()
        await asyncio.sleep(1)  # the writes of finishing runs now wait on the silent server
        began = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(worker.proc.wait, 15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 15 s after SIGTERM:\n{worker.log()[-5000:]}") from None
        took = time.monotonic() - began
        assert took <= 2 + 1, f"exited after {took:.1f} s:\n{worker.log()[-3000:]}"
        assert code == 0, worker.log()[-3000:]
    finally:
        proxy.close()


async def test_listening_on_a_silent_server_gives_up_in_seconds_not_minutes(server: object, url: str) -> None:
    """A connection attempt to a server that accepts and never answers ends on the store's connect
    timeout (5 s unless the URL sets one) as DatabaseUnavailable, not after psycopg's 130 s."""
    from agendapy.errors import DatabaseUnavailable
    from agendapy.store.postgres import PostgresJobStore

    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = SilentableProxy(port)
    store = PostgresJobStore(url.replace(f":{port}/", f":{await proxy.start()}/"))
    try:
        await store.connect()
        proxy.silent.set()
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(store.run_changes(), 60)
    finally:
        proxy.close()
        await asyncio.wait_for(store.close(), 30)
