"""Fixtures of the Node interoperability tests: Node Agenda 6.2.6 (with its MongoDB and PostgreSQL
backends) installed once, and a runner for the ESM helper scripts in ``tests/interop/node`` (each exits
on its own and takes ``--timeout-ms``; ``--url`` picks the backend by its scheme).

Skips (never fails) when ``node``/``npm`` are missing or too old, or when ``npm install`` fails (a
registry outage must not fail CI). ``node_modules`` is reused when it already holds the pinned versions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"
PINNED = {
    "agenda": "6.2.6",
    "@agendajs/mongo-backend": "4.0.3",
    "@agendajs/postgres-backend": "3.0.6",
    "pg": "8.23.1",
}
#: agenda 6.2.6 is ESM and uses import attributes (`import ... with { type: 'json' }`): Node >= 18.20.
MIN_NODE = (18, 20)
NPM_INSTALL_TIMEOUT = 300.0


def _installed_version(package: str) -> str | None:
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8")).get("version"))
    except (OSError, ValueError):
        return None


def _pinned_installed() -> bool:
    return all(_installed_version(pkg) == version for pkg, version in PINNED.items())


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _npm_error(text: str, lines: int = 8) -> str:
    """The first lines of npm's error output, without stack frames."""
    kept = [
        line
        for line in text.strip().splitlines()
        if not line.strip().removeprefix("npm error").strip().startswith("at ")
    ]
    return "\n".join(kept[:lines])


@pytest.fixture(scope="session", autouse=True)
def node_helpers() -> Path:
    """The helper folder with Node Agenda installed; skips every interop test when that cannot be had."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [tool for tool, path in (("node", node), ("npm", npm)) if path is None]
    if missing:
        pytest.skip(
            f"Node interop tests need Node.js >= 18.20 and npm on PATH (missing: {', '.join(missing)})"
        )
    assert node is not None
    assert npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    match = re.match(r"v(\d+)\.(\d+)", version)
    if match is None or (int(match[1]), int(match[2])) < MIN_NODE:
        pytest.skip(f"Node interop tests need Node.js >= {'.'.join(map(str, MIN_NODE))}; found {version!r}")
    if _pinned_installed():
        return NODE_DIR
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_loglevel": "error"}
    try:
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_INSTALL_TIMEOUT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"`npm install` in {NODE_DIR} did not finish within {NPM_INSTALL_TIMEOUT:g} s")
    if result.returncode != 0:
        pytest.skip(
            f"`npm install` in {NODE_DIR} failed (exit {result.returncode}):\n"
            + _npm_error(result.stderr or result.stdout)
        )
    if not _pinned_installed():
        found = {pkg: _installed_version(pkg) for pkg in PINNED}
        pytest.skip(f"`npm install` did not install the pinned versions {PINNED}; found {found}")
    return NODE_DIR


@dataclass
class NodeProcess:
    """A running helper script; its stdout is read as JSON lines."""

    script: str
    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            text = raw.decode("utf-8", "replace").strip()
            if text:
                try:
                    self.lines.append(json.loads(text))
                except ValueError:
                    self.lines.append({"event": "text", "text": text})
                self._changed.set()
        self._changed.set()

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]

    async def wait_event(self, event: str, within: float = 20.0) -> dict[str, Any]:
        """The first line of ``event``; fails the test if the script exits or the time runs out first."""

        async def until() -> dict[str, Any]:
            while True:
                found = self.events(event)
                if found:
                    return found[0]
                if self._reader is not None and self._reader.done():
                    await self.proc.wait()
                    raise AssertionError(self._describe(f"exited before printing {event!r}"))
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(until(), within)
        except TimeoutError:
            raise AssertionError(self._describe(f"printed no {event!r} within {within} s")) from None

    async def finish(self, within: float = 30.0) -> dict[str, Any]:
        """Wait for the script to exit on its own; returns its last JSON line. A non-zero exit fails."""
        assert self.proc.stderr is not None
        try:
            err = await asyncio.wait_for(self.proc.stderr.read(), within)
            await asyncio.wait_for(self.proc.wait(), within)
            if self._reader is not None:
                await asyncio.wait_for(self._reader, within)
        except TimeoutError:
            self.kill()
            raise AssertionError(self._describe(f"did not exit within {within} s")) from None
        self.stderr = err.decode("utf-8", "replace")
        if self.proc.returncode != 0:
            raise AssertionError(self._describe(f"exited with status {self.proc.returncode}"))
        if not self.lines:
            raise AssertionError(self._describe("printed nothing"))
        return self.lines[-1]

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def _describe(self, what: str) -> str:
        out = "\n".join(json.dumps(line) for line in self.lines[-20:])
        err = _tail(self.stderr, 30)
        return f"node {self.script} {what}\n--- stdout (last lines) ---\n{out}\n--- stderr ---\n{err}"


class NodeRunner:
    """Starts the helper scripts of ``tests/interop/node`` against this test's database."""

    def __init__(self, folder: Path, db_url: str) -> None:
        self.folder = folder
        self.db_url = db_url
        self.started: list[NodeProcess] = []
        # Agenda evaluates a cron without repeatTimezone in the process's local time, agendapy in UTC:
        # pin Node to UTC so results do not depend on the machine's zone.
        self.env = {**os.environ, "TZ": "UTC"}

    async def start(self, script: str, *args: str) -> NodeProcess:
        proc = await asyncio.create_subprocess_exec(
            "node",
            script,
            "--url",
            self.db_url,
            *args,
            cwd=self.folder,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        running = NodeProcess(script=script, proc=proc)
        running.start_reading()
        self.started.append(running)
        return running

    async def run(self, script: str, *args: str, within: float = 30.0) -> dict[str, Any]:
        """Run a script to its end; returns its last JSON line."""
        running = await self.start(script, *args)
        return await running.finish(within)

    async def close(self) -> None:
        for running in self.started:
            running.kill()
            await running.proc.wait()
            if running._reader is not None:
                running._reader.cancel()


@pytest.fixture
async def node(node_helpers: Path, db_url: str) -> AsyncIterator[NodeRunner]:
    """Run Node Agenda helper scripts on this test's database (any still running at teardown is killed)."""
    runner = NodeRunner(node_helpers, db_url)
    try:
        yield runner
    finally:
        await runner.close()


@pytest.fixture
async def node_pg(node_helpers: Path, pg_url: str) -> AsyncIterator[NodeRunner]:
    """Run the helper scripts with ``@agendajs/postgres-backend`` on this test's PostgreSQL database."""
    runner = NodeRunner(node_helpers, pg_url)
    try:
        yield runner
    finally:
        await runner.close()
