"""End to end through ``python -m agendapy``: every command, its --json output, exit statuses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agendapy import Agenda, Job, JobState

from ports import free_port
from support import wait_until

UNREACHABLE = "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=2000"

JOB_MODULE = textwrap.dedent(
    """
    import logging
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05)
    log = logging.getLogger("jobmod")

    @agenda.define("send email")
    async def send_email(job):
        log.info("sent to %s", job.data["to"])

    @agenda.define("report")
    def report(job):
        pass

    not_an_agenda = 42
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobmod.py").write_text(JOB_MODULE)
    return tmp_path


def cli_sync(
    *args: str, cwd: Path | None = None, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "agendapy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin if stdin is not None else "",
        env=environment,
        timeout=30,
    )


async def cli(
    *args: str, cwd: Path | None = None, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli_sync, *args, cwd=cwd, stdin=stdin, **env)


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def failed_job(agenda: Agenda, name: str = "send email") -> Job:
    job = agenda.create(name, {"to": "a@example.com"})
    job.next_run_at = None
    job.fail("smtp down")
    return await job.save()


# -- help --------------------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    top = cli_sync("--help")
    assert top.returncode == 0
    for command in ("worker", "run-due", "jobs", "schedule", "stats", "dashboard"):
        assert f"\n  {command} " in top.stdout
    for listed in (
        "jobs ls",
        "jobs show ID",
        "jobs cancel",
        "jobs retry ID",
        "jobs pause",
        "jobs purge TARGET",
    ):
        assert listed in top.stdout
    sub = cli_sync("jobs", "--help")
    for command in ("ls", "show", "cancel", "retry", "pause", "resume", "purge"):
        assert f"\n  {command} " in sub.stdout


# -- schedule ------------------------------------------------------------------------------------------------


