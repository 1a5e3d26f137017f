"""The chaos harness's reading of PostgreSQL workers' run records (benchmarks/chaos.py): each worker
appends one JSON line per change of a record; the harness merges them by record id."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

CHAOS = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_harness", CHAOS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def write_lines(path: Path, *changes: dict[str, object], tail: str = "") -> None:
    path.write_text("".join(json.dumps(change) + "\n" for change in changes) + tail, encoding="utf-8")


def test_changes_of_one_record_merge_across_lines(chaos: ModuleType, tmp_path: Path) -> None:
    write_lines(
        tmp_path / "runs-1.jsonl",
        {"rec": "a", "jobId": "j1", "name": "chaos-task", "pid": 1, "start": 10.0},
        {"rec": "b", "jobId": "j2", "name": "chaos-task", "pid": 1, "start": 11.0},
        {"rec": "a", "finish": 12.0},
        {"rec": "a", "completeEvent": 12.5, "saved": True, "error": None},
    )
    records = sorted(chaos.read_run_records(tmp_path), key=lambda r: r["start"])
    assert records == [
        {"jobId": "j1", "name": "chaos-task", "pid": 1, "start": 10.0, "finish": 12.0, "completeEvent": 12.5,
         "saved": True, "error": None},
        {"jobId": "j2", "name": "chaos-task", "pid": 1, "start": 11.0},
    ]  # fmt: skip


def test_a_line_cut_by_a_kill_is_skipped_and_files_are_merged(chaos: ModuleType, tmp_path: Path) -> None:
    write_lines(
        tmp_path / "runs-1.jsonl",
        {"rec": "a", "jobId": "j1", "name": "chaos-task", "pid": 1, "start": 10.0},
        tail='{"rec": "a", "fini',  # SIGKILL mid-write
    )
    write_lines(
        tmp_path / "runs-2.jsonl",
        {"rec": "c", "jobId": "j1", "name": "chaos-task", "pid": 2, "start": 14.0},
        {"rec": "c", "finish": 15.0},
        {"rec": "orphan", "finish": 16.0},  # no start line: not a run record
    )
    records = sorted(chaos.read_run_records(tmp_path), key=lambda r: r["start"])
    assert [(r["pid"], r.get("finish")) for r in records] == [(1, None), (2, 15.0)]
