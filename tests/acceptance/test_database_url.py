"""``--database-url``/``AGENDAPY_DATABASE_URL`` beside the older ``--mongo-url``/``AGENDAPY_MONGO_URL``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from agendapy import Agenda

UNREACHABLE = "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=2000"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "agendapy", *args],
        capture_output=True,
        text=True,
        input="",
        env=environment,
        timeout=60,
    )


async def _one_job(db_url: str) -> str:
    agenda = Agenda(db_url)
    try:
        job = await agenda.schedule("in 1 hour", "report", {"n": 1})
        return str(job.id)
    finally:
        await agenda.close()


async def test_database_url_option_and_variable_reach_mongodb(db_url: str) -> None:
    job_id = await _one_job(db_url)
    by_option = cli("jobs", "ls", "--json", "--database-url", db_url)
    assert by_option.returncode == 0, by_option.stderr
    assert [j["id"] for j in json.loads(by_option.stdout)["jobs"]] == [job_id]
    by_variable = cli("jobs", "ls", "--json", AGENDAPY_DATABASE_URL=db_url)
    assert by_variable.returncode == 0, by_variable.stderr
    assert [j["id"] for j in json.loads(by_variable.stdout)["jobs"]] == [job_id]


async def test_the_new_variable_wins_over_the_old_one_and_options_over_both(db_url: str) -> None:
    job_id = await _one_job(db_url)
    newer = cli("jobs", "ls", "--json", AGENDAPY_DATABASE_URL=db_url, AGENDAPY_MONGO_URL=UNREACHABLE)
    assert newer.returncode == 0, newer.stderr
    assert [j["id"] for j in json.loads(newer.stdout)["jobs"]] == [job_id]
    old_option = cli("jobs", "ls", "--json", "--mongo-url", db_url, AGENDAPY_DATABASE_URL=UNREACHABLE)
    assert old_option.returncode == 0, old_option.stderr
    assert [j["id"] for j in json.loads(old_option.stdout)["jobs"]] == [job_id]


def test_two_different_urls_on_the_command_line_are_bad_input() -> None:
    result = cli("jobs", "ls", "--database-url", UNREACHABLE, "--mongo-url", "mongodb://127.0.0.1:2/y")
    assert result.returncode == 2
    assert "--database-url and --mongo-url" in result.stderr


def test_an_unknown_scheme_is_bad_input_listing_the_schemes() -> None:
    result = cli("jobs", "ls", "--database-url", "mysql://root:secret@db/app")
    assert result.returncode == 2, result.stderr
    assert "postgresql://" in result.stderr and "mongodb://" in result.stderr
    assert "secret" not in result.stderr


def test_table_with_a_mongodb_url_is_bad_input() -> None:
    result = cli("jobs", "ls", "--database-url", UNREACHABLE, "--table", "jobs")
    assert result.returncode == 2, result.stderr
    assert "table" in result.stderr and "PostgreSQL only" in result.stderr


async def test_an_agenda_without_db_uses_agendapy_database_url(db_url: str, monkeypatch: Any) -> None:
    job_id = await _one_job(db_url)
    monkeypatch.setenv("AGENDAPY_DATABASE_URL", db_url)
    monkeypatch.setenv("AGENDAPY_MONGO_URL", UNREACHABLE)
    agenda = Agenda()
    try:
        assert [str(j.id) for j in (await agenda.query_jobs()).jobs] == [job_id]
    finally:
        await agenda.close()
