"""The quick start (examples/quickstart.py) as the README runs it: a worker schedules, looking does not."""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from rich.console import Console

from ports import free_port
from support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
TARGET = "examples.quickstart:agenda"
TOKEN = "quickstart-dashboard-test-token-0123456789"


def _env(db_url: str) -> dict[str, str]:
    return {**os.environ, "AGENDAPY_MONGO_URL": db_url, "AGENDAPY_DASHBOARD_TOKEN": TOKEN}


async def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agendapy", *args],
        cwd=REPO,
        env=_env(db_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _spawn_dashboard(db_url: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agendapy", "dashboard", TARGET, "--port", str(port)],
        cwd=REPO,
        env=_env(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_looking_at_the_quickstart_schedules_nothing(db_url: str, jobs_collection: Any) -> None:
    for args in (["jobs", "ls", "--target", TARGET], ["jobs", "ls", "--json", "--target", TARGET]):
        result = await _cli(db_url, *args)
        assert result.returncode == 0, result.stderr
    result = await _cli(db_url, "stats", "--target", TARGET)
    assert result.returncode == 0, result.stderr

    port = free_port()
    dashboard = _spawn_dashboard(db_url, port)
    pages: list[int] = []
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,  # httpx's 5 s is short for a page of a dashboard just started on a loaded machine
        ) as http:

            async def served() -> bool:
                assert dashboard.poll() is None, dashboard.communicate()[1]
                try:
                    pages.append((await http.get("/")).status_code)
                except httpx.TransportError:
                    return False
                return True

            await wait_until(served, timeout=60, interval=0.2)
            for path in ("/jobs", "/api/overview"):
                pages.append((await http.get(path)).status_code)
    finally:
        dashboard.send_signal(signal.SIGINT)
        try:
            dashboard.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.communicate()
    assert pages == [200, 200, 200]
    assert await jobs_collection.count_documents({}) == 0


@pytest.fixture
def quickstart(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(REPO))
    module = importlib.import_module("examples.quickstart")
    yield module
    sys.modules.pop("examples.quickstart", None)


async def test_a_worker_schedules_the_demo_and_reports_a_final_failure(
    quickstart: ModuleType, db_url: str, jobs_collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = io.StringIO()
    monkeypatch.setattr(quickstart, "console", Console(file=printed, width=200))
    monkeypatch.setattr(quickstart.random, "random", lambda: 0.0)  # the import fails every time
    agenda = quickstart.agenda
    agenda.set_database(db_url)
    try:
        await agenda.start()
        names = await jobs_collection.distinct("name")
        assert set(names) == {"heartbeat", "send welcome email", "flaky import"}
        await wait_until(lambda: "failed 'flaky import' for good" in printed.getvalue(), timeout=90)
    finally:
        await agenda.close()
    assert "failed 'flaky import' for good after 4 attempts: upstream API timed out" in printed.getvalue()
