"""The examples the docs point to work as written (each runs against this test's database)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.slow


def run_example(name: str, db_url: str) -> str:
    env = {**os.environ, "AGENDAPY_MONGO_URL": db_url}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_chunked_import_resumes_from_its_checkpoint(db_url: str) -> None:
    out = run_example("chunked_import.py", db_url)
    rows = [tuple(map(int, m)) for m in re.findall(r"imported rows (\d+)-(\d+)", out)]
    assert [start for start, _ in rows] == list(range(1, 101, 10)), "a chunk ran twice or was skipped"
    assert "worker-2: resuming at row" in out
    assert out.strip().endswith("worker-2: import finished")


def test_intervals_example_runs_reports_after_their_loads(db_url: str) -> None:
    out = run_example("intervals.py", db_url)
    loads = re.findall(r"load   \[(\S+), (\S+)\)", out)
    reports = re.findall(r"report \[(\S+), (\S+)\)", out)
    assert len(reports) >= 3
    assert len(loads) == len(set(loads)), "an interval of 'load' ran twice"
    lines = out.splitlines()
    for start, end in reports:
        position = next(i for i, line in enumerate(lines) if f"report [{start}, {end})" in line)
        before = "\n".join(lines[:position])
        assert f"[{start}," in before, f"the load starting {start} had not run before its report"


def test_run_due_example(db_url: str) -> None:
    out = run_example("run_due.py", db_url)
    assert "succeeded: 2, failed: 0" in out
    assert "later@example.com" not in out


def test_fixed_delay_example(db_url: str) -> None:
    out = run_example("fixed_delay.py", db_url)
    gaps = [float(g) for g in re.findall(r"started (\d+\.\d+) s after", out)]
    assert len(gaps) == 3
    assert all(gap >= 0.99 for gap in gaps)