async def test_schedule_now_at_a_date_and_every(agenda: Agenda, db_url: str) -> None:
    now_job = ok_json(
        await cli(
            "schedule",
            "send email",
            "now",
            "--data",
            '{"to": "a@example.com"}',
            "--mongo-url",
            db_url,
            "--json",
        )
    )
    assert now_job["state"] == "queued"
    assert now_job["data"] == {"to": "a@example.com"}
    assert now_job["last_modified_by"] == "agendapy-cli"

    later = ok_json(await cli("schedule", "report", "in 20 minutes", "--mongo-url", db_url, "--json"))
    due = datetime.fromisoformat(later["next_run_at"]) - datetime.now(UTC)
    assert timedelta(minutes=19) < due <= timedelta(minutes=20)
    assert later["state"] == "scheduled"

    cron = ok_json(
        await cli(
            "schedule",
            "report",
            "--every",
            "0 9 * * mon-fri",
            "--timezone",
            "Europe/Paris",
            "--mongo-url",
            db_url,
            "--json",
        )
    )
    assert (cron["type"], cron["repeat_interval"], cron["repeat_timezone"]) == (
        "single",
        "0 9 * * mon-fri",
        "Europe/Paris",
    )
    next_run = datetime.fromisoformat(cron["next_run_at"])
    assert next_run.astimezone(UTC).hour in (7, 8)  # 09:00 in Paris

    start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    delayed = ok_json(
        await cli(
            "schedule", "tick", start.isoformat(), "--every", "5 minutes", "--mongo-url", db_url, "--json"
        )
    )
    assert datetime.fromisoformat(delayed["next_run_at"]) >= start

    stored = await agenda.query_jobs()
    assert stored.total == 4
    text = await cli("schedule", "send email", "now", "--mongo-url", db_url)
    assert text.returncode == 0
    assert "scheduled send email" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "now", "--data", "{bad"], "not valid JSON"),
        (["x", "--every", "every so often"], "invalid interval"),
        (["x", "the day after never"], "invalid when"),
        (["x"], "give WHEN"),
        (["x", "now", "--timezone", "UTC"], "--every schedules only"),
        (["x", "--every", "5 minutes", "--timezone", "Mars/Olympus"], "invalid timezone"),
    ],
)
async def test_schedule_rejects_bad_input(agenda: Agenda, db_url: str, args: list[str], message: str) -> None:
    result = await cli("schedule", *args, "--mongo-url", db_url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert (await agenda.query_jobs()).total == 0


async def test_schedule_warns_about_a_name_target_does_not_define(
    agenda: Agenda, db_url: str, app_dir: Path
) -> None:
    result = await cli(
        "schedule", "unknown name", "now", "-t", "jobmod:agenda", "--mongo-url", db_url, cwd=app_dir
    )
    assert result.returncode == 0
    assert "does not define 'unknown name'" in result.stderr


# -- jobs ls / show ----------------------------------------------------------------------------------------


async def test_jobs_ls_filters_and_pages(agenda: Agenda, db_url: str) -> None:
    for n in range(3):
        await agenda.schedule(f"in {n + 1} hours", "send email", {"n": n})
    await agenda.now("report")
    failed = await failed_job(agenda, "import users")

    everything = ok_json(await cli("jobs", "ls", "--mongo-url", db_url, "--json"))
    assert everything["total"] == 5
    assert {"id", "name", "state", "next_run_at", "last_run_at", "fail_count", "locked_at"} <= set(
        everything["jobs"][0]
    )

    by_name = ok_json(await cli("jobs", "ls", "--name", "send email", "--mongo-url", db_url, "--json"))
    assert by_name["total"] == 3 and {j["name"] for j in by_name["jobs"]} == {"send email"}

    by_state = ok_json(await cli("jobs", "ls", "--state", "failed", "--mongo-url", db_url, "--json"))
    assert [j["id"] for j in by_state["jobs"]] == [failed.id]
    assert by_state["jobs"][0]["fail_count"] == 1

    search = ok_json(
        await cli(
            "jobs", "ls", "--search", "EMAIL", "--limit", "2", "--skip", "1", "--mongo-url", db_url, "--json"
        )
    )
    assert search["total"] == 3
    assert len(search["jobs"]) == 2

    table = await cli("jobs", "ls", "--mongo-url", db_url)
    assert table.returncode == 0
    assert failed.id in table.stdout and "import users" in table.stdout and "failed" in table.stdout
    assert "1-5 of 5 jobs" in table.stdout


async def test_text_output_shows_names_literally(agenda: Agenda, db_url: str) -> None:
    await agenda.now("[red]alert[/red]")
    table = await cli("jobs", "ls", "--mongo-url", db_url)
    assert "[red]alert[/red]" in table.stdout
    stats = await cli("stats", "--mongo-url", db_url)
    assert "[red]alert[/red]" in stats.stdout


HOSTILE_NAME = "\x1b]0;PWNED\x07\x9b31mred\u202eevil"


async def test_control_characters_from_the_database_never_reach_the_terminal(
    agenda: Agenda, db_url: str
) -> None:
    job = agenda.create(HOSTILE_NAME, {"note": "\x1b[2J"})
    job.fail("boom \x1b[8mhidden")
    job.last_modified_by = "\x1b[1Aworker"
    job = await job.save()
    for args in (("jobs", "ls"), ("stats",), ("jobs", "show", str(job.id)), ("jobs", "retry", str(job.id))):
        result = await cli(*args, "--mongo-url", db_url)
        assert result.returncode == 0, result.stderr
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in result.stdout + result.stderr, (args, result.stdout)
    listing = await cli("jobs", "ls", "--mongo-url", db_url)
    assert "\\x1b]0;PWNED\\x07" in listing.stdout  # shown, escaped, not dropped
    as_json = await cli("jobs", "ls", "--json", "--mongo-url", db_url)
    assert "\x1b" not in as_json.stdout and "\x9b" not in as_json.stdout and "\u202e" not in as_json.stdout
    assert [entry["name"] for entry in ok_json(as_json)["jobs"]] == [HOSTILE_NAME]


async def test_jobs_ls_reads_the_url_from_the_environment_and_another_collection(
    agenda: Agenda, db_url: str
) -> None:
    await agenda.now("report")
    assert ok_json(await cli("jobs", "ls", "--json", AGENDAPY_MONGO_URL=db_url))["total"] == 1
    ok_json(
        await cli("schedule", "other", "now", "--collection", "otherJobs", "--mongo-url", db_url, "--json")
    )
    other = ok_json(await cli("jobs", "ls", "--collection", "otherJobs", "--mongo-url", db_url, "--json"))
    assert [j["name"] for j in other["jobs"]] == ["other"]
    assert ok_json(await cli("jobs", "ls", "--mongo-url", db_url, "--json"))["total"] == 1


async def test_jobs_show_every_field_data_and_recent_runs(agenda: Agenda, db_url: str, app_dir: Path) -> None:
    @agenda.define("tick")
    async def tick(job: Job) -> None:
        pass

    job = await agenda.every("1 hour", "tick", {"region": "eu", "ids": [1, 2]})
    result = await agenda.run_due()
    assert len(result.succeeded) == 1

    shown = ok_json(await cli("jobs", "show", job.id or "", "--mongo-url", db_url, "--json"))
    assert shown["job"]["id"] == job.id
    assert shown["job"]["data"] == {"region": "eu", "ids": [1, 2]}
    assert shown["job"]["state"] == "repeating"
    assert shown["job"]["repeat_interval"] == "1 hour"
    assert {"last_run_at", "last_finished_at", "fail_reason", "disabled", "priority", "type"} <= set(
        shown["job"]
    )
    (run,) = shown["runs"]
    assert run["status"] == "succeeded" and run["job_id"] == job.id

    text = await cli("jobs", "show", job.id or "", "--mongo-url", db_url)
    assert text.returncode == 0
    assert '"region": "eu"' in text.stdout and "recent runs" in text.stdout and "succeeded" in text.stdout


async def test_unknown_job_id_is_bad_input(agenda: Agenda, db_url: str) -> None:
    for command in (["jobs", "show"], ["jobs", "retry"]):
        result = await cli(*command, "65f0c0ffee0000000000abcd", "--mongo-url", db_url)
        assert result.returncode == 2
        assert "no job with id '65f0c0ffee0000000000abcd'" in result.stderr


# -- jobs cancel / retry / pause / resume / purge ---------------------------------------------------------


async def test_jobs_cancel_asks_first_and_prints_the_count(agenda: Agenda, db_url: str) -> None:
    for n in range(3):
        await agenda.now("send email", {"to": f"{n}@example.com", "batch": n % 2})
    keep = await agenda.now("report")

    declined = await cli("jobs", "cancel", "--name", "send email", "--mongo-url", db_url, stdin="n\n")
    assert declined.returncode == 1
    assert "Delete 3 job(s)" in declined.stderr
    assert (await agenda.query_jobs()).total == 4

    by_data = ok_json(
        await cli("jobs", "cancel", "--data", '{"batch": 1}', "--yes", "--mongo-url", db_url, "--json")
    )
    assert by_data == {"cancelled": 1}

    confirmed = await cli("jobs", "cancel", "--name", "send email", "--mongo-url", db_url, stdin="y\n")
    assert confirmed.returncode == 0
    assert "cancelled 2 job(s)" in confirmed.stdout
    remaining = await agenda.query_jobs()
    assert [j.id for j in remaining.jobs] == [keep.id]

    by_id = ok_json(await cli("jobs", "cancel", "--id", keep.id or "", "-y", "--mongo-url", db_url, "--json"))
    assert by_id == {"cancelled": 1}

    nothing = await cli("jobs", "cancel", "--name", "send email", "--yes", "--mongo-url", db_url)
    assert nothing.returncode == 2 and "no job matches" in nothing.stderr
    no_criteria = await cli("jobs", "cancel", "--yes", "--mongo-url", db_url)
    assert no_criteria.returncode == 2
    bad_json = await cli("jobs", "cancel", "--data", "{", "--yes", "--mongo-url", db_url)
    assert bad_json.returncode == 2


async def test_jobs_retry_makes_a_failed_job_due_now_and_keeps_the_rest(agenda: Agenda, db_url: str) -> None:
    job = await failed_job(agenda)
    retried = ok_json(await cli("jobs", "retry", job.id or "", "--mongo-url", db_url, "--json"))
    assert abs(datetime.fromisoformat(retried["next_run_at"]) - datetime.now(UTC)) < timedelta(seconds=10)
    stored = await agenda.get_job(job.id or "")
    assert stored is not None
    assert stored.next_run_at is not None and stored.next_run_at <= datetime.now(UTC)
    assert (stored.fail_count, stored.fail_reason, stored.failed_at) == (1, "smtp down", job.failed_at)
    assert stored.data == {"to": "a@example.com"}


async def test_jobs_pause_and_resume(agenda: Agenda, db_url: str) -> None:
    first = await agenda.now("send email", {"to": "a"})
    await agenda.now("send email", {"to": "b"})
    other = await agenda.now("report")

    paused = ok_json(await cli("jobs", "pause", "--name", "send email", "--mongo-url", db_url, "--json"))
    assert paused == {"matched": 2, "paused": 2}
    again = ok_json(
        await cli(
            "jobs", "pause", "--id", first.id or "", "--id", other.id or "", "--mongo-url", db_url, "--json"
        )
    )
    assert again == {"matched": 2, "paused": 1}
    states = {j.id: j.disabled for j in (await agenda.query_jobs()).jobs}
    assert list(states.values()) == [True, True, True]

    resumed = await cli("jobs", "resume", "--name", "send email", "--mongo-url", db_url)
    assert resumed.returncode == 0 and "resumed 2 job(s)" in resumed.stdout
    assert [j.disabled for j in (await agenda.query_jobs(name="send email")).jobs] == [False, False]

    unknown = await cli("jobs", "pause", "--name", "no such job", "--mongo-url", db_url)
    assert unknown.returncode == 2


async def test_jobs_purge_deletes_names_target_does_not_define(
    agenda: Agenda, db_url: str, app_dir: Path
) -> None:
    await agenda.now("send email", {"to": "a"})
    await agenda.now("report")
    await agenda.now("retired job")
    await agenda.now("retired job")

    declined = await cli("jobs", "purge", "jobmod:agenda", "--mongo-url", db_url, cwd=app_dir, stdin="n\n")
    assert declined.returncode == 1 and "retired job (2)" in declined.stderr
    purged = ok_json(
        await cli("jobs", "purge", "jobmod:agenda", "--yes", "--mongo-url", db_url, "--json", cwd=app_dir)
    )
    assert purged == {"purged": 2}
    assert sorted(j.name for j in (await agenda.query_jobs()).jobs) == ["report", "send email"]

    needs_target = await cli("jobs", "purge", "--mongo-url", db_url)
    assert needs_target.returncode == 2 and "TARGET" in needs_target.stderr


# -- stats, run-due, worker ---------------------------------------------------------------------------------


async def test_stats_shows_the_overview_and_queue_size(agenda: Agenda, db_url: str, app_dir: Path) -> None:
    await agenda.now("send email", {"to": "a"})
    await agenda.now("send email", {"to": "b"})
    await agenda.schedule("in 1 hour", "retired job")
    await failed_job(agenda, "retired job")

    stats = ok_json(await cli("stats", "--mongo-url", db_url, "--json"))
    rows = {row["name"]: row for row in stats["overview"]}
    assert rows["send email"]["total"] == 2 and rows["send email"]["queued"] == 2
    assert rows["retired job"]["scheduled"] == 1 and rows["retired job"]["failed"] == 1
    assert stats["queue_size"] == 2
    assert stats["defined"] is None

    with_target = ok_json(
        await cli("stats", "-t", "jobmod:agenda", "--mongo-url", db_url, "--json", cwd=app_dir)
    )
    assert with_target["defined"] == ["report", "send email"]
    assert {row["name"]: row["total"] for row in with_target["overview"]}["report"] == 0

    table = await cli("stats", "--mongo-url", db_url)
    assert table.returncode == 0 and "send email" in table.stdout and "due now" in table.stdout


async def test_run_due_json(agenda: Agenda, db_url: str, app_dir: Path) -> None:
    await agenda.now("send email", {"to": "a@example.com"})
    await agenda.schedule("in 1 hour", "report")
    result = ok_json(await cli("run-due", "jobmod:agenda", "--mongo-url", db_url, "--json", cwd=app_dir))
    assert result["ok"] is True
    assert [(r["name"], r["status"]) for r in result["runs"]] == [("send email", "succeeded")]


async def test_run_due_says_why_a_dependent_interval_was_given_up(
    agenda: Agenda, db_url: str, app_dir: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from agendapy.schedule import RunInterval

    tick = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    half = timedelta(minutes=30)
    for start, status, error in ((tick - 2 * half, "failed", "SMTP down"), (tick - half, "succeeded", None)):
        run_id = await agenda.store.runs.start(
            name="send email",
            job_id=None,
            interval=RunInterval(start, start + half),
            guard=False,
            started_at=start + half,
            worker="earlier",
        )
        assert run_id is not None
        await agenda.store.runs.finish(run_id, status=status, finished_at=start + half, error=error)  # type: ignore[arg-type]
    await agenda.every("1 hour", "report", requires=["send email"])
    result = await cli("run-due", "jobmod:agenda", "report", "--mongo-url", db_url, "--json", cwd=app_dir)
    report = ok_json(result)
    assert report["ok"] is True
    [run] = report["runs"]
    assert (run["name"], run["status"]) == ("report", "skipped")
    assert "'send email' failed" in run["detail"] and "SMTP down" in run["detail"]


async def test_worker_logs_json_with_job_ids_and_serves_metrics(
    agenda: Agenda, db_url: str, app_dir: Path
) -> None:
    job = await agenda.now("send email", {"to": "ops@example.com"})
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    args = [
        "worker",
        "jobmod:agenda",
        "--mongo-url",
        db_url,
        "--json-logs",
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
    ]
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "agendapy", *args],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> str:
        try:
            return str(urllib.request.urlopen(url, timeout=30).read().decode())
        except OSError:  # not listening yet (URLError, ConnectionError); a timeout is one too
            return ""

    async def succeeded() -> bool:
        return 'agendapy_jobs_succeeded_total{name="send email"} 1.0' in await asyncio.to_thread(scrape)

    try:
        await wait_until(succeeded, timeout=60, interval=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert len(entries) == len([line for line in stderr.splitlines() if line.strip()]), stderr
    (sent,) = [e for e in entries if e["message"] == "sent to ops@example.com"]
    assert (sent["logger"], sent["job_id"], sent["job_name"]) == ("jobmod", job.id, "send email")
    assert all("job_id" not in e for e in entries if e["logger"] == "agendapy")


# -- dashboard ------------------------------------------------------------------------------------------


async def test_dashboard_serves_target_with_a_new_token_and_a_sign_in_link(
    agenda: Agenda, db_url: str, app_dir: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [
            sys.executable,
            "-m",
            "agendapy",
            "dashboard",
            "jobmod:agenda",
            "--mongo-url",
            db_url,
            "--port",
            str(port),
            "--read-only",
        ],
        cwd=app_dir,
        env={**env, "COLUMNS": "60"},  # the link is printed plainly: no log format wraps it
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def sign_in_link() -> str:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "?token=" in line:
                return line.split()[-1]
        raise AssertionError("no sign-in link printed")

    def status(url: str) -> int:
        # As a browser: the sign-in link sets the session cookie and redirects to the page without it.
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        try:
            return int(browser.open(url, timeout=30).status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:  # not listening yet (URLError, ConnectionError)
            return 0

    try:
        link = await asyncio.wait_for(asyncio.to_thread(sign_in_link), timeout=30)
        assert link.startswith(f"http://127.0.0.1:{port}/?token=")

        async def answers() -> bool:
            return await asyncio.to_thread(status, f"http://127.0.0.1:{port}/") != 0

        await wait_until(answers, timeout=60, interval=0.1)
        assert await asyncio.to_thread(status, f"http://127.0.0.1:{port}/") == 401
        assert await asyncio.to_thread(status, link) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0


async def test_dashboard_no_auth_is_explicit_and_warned(db_url: str, app_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENDAPY_")}
    args = ["dashboard", "jobmod:agenda", "--mongo-url", db_url, "--port", str(port), "--no-auth"]
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "agendapy", *args],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def status() -> int:
        try:
            return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=30).status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:  # not listening yet (URLError, ConnectionError)
            return 0

    async def answers() -> bool:
        return await asyncio.to_thread(status) != 0

    try:
        await wait_until(answers, timeout=60, interval=0.1)
        assert await asyncio.to_thread(status) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, stderr
    assert "NO AUTHENTICATION" in stderr and "?token=" not in stderr
    beyond = cli_sync("dashboard", "jobmod:agenda", "--host", "0.0.0.0", "--no-auth", cwd=app_dir)
    assert beyond.returncode == 2 and "refusing to serve the dashboard beyond loopback" in beyond.stderr


def test_dashboard_secrets_are_checked_and_read_from_a_file(app_dir: Path, db_url: str) -> None:
    typed = cli_sync("dashboard", "jobmod:agenda", "--mongo-url", db_url, "--token", "short", cwd=app_dir)
    assert typed.returncode == 2
    assert "visible to every user of this machine" in typed.stderr
    assert "at least 16 characters" in typed.stderr and "short" not in typed.stderr.split("warning")[-1]
    (app_dir / "token.txt").write_text("tiny\n")
    from_file = cli_sync(
        "dashboard", "jobmod:agenda", "--mongo-url", db_url, "--token-file", "token.txt", cwd=app_dir
    )
    assert from_file.returncode == 2
    assert from_file.stderr.strip().splitlines() == [
        "error: invalid input: invalid token '<4 characters>': must be at least 16 characters long; make one "
        "with python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    ]


def test_dashboard_without_its_extra_says_what_to_install(tmp_path: Path) -> None:
    code = "import sys; sys.modules['agendapy.dashboard'] = None; from agendapy.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "dashboard", "jobmod:agenda"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "pip install 'agendapy[dashboard]'" in result.stderr


def test_dashboard_rejects_malformed_basic_auth() -> None:
    result = cli_sync("dashboard", "jobmod:agenda", "--basic-auth", "no-colon")
    assert result.returncode == 2 and "USER:PASSWORD" in result.stderr


# -- bad input and unreachable databases -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nosuchmodule:agenda", "cannot import module 'nosuchmodule'"),
        ("jobmod:missing", "has no attribute 'missing'"),
        ("jobmod:not_an_agenda", "not an agendapy.Agenda"),
        ("jobmod", "expected MODULE:ATTRIBUTE"),
    ],
)
def test_a_bad_target_is_bad_input(app_dir: Path, db_url: str, target: str, message: str) -> None:
    result = cli_sync("run-due", target, "--mongo-url", db_url, cwd=app_dir)
    assert result.returncode == 2
    assert message in result.stderr


BROKEN_TARGETS = {
    "syntax.py": "def broken(:\n",
    "raises.py": "raise RuntimeError('no settings file')\n",
    "needs_dep.py": "import no_such_dependency_here\n",
    "factory.py": "def make():\n    raise ValueError('DATABASE_URL is not set')\n",
}


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("syntax:agenda", "SyntaxError: invalid syntax"),
        ("raises:agenda", "RuntimeError: no settings file"),
        ("needs_dep:agenda", "No module named 'no_such_dependency_here'"),
        ("factory:make", "ValueError: DATABASE_URL is not set"),
    ],
)
def test_a_target_that_fails_to_load_is_one_line_and_status_2(
    tmp_path: Path, db_url: str, target: str, message: str
) -> None:
    for name, source in BROKEN_TARGETS.items():
        (tmp_path / name).write_text(source)
    result = cli_sync("run-due", target, "--mongo-url", db_url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and target in lines[0], result.stderr


def test_deeply_nested_data_is_one_line_and_status_2(db_url: str) -> None:
    result = cli_sync("schedule", "x", "now", "--data", "[" * 50_000, "--mongo-url", db_url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid value for --data: JSON nested too deeply to read"
    ]


def test_collection_with_a_target_is_bad_input(app_dir: Path, db_url: str) -> None:
    result = cli_sync(
        "jobs", "ls", "-t", "jobmod:agenda", "--collection", "x", "--mongo-url", db_url, cwd=app_dir
    )
    assert result.returncode == 2 and "--collection" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "ls"],
        ["jobs", "show", "65f0c0ffee0000000000abcd"],
        ["jobs", "cancel", "--name", "x", "--yes"],
        ["schedule", "x", "now"],
        ["stats"],
    ],
)
def test_an_unreachable_database_fails_fast_with_status_1(args: list[str]) -> None:
    started = time.monotonic()
    result = cli_sync(*args, "--mongo-url", UNREACHABLE)
    assert result.returncode == 1, result.stderr
    assert "cannot reach MongoDB at mongodb://127.0.0.1:1/x" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 10


def test_a_malformed_url_is_bad_input() -> None:
    result = cli_sync("jobs", "ls", "--mongo-url", "http://localhost/x")
    assert result.returncode == 2 and "must start with mongodb://" in result.stderr


def test_state_names_are_checked() -> None:
    result = cli_sync("jobs", "ls", "--state", "sleeping", "--mongo-url", UNREACHABLE)
    assert result.returncode == 2
    assert all(state.value in result.stderr for state in JobState)


BROKEN_START_MODULE = textwrap.dedent(
    """
    from agendapy import Agenda

    agenda = Agenda(process_every=0.05)
    agenda.define("report", lambda job: None)

    @agenda.on("worker start")
    async def schedule():
        await agenda.every("5 bananas", "report")
    """
)


@pytest.mark.parametrize("command", ["worker", "run-due"])
async def test_a_failing_worker_start_listener_exits_1_in_one_line(
    agenda: Agenda, db_url: str, tmp_path: Path, command: str
) -> None:
    (tmp_path / "brokenstart.py").write_text(BROKEN_START_MODULE)
    await agenda.now("report")
    # A worker that ran on would never return: the timeout of cli() fails the test.
    result = await cli(command, "brokenstart:agenda", "--mongo-url", db_url, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'worker start'" in lines[0] and "InvalidInterval" in lines[0] and "5 bananas" in lines[0]
    (job,) = (await agenda.query_jobs()).jobs
    assert job.locked_at is None and job.last_run_at is None
    assert await agenda.workers() == []


async def test_a_foreign_name_and_an_unreadable_lock_list_and_count_the_same(
    agenda: Agenda, db_url: str, jobs_collection: Any
) -> None:
    await agenda.now("send email", {"to": "a"})
    await jobs_collection.insert_one({"name": 42, "nextRunAt": datetime(2030, 1, 1, tzinfo=UTC)})
    await jobs_collection.insert_one({"name": "send email", "lockedAt": "yesterday"})

    table = await cli("jobs", "ls", "--mongo-url", db_url)
    stats_table = await cli("stats", "--mongo-url", db_url)
    listing = ok_json(await cli("jobs", "ls", "--json", "--mongo-url", db_url))
    stats = ok_json(await cli("stats", "--json", "--mongo-url", db_url))

    assert table.returncode == 0 and "<name: 42>" in table.stdout, table.stdout
    assert stats_table.returncode == 0 and "<name: 42>" in stats_table.stdout, stats_table.stdout
    rows = {row["name"]: row for row in stats["overview"]}
    assert set(rows) == {"<name: 42>", "send email"}
    shown = sorted((job["display_name"], job["state"]) for job in listing["jobs"])
    assert shown == [("<name: 42>", "broken"), ("send email", "broken"), ("send email", "queued")]
    for state in ("broken", "running", "queued"):
        assert sum(row[state] for row in rows.values()) == sum(
            job["state"] == state for job in listing["jobs"]
        )
    assert rows["send email"]["running"] == 0 and rows["send email"]["broken"] == 1
    # The label is for reading: as a filter it matches no job (names in queries are plain strings).
    assert (
        ok_json(await cli("jobs", "ls", "--name", "<name: 42>", "--json", "--mongo-url", db_url))["total"]
        == 0
    )
