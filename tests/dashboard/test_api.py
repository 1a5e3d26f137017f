"""The dashboard over HTTP (ASGI transport, real database): pages, the JSON API, actions, and security."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from bson import ObjectId
from dashboard_support import (
    ORIGIN,
    MakeClient,
    ago,
    csrf_token,
    post,
    running_server,
    seed_states,
    set_fields,
)

from agendapy import Agenda, Job
from agendapy.dashboard import UnsafeBind, create_app, serve
from agendapy.dashboard.security import CONTENT_SECURITY_POLICY
from agendapy.dashboard.server import check_bind

from support import wait_until

XSS_NAME = '<script>alert("name")</script>'
XSS_DATA = {"html": "</pre><script>alert('data')</script>", "<img src=x onerror=alert(1)>": "&amp;"}
XSS_REASON = "<script>alert('reason')</script>"


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- pages and the read API ---------------------------------------------------------------------------


async def test_overview_counts_each_state(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    await seed_states(agenda, jobs_collection)

    body = (await http.get("/api/overview")).json()

    totals = body["overview"]["totals"]
    assert totals == {
        "total": 7,
        "scheduled": 2,  # one of them paused
        "queued": 1,
        "running": 1,
        "waiting": 0,
        "repeating": 1,
        "completed": 1,
        "failed": 1,
        "broken": 0,
        "paused": 1,
        "late": 1,  # the queued one: due a minute ago, and no worker took it
    }
    by_name = {row["name"]: row for row in body["overview"]["names"]}
    assert list(by_name) == ["email", "heartbeat", "import", "report"]
    assert by_name["email"]["failed"] == 1 and by_name["email"]["completed"] == 1
    assert by_name["import"]["running"] == 1 and by_name["import"]["paused"] == 1
    assert body["process"] is None  # this process runs no worker
    assert body["read_only"] is False


async def test_late_jobs_are_flagged_in_the_overview_the_list_and_the_job_page(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    @agenda.define("report")
    async def report(job: Job) -> None:
        pass

    orphan = await agenda.schedule(ago(600), "orphan")  # no worker defines it: it will never run
    late_report = await agenda.schedule(ago(300), "report")
    await agenda.schedule(ago(5), "report")  # just due: a worker will take it at its next poll
    running = await agenda.schedule(ago(600), "report")
    await set_fields(jobs_collection, running, lockedAt=ago(1))
    paused = await agenda.schedule(ago(600), "orphan")
    await agenda.disable(id=paused.id)
    await agenda.schedule("in 1 hour", "orphan")

    overview = (await http.get("/api/overview")).json()["overview"]
    listing = (await http.get("/api/jobs", params={"state": "late"})).json()
    everything = (await http.get("/api/jobs")).json()
    page = await http.get("/")
    job_page = await http.get(f"/jobs/{orphan.id}")
    fine_page = await http.get(f"/jobs/{running.id}")

    assert overview["totals"]["late"] == 2
    assert [(row["name"], row["count"], row["defined"]) for row in overview["late"]["names"]] == [
        ("orphan", 1, False),
        ("report", 1, True),
    ]
    assert [job["id"] for job in listing["jobs"]] == [orphan.id, late_report.id]
    assert {job["id"] for job in everything["jobs"] if job["late"]} == {orphan.id, late_report.id}
    assert "Late jobs" in page.text and "does not define it" in page.text
    assert 'class="notice warn" data-field="late" data-format="flag">' in job_page.text
    assert "(this app does not define it)" in job_page.text
    assert 'class="notice warn" data-field="late" data-format="flag" hidden>' in fine_page.text


async def test_the_job_page_shows_where_the_handler_raised(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    failed = await agenda.schedule(ago(60), "email")
    fine = await agenda.schedule("in 1 hour", "email")
    stack = 'Traceback (most recent call last):\n  File "app.py", line 3, in send\nValueError: <b>no</b>'
    await set_fields(
        jobs_collection, failed, failedAt=ago(1), failCount=1, failReason="<b>no</b>", failStack=stack
    )

    api = (await http.get(f"/api/jobs/{failed.id}")).json()
    page = (await http.get(f"/jobs/{failed.id}")).text
    fine_page = (await http.get(f"/jobs/{fine.id}")).text

    assert api["job"]["fail_stack"] == stack
    assert '<details class="traceback" data-field="fail_stack" data-format="section">' in page
    assert "in send\nValueError: &lt;b&gt;no&lt;/b&gt;</pre>" in page
    assert '<details class="traceback" data-field="fail_stack" data-format="section" hidden>' in fine_page


async def test_the_new_job_form_offers_defined_and_seen_names(
    agenda: Agenda, http: httpx.AsyncClient
) -> None:
    @agenda.define("send email")
    async def send_email(job: Job) -> None:
        pass

    await agenda.schedule("in 1 hour", "legacy import")

    page = (await http.get("/new")).text

    assert '<option value="send email" label="defined by this app">' in page
    assert '<option value="legacy import" label="seen in the database">' in page
    assert "Defined by this app: <code>send email</code>." in page


async def test_overview_page_lists_names_with_links(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    await seed_states(agenda, jobs_collection)

    page = await http.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/jobs?name=email&amp;state=failed"' in page.text
    assert 'data-total="failed">1<' in page.text
    assert '<template id="tpl-overview-row">' in page.text


async def test_job_list_filters_by_name_state_and_search(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    jobs = await seed_states(agenda, jobs_collection)

    async def ids(**params: Any) -> set[str]:
        response = await http.get("/api/jobs", params=params)
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()["jobs"]}

    assert await ids(name="email") == {jobs["completed"].id, jobs["failed"].id}
    assert await ids(state="failed") == {jobs["failed"].id}
    assert await ids(state="running") == {jobs["running"].id}
    assert await ids(state="paused") == {jobs["paused"].id}
    assert await ids(name="import", state="paused") == {jobs["paused"].id}
    assert await ids(search="EAT") == {jobs["repeating"].id}  # case-insensitive, part of the name
    assert len(await ids()) == 7
    assert len(await ids(name="", state="", search="")) == 7  # empty filters are no filters


async def test_job_list_pages(agenda: Agenda, http: httpx.AsyncClient) -> None:
    for i in range(5):
        await agenda.schedule(f"in {i + 1} hours", "tick", {"i": i})

    first = (await http.get("/api/jobs", params={"limit": 2})).json()
    last = (await http.get("/api/jobs", params={"limit": 2, "page": 3})).json()

    assert (first["total"], first["pages"], first["first"], first["last"]) == (5, 3, 1, 2)
    # Newest nextRunAt first, as Agendash lists them.
    assert first["jobs"][0]["next_run_at"] > first["jobs"][1]["next_run_at"]
    assert (last["page"], last["first"], last["last"], len(last["jobs"])) == (3, 5, 5, 1)
    page = await http.get("/jobs", params={"limit": 2, "page": 2, "name": "tick"})
    assert 'href="?name=tick&amp;limit=2&amp;page=1"' in page.text
    assert 'href="?name=tick&amp;limit=2&amp;page=3"' in page.text
    assert "3–4 of 5" in page.text


async def test_a_page_past_the_end_reports_no_range(agenda: Agenda, http: httpx.AsyncClient) -> None:
    await agenda.now("tick")

    beyond = (await http.get("/api/jobs", params={"page": 1_000_000})).json()
    paused = (await http.get("/api/jobs", params={"page": 7, "state": "paused"})).json()

    assert (beyond["jobs"], beyond["total"], beyond["first"], beyond["last"]) == ([], 1, 0, 0)
    assert (paused["jobs"], paused["total"], paused["first"], paused["last"]) == ([], 0, 0, 0)
    page = await http.get("/jobs", params={"page": 1_000_000})
    assert "0–0 of 1" in page.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "exploded"}, "invalid state 'exploded'"),
        ({"page": "0"}, "invalid page '0'"),
        ({"page": "two"}, "invalid page 'two': must be a whole number"),
        ({"limit": "100000"}, "invalid limit '100000'"),
        ({"name": "x" * 600}, "invalid name"),
    ],
)
async def test_job_list_rejects_bad_filters(
    http: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    api = await http.get("/api/jobs", params=params)
    page = await http.get("/jobs", params=params)

    assert api.status_code == 400
    assert api.json()["error"].startswith(message)
    assert page.status_code == 400
    assert "invalid" in page.text


async def test_job_detail_shows_every_field(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    jobs = await seed_states(agenda, jobs_collection)
    failed = jobs["failed"]
    await jobs_collection.update_one({"_id": ObjectId(failed.id)}, {"$set": {"checkpoint": {"offset": 42}}})

    body = (await http.get(f"/api/jobs/{failed.id}")).json()
    page = await http.get(f"/jobs/{failed.id}")

    job = body["job"]
    assert job["state"] == "failed"
    assert (job["fail_count"], job["fail_reason"]) == (3, "SMTP said no")
    assert job["data"] == {"to": "a@example.com"}
    assert job["data_json"] == '{\n  "to": "a@example.com"\n}'
    assert job["checkpoint_json"] == '{\n  "offset": 42\n}'
    for field in (
        "next_run_at",
        "locked_at",
        "last_run_at",
        "last_finished_at",
        "failed_at",
        "priority",
        "type",
    ):
        assert field in job["fields"]
    assert body["runs"] == []
    assert page.status_code == 200
    assert "SMTP said no" in page.text
    assert "&#34;to&#34;: &#34;a@example.com&#34;" in page.text  # the data, as escaped text
    assert 'data-action="retry"' in page.text


async def test_unknown_job_is_404(http: httpx.AsyncClient) -> None:
    missing = str(ObjectId())

    api = await http.get(f"/api/jobs/{missing}")
    page = await http.get(f"/jobs/{missing}")

    assert api.status_code == 404
    assert "no job with id" in api.json()["error"]
    assert page.status_code == 404
    assert (await http.get("/api/nothing-here")).json() == {"error": "Not Found"}


async def test_data_that_json_cannot_spell_is_shown(agenda: Agenda, http: httpx.AsyncClient) -> None:
    job = await agenda.now(
        "odd", {"when": datetime(2030, 1, 2, tzinfo=UTC), "id": ObjectId(), "nan": float("nan")}
    )

    body = (await http.get(f"/api/jobs/{job.id}")).json()

    assert body["job"]["data"]["when"] == "2030-01-02T00:00:00.000Z"
    assert body["job"]["data"]["nan"] == "nan"
    assert len(body["job"]["data"]["id"]) == 24


async def test_runs_endpoint_and_job_history(make_agenda: Any, make_client: MakeClient) -> None:
    agenda: Agenda = await make_agenda(history="all")

    @agenda.define("flaky")
    async def flaky(job: Job) -> None:
        if job.data["fail"]:
            raise RuntimeError("boom")

    ok = await agenda.now("flaky", {"fail": False})
    bad = await agenda.now("flaky", {"fail": True})
    await ok.run()
    await bad.run()
    http = await make_client(app=create_app(agenda, insecure_no_auth=True))

    runs = (await http.get("/api/runs", params={"name": "flaky"})).json()["runs"]
    failed = (await http.get("/api/runs", params={"status": "failed"})).json()["runs"]
    detail = (await http.get(f"/api/jobs/{bad.id}")).json()
    bad_status = await http.get("/api/runs", params={"status": "maybe"})

    assert sorted(run["status"] for run in runs) == ["failed", "succeeded"]
    assert all(run["duration"] is not None for run in runs)
    assert [run["error"] for run in failed] == ["boom"]
    assert len(detail["runs"]) == 2
    assert bad_status.status_code == 400
    page = await http.get(f"/jobs/{bad.id}")
    assert 'class="badge run-failed"' in page.text


async def test_workers_groups_locks_by_worker(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    one = await agenda.schedule(ago(10), "import")
    two = await agenda.schedule(ago(10), "export")
    stale = await agenda.schedule(ago(10), "export")
    await set_fields(jobs_collection, one, lockedAt=ago(20), lastModifiedBy="worker-b", progress=10)
    await set_fields(jobs_collection, two, lockedAt=ago(5), lastModifiedBy="worker-a")
    await set_fields(jobs_collection, stale, lockedAt=ago(3600), lastModifiedBy="worker-a")
    await agenda.now("idle")

    body = (await http.get("/api/workers")).json()
    page = await http.get("/workers")

    assert body["locked"] == 3
    assert [w["name"] for w in body["workers"]] == ["worker-a", "worker-b"]
    worker_a = body["workers"][0]
    assert [job["id"] for job in worker_a["jobs"]] == [stale.id, two.id]  # oldest lock first
    assert worker_a["jobs"][0]["lock_expired"] is True  # older than the 10 minute default lifetime
    assert worker_a["jobs"][1]["lock_expired"] is False
    assert 3590 < worker_a["jobs"][0]["lock_age"] < 3700
    assert page.status_code == 200
    assert "worker-b" in page.text


async def _a_minute_with_room(room: float = 20.0) -> datetime:
    """The current minute once at least ``room`` seconds of it are left: the activity a test writes
    for this minute must still be the API's last minute when it asks, however slow the machine."""
    now = datetime.now(UTC)
    left = 60 - now.second - now.microsecond / 1e6
    if left < room:
        await asyncio.sleep(left + 0.01)  # a wall-clock boundary to pass, not a condition to wait for
        now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0)


async def test_the_fleet_job_log_and_activity_through_the_api(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    held = await agenda.schedule(ago(10), "export")
    await set_fields(jobs_collection, held, lockedAt=ago(3600), lastModifiedBy="<b>gone</b>")
    database = jobs_collection.database
    await database["agendaWorkers"].insert_one(
        {"name": "<b>gone</b>", "host": "h", "pid": 3, "heartbeatEvery": 5.0, "lastSeen": ago(600)}
    )
    agenda.logging = True
    agenda.define("noisy", lambda job: None)
    noisy = await agenda.now("noisy")
    await agenda.run_due(["noisy"])
    minute = await _a_minute_with_room()
    await database["agendaActivity"].insert_one(
        {"_id": minute, "minute": minute, "done": 7, "failed": 2, "queued": 4}
    )

    fleet = (await http.get("/api/workers")).json()["fleet"]
    assert [(w["name"], w["state"], w["held"]) for w in fleet] == [("<b>gone</b>", "lost", "export")]
    page = await http.get("/workers")
    assert "&lt;b&gt;gone&lt;/b&gt;" in page.text and "<b>gone</b>" not in page.text

    job = (await http.get(f"/api/jobs/{noisy.id}")).json()
    assert [entry["event"] for entry in job["logs"]] == ["complete", "success", "start"]
    assert "job succeeded" in (await http.get(f"/jobs/{noisy.id}")).text

    activity = (await http.get("/api/activity")).json()
    assert len(activity["activity"]) == 60 and activity["activity"][-1]["done"] == 7
    charts = activity["charts"]
    assert charts["throughput"]["total"] == 7 and charts["failures"]["total"] == 2
    assert charts["queue"]["last"] == 4 and charts["queue"]["points"]
    overview = await http.get("/")
    assert 'id="chart-throughput"' in overview.text and "<rect" in overview.text


async def test_process_stats_show_when_this_process_runs_a_worker(
    agenda: Agenda, http: httpx.AsyncClient
) -> None:
    agenda.define("noop", lambda job: None)
    await agenda.start()

    body = (await http.get("/api/overview")).json()

    assert body["process"]["running_jobs"] == 0
    assert "noop" in body["process"]["job_status"]
    assert "config" not in body["process"]["job_status"]["noop"]


# -- actions ----------------------------------------------------------------------------------------------


async def test_run_now_makes_a_one_off_job_due(agenda: Agenda, http: httpx.AsyncClient) -> None:
    job = await agenda.schedule("in 3 hours", "report", {"month": 11})

    response = await post(http, f"/api/jobs/{job.id}/run")

    assert response.status_code == 200, response.text
    assert response.json()["job"]["id"] == job.id
    stored = await agenda.get_job(job.id)  # type: ignore[arg-type]
    assert stored is not None and stored.next_run_at is not None
    assert stored.next_run_at <= datetime.now(UTC)
    assert (await agenda.query_jobs(name="report")).total == 1


async def test_run_now_of_a_recurring_job_adds_a_run_and_keeps_the_schedule(
    agenda: Agenda, http: httpx.AsyncClient
) -> None:
    job = await agenda.every("1 hour", "sync", {"full": True}, skip_immediate=True)

    response = await post(http, f"/api/jobs/{job.id}/run")

    assert response.status_code == 200, response.text
    extra = response.json()["job"]
    assert extra["id"] != job.id
    stored = await agenda.get_job(job.id)  # type: ignore[arg-type]
    assert stored is not None and stored.next_run_at == job.next_run_at
    copy = await agenda.get_job(extra["id"])
    assert copy is not None and copy.data == {"full": True} and not copy.repeat_interval


async def test_run_now_refuses_a_running_one_off_job(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    job = await agenda.schedule(ago(5), "import")
    await set_fields(jobs_collection, job, lockedAt=ago(1))

    response = await post(http, f"/api/jobs/{job.id}/run")

    assert response.status_code == 409
    assert "is running" in response.json()["error"]


async def test_retry_a_failed_job(agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient) -> None:
    jobs = await seed_states(agenda, jobs_collection)

    retried = await post(http, f"/api/jobs/{jobs['failed'].id}/retry")
    refused = await post(http, f"/api/jobs/{jobs['scheduled'].id}/retry")

    assert retried.status_code == 200, retried.text
    stored = await agenda.get_job(jobs["failed"].id)  # type: ignore[arg-type]
    assert stored is not None and stored.next_run_at is not None
    assert stored.next_run_at <= datetime.now(UTC) and stored.fail_count == 3
    assert refused.status_code == 409
    assert "only failed jobs can be retried" in refused.json()["error"]


async def test_disable_enable_and_cancel(agenda: Agenda, http: httpx.AsyncClient) -> None:
    job = await agenda.schedule("in 1 hour", "report")

    disabled = await post(http, f"/api/jobs/{job.id}/disable")
    assert disabled.json()["job"]["disabled"] is True
    assert (await agenda.get_job(job.id)).disabled  # type: ignore[arg-type,union-attr]
    enabled = await post(http, f"/api/jobs/{job.id}/enable")
    assert enabled.json()["job"]["disabled"] is False
    cancelled = await post(http, f"/api/jobs/{job.id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["job"] is None
    assert await agenda.get_job(job.id) is None  # type: ignore[arg-type]
    again = await post(http, f"/api/jobs/{job.id}/cancel")
    assert again.status_code == 404


async def test_unknown_action_is_404(agenda: Agenda, http: httpx.AsyncClient) -> None:
    job = await agenda.now("report")

    response = await post(http, f"/api/jobs/{job.id}/explode")

    assert response.status_code == 404
    assert "unknown action" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ({"name": "mail", "data": {"to": "x@example.com"}}, "queued"),
        ({"name": "mail", "data": None, "schedule": "now"}, "queued"),
        ({"name": "mail", "data": [1, 2], "schedule": "in 20 minutes"}, "scheduled"),
        ({"name": "mail", "schedule": "2031-05-01T09:30:00Z"}, "scheduled"),
        ({"name": "mail", "repeat_every": "10 minutes"}, "repeating"),
        ({"name": "mail", "repeat_every": "0 9 * * mon-fri", "timezone": "Asia/Tokyo"}, "repeating"),
    ],
)
async def test_create_jobs(agenda: Agenda, http: httpx.AsyncClient, body: dict[str, Any], check: str) -> None:
    response = await post(http, "/api/jobs", body)

    assert response.status_code == 201, response.text
    created = response.json()["job"]
    assert created["state"] == check
    job = await agenda.get_job(created["id"])
    assert job is not None and job.name == "mail" and job.data == body.get("data")
    if "timezone" in body:
        assert job.repeat_timezone == "Asia/Tokyo" and job.repeat_interval == "0 9 * * mon-fri"
    if body.get("schedule", "now") not in ("now",):
        assert job.next_run_at is not None and job.next_run_at > datetime.now(UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": ""}, "invalid name '': must not be empty"),
        ({"data": {}}, "invalid name None: must be a string"),
        ({"name": "x", "schedule": "whenever you like"}, "invalid when"),
        ({"name": "x", "repeat_every": "every blue moon"}, "invalid interval"),
        ({"name": "x", "timezone": "Mars/Olympus"}, "invalid timezone"),
        ({"name": "x", "repeat_every": "1 hour", "timezone": "Mars/Olympus"}, "invalid timezone"),
        ({"name": "x", "data": {"n": 2**70}}, "invalid data"),
        ({"name": "x", "priority": 5}, "invalid body ['priority']: unknown fields"),
        ({"name": "x", "data": {"$where": 1}, "schedule": 5}, "invalid schedule 5: must be a string"),
    ],
)
async def test_create_rejects_bad_input_with_agendapys_message(
    agenda: Agenda, http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await post(http, "/api/jobs", body)

    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)
    assert (await agenda.query_jobs()).total == 0


async def test_create_rejects_malformed_bodies(http: httpx.AsyncClient) -> None:
    token = await csrf_token(http)
    headers = {"origin": ORIGIN, "x-csrf-token": token}

    not_json = await http.post(
        "/api/jobs", content=b"{nope", headers={**headers, "content-type": "application/json"}
    )
    array = await http.post("/api/jobs", json=[1], headers=headers)
    form = await http.post("/api/jobs", data={"name": "x"}, headers=headers)
    huge = await http.post("/api/jobs", json={"name": "x", "data": "y" * 1_100_000}, headers=headers)
    deep = await http.post(
        "/api/jobs", content=b"[" * 100_000, headers={**headers, "content-type": "application/json"}
    )

    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert array.status_code == 400 and "must be a JSON object" in array.json()["error"]
    assert form.status_code == 415
    assert huge.status_code == 413
    assert deep.status_code == 400


# -- security: authentication -------------------------------------------------------------------------------


async def test_token_is_required_when_configured(agenda: Agenda, make_client: MakeClient) -> None:
    http = await make_client(token="s3cret-token-for-tests")

    api = await http.get("/api/overview")
    page = await http.get("/")
    wrong = await http.get("/api/overview", headers={"authorization": "Bearer nope"})
    right = await http.get("/api/overview", headers={"authorization": "Bearer s3cret-token-for-tests"})
    static = await http.get("/static/app.js")

    assert api.status_code == 401 and api.json() == {"error": "authentication required"}
    assert api.headers["www-authenticate"] == 'Bearer realm="agendapy dashboard"'
    assert page.status_code == 401 and 'name="token"' in page.text and "Sign in" in page.text
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert static.status_code == 200  # code, not data: served to anyone
    for path in (
        "/jobs",
        "/workers",
        "/new",
        f"/jobs/{ObjectId()}",
        "/api/jobs",
        "/api/workers",
        "/api/events",
    ):
        assert (await http.get(path)).status_code == 401, path


async def test_query_token_sets_a_strict_http_only_session_cookie(make_client: MakeClient) -> None:
    http = await make_client(token="s3cret-token-for-tests")

    first = await http.get("/", params={"token": "s3cret-token-for-tests"})
    cookie = next(c for c in first.headers.get_list("set-cookie") if c.startswith("agendapy_session="))
    later = await http.get("/api/overview")  # the client keeps the cookie
    bad = await (await make_client(token="s3cret-token-for-tests")).get("/", params={"token": "guess"})

    # Signed in, the browser is sent to the same page without the token in its address bar.
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "s3cret-token-for-tests" not in cookie  # the cookie holds a derived value, not the token
    assert later.status_code == 200
    assert bad.status_code == 401


async def test_session_cookie_from_another_token_is_refused(make_client: MakeClient) -> None:
    old = await make_client(token="old-token-for-tests")
    await old.get("/", params={"token": "old-token-for-tests"})
    session = old.cookies["agendapy_session"]
    new = await make_client(token="new-token-for-tests")

    new.cookies.set("agendapy_session", session)
    response = await new.get("/api/overview")

    assert response.status_code == 401


async def test_login_form_and_logout(make_client: MakeClient) -> None:
    http = await make_client(token="s3cret-token-for-tests")

    form = await http.get("/login")
    wrong = await http.post("/login", data={"token": "nope"}, headers={"origin": ORIGIN})
    cross = await http.post(
        "/login", data={"token": "s3cret-token-for-tests"}, headers={"origin": "https://evil.example"}
    )
    right = await http.post("/login", data={"token": "s3cret-token-for-tests"}, headers={"origin": ORIGIN})

    assert form.status_code == 200 and 'action="/login"' in form.text
    assert wrong.status_code == 401 and "That token is not valid." in wrong.text
    assert cross.status_code == 403
    assert right.status_code == 303 and right.headers["location"] == "/"
    assert (await http.get("/api/overview")).status_code == 200
    page = await http.get("/")
    assert 'data-action="logout"' in page.text
    out = await post(http, "/logout")
    assert out.status_code == 303
    assert (await http.get("/api/overview")).status_code == 401


TOKEN = "s3cret-token-for-tests"


def client_at(app: Any, address: str) -> httpx.AsyncClient:
    """A client on ``app`` that the dashboard sees as coming from ``address``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url=ORIGIN)


def test_an_app_without_authentication_must_be_asked_for(agenda: Agenda, caplog: Any) -> None:
    with pytest.raises(ValueError, match=r"needs authentication.*insecure_no_auth=True"):
        create_app(agenda)
    with caplog.at_level("WARNING", logger="agendapy.dashboard"):
        create_app(agenda, insecure_no_auth=True)
    assert "NO AUTHENTICATION" in caplog.text


async def test_an_open_app_reached_by_another_name_says_it_has_no_authentication(
    make_client: MakeClient,
) -> None:
    http = await make_client(base_url="http://192.168.1.10:8080")
    refused = await http.get("/api/overview")
    assert refused.status_code == 400 and "WITHOUT AUTHENTICATION" in refused.text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token": "abc123def"}, "at least 16 characters"),
        ({"basic_auth": ("ops", "hunter2x")}, "at least 12 characters"),
    ],
)
def test_short_secrets_are_refused_without_showing_them(
    agenda: Agenda, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        create_app(agenda, **options)
    assert "abc123def" not in str(caught.value) and "hunter2x" not in str(caught.value)


async def test_wrong_tokens_make_that_client_wait_longer_each_time(agenda: Agenda) -> None:
    app = create_app(agenda, token=TOKEN)
    throttle = app.state.dashboard.policy.throttle
    now = [1000.0]
    throttle.clock = lambda: now[0]
    async with client_at(app, "203.0.113.7") as attacker, client_at(app, "198.51.100.1") as other:
        signed_in = await attacker.get("/", params={"token": TOKEN})  # a session from before the attack
        assert signed_in.status_code == 303  # to the page without the token
        session = attacker.cookies["agendapy_session"]
        attacker.cookies.clear()
        guesses = [
            (await attacker.get("/api/overview", headers={"authorization": f"Bearer guess-{i}"})).status_code
            for i in range(8)
        ]
        # A few mistakes are free; then the client waits and its credentials are not even checked.
        assert guesses[:6] == [401] * 6 and guesses[6:] == [429, 429]
        blocked = await attacker.get("/api/overview", headers={"authorization": f"Bearer {TOKEN}"})
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "1"
        by_query = await attacker.get("/", params={"token": TOKEN})
        assert by_query.status_code == 429
        # Other clients, and sessions that already exist, are not affected.
        assert (
            await other.get("/api/overview", headers={"authorization": f"Bearer {TOKEN}"})
        ).status_code == 200
        attacker.cookies.set("agendapy_session", session)
        assert (await attacker.get("/api/overview")).status_code == 200
        attacker.cookies.clear()
        now[0] += 1.5
        assert (
            await attacker.get("/api/overview", headers={"authorization": "Bearer again"})
        ).status_code == 401
        again = await attacker.get("/api/overview", headers={"authorization": f"Bearer {TOKEN}"})
        assert again.status_code == 429 and again.headers["retry-after"] == "2"  # twice as long
        now[0] += 2.5
        ok = await attacker.get("/api/overview", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


async def test_the_sign_in_form_is_throttled_too(agenda: Agenda) -> None:
    app = create_app(agenda, token=TOKEN)
    async with client_at(app, "203.0.113.8") as http:
        wrong = [
            (await http.post("/login", data={"token": f"guess-{i}"}, headers={"origin": ORIGIN})).status_code
            for i in range(7)
        ]
        right = await http.post("/login", data={"token": TOKEN}, headers={"origin": ORIGIN})
    assert wrong == [401] * 6 + [429]
    assert right.status_code == 429 and "Too many failed attempts" in right.text


async def test_sessions_are_signed_expire_and_end_at_sign_out(agenda: Agenda) -> None:
    app = create_app(agenda, token=TOKEN, session_max_age=3600)
    sessions = app.state.dashboard.policy.sessions
    now = [1_900_000_000.0]
    sessions.clock = lambda: now[0]
    async with client_at(app, "127.0.0.1") as http, client_at(app, "127.0.0.1") as thief:
        first = await http.post("/login", data={"token": TOKEN}, headers={"origin": ORIGIN})
        cookie = next(c for c in first.headers.get_list("set-cookie") if c.startswith("agendapy_session="))
        assert "Max-Age=3600" in cookie
        kept = http.cookies["agendapy_session"]
        await thief.post("/login", data={"token": TOKEN}, headers={"origin": ORIGIN})
        assert thief.cookies["agendapy_session"] != kept  # each sign-in is a new session, not a fixed value
        thief.cookies.clear()
        thief.cookies.set("agendapy_session", kept)
        assert (await thief.get("/api/overview")).status_code == 200
        # A forged expiry breaks the signature.
        expiry, _, rest = kept.partition(".")
        thief.cookies.set("agendapy_session", f"{int(expiry) + 10**6}.{rest}")
        assert (await thief.get("/api/overview")).status_code == 401
        thief.cookies.clear()
        for junk in ("\u00b2\u00b3.abc.def", "1.2", "", "x" * 5000, f"{expiry}..{rest}"):
            cookie_header = f"agendapy_session={junk}".encode("latin-1")
            assert (await thief.get("/api/overview", headers={"cookie": cookie_header})).status_code == 401
        # Signing out ends the session for every copy of the cookie.
        assert (await post(http, "/logout")).status_code == 303
        thief.cookies.set("agendapy_session", kept)
        assert (await thief.get("/api/overview")).status_code == 401
        # And a session that nobody ended expires.
        http.cookies.clear()
        await http.post("/login", data={"token": TOKEN}, headers={"origin": ORIGIN})
        assert (await http.get("/api/overview")).status_code == 200
        now[0] += 3601
        assert (await http.get("/api/overview")).status_code == 401


async def test_processes_serving_one_dashboard_accept_each_others_sessions(agenda: Agenda) -> None:
    # Two apps built with the same token stand for two worker processes behind one balancer.
    first, second = create_app(agenda, token=TOKEN), create_app(agenda, token=TOKEN)
    async with client_at(first, "127.0.0.1") as one, client_at(second, "127.0.0.1") as other:
        await one.post("/login", data={"token": TOKEN}, headers={"origin": ORIGIN})
        other.cookies.set("agendapy_session", one.cookies["agendapy_session"])
        assert (await other.get("/api/overview")).status_code == 200


async def test_basic_auth(make_client: MakeClient) -> None:
    http = await make_client(basic_auth=("ops", "pa:ss wörd-for-tests"))

    none = await http.get("/")
    wrong_user = await http.get("/", headers=basic("root", "pa:ss wörd-for-tests"))
    wrong_password = await http.get("/", headers=basic("ops", "pass"))
    garbage = await http.get("/", headers={"authorization": "Basic !!!"})
    right = await http.get("/", headers=basic("ops", "pa:ss wörd-for-tests"))

    assert none.status_code == 401
    assert none.headers["www-authenticate"].startswith('Basic realm="agendapy dashboard"')
    assert wrong_user.status_code == wrong_password.status_code == garbage.status_code == 401
    assert right.status_code == 200


async def test_either_credential_works_when_both_are_configured(make_client: MakeClient) -> None:
    http = await make_client(token="s3cret-token-for-tests", basic_auth=("ops", "pw-for-the-tests"))

    challenges = (await http.get("/api/overview")).headers.get_list("www-authenticate")

    assert len(challenges) == 2
    assert (await http.get("/api/overview", headers=basic("ops", "pw-for-the-tests"))).status_code == 200
    assert (
        await http.get("/api/overview", headers={"authorization": "Bearer s3cret-token-for-tests"})
    ).status_code == 200


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"token": ""}, "token"),
        ({"token": "   "}, "token"),
        ({"basic_auth": ("ops", "")}, "basic_auth"),
        ({"basic_auth": ("a:b", "pw")}, "basic_auth"),
        ({"basic_auth": "ops:pw"}, "basic_auth"),
        ({"allowed_hosts": "example.com", "insecure_no_auth": True}, "allowed_hosts"),
        ({"live_interval": 0, "insecure_no_auth": True}, "live_interval"),
        ({"token": "short-token", "session_max_age": 10}, "token"),
        ({"token": "s3cret-token-for-tests", "session_max_age": 10}, "session_max_age"),
        ({"insecure_no_auth": "yes"}, "insecure_no_auth"),
    ],
)
def test_create_app_rejects_unsafe_settings(agenda: Agenda, options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {field}"):
        create_app(agenda, **options)


async def test_open_dashboard_answers_loopback_hosts_only(make_client: MakeClient) -> None:
    rebinding = await make_client(base_url="http://attacker.example:8080")
    loopback = await make_client(base_url="http://localhost:8080")
    ipv6 = await make_client(base_url="http://[::1]:8080")
    allowed = await make_client(base_url="http://jobs.internal", allowed_hosts=["jobs.internal"])
    with_token = await make_client(base_url="http://jobs.example.com", token="t0ken-for-the-tests")

    refused = await rebinding.get("/api/overview")

    assert refused.status_code == 400 and "Invalid Host header" in refused.text
    assert (await loopback.get("/api/overview")).status_code == 200
    assert (await ipv6.get("/api/overview")).status_code == 200
    assert (await allowed.get("/api/overview")).status_code == 200
    assert (
        await with_token.get("/api/overview", headers={"authorization": "Bearer t0ken-for-the-tests"})
    ).status_code == 200


def test_serve_refuses_to_listen_beyond_loopback_without_auth() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        with pytest.raises(UnsafeBind, match="refusing to serve the dashboard beyond loopback"):
            check_bind(host, token=None, basic_auth=None)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, token=None, basic_auth=None)
    check_bind("0.0.0.0", token="t", basic_auth=None)
    check_bind("0.0.0.0", token=None, basic_auth=("u", "p"))


async def test_serve_without_auth_makes_a_token_and_logs_a_sign_in_link(
    agenda: Agenda, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agendapy.dashboard import server as server_module

    served: list[Any] = []

    async def fake_serve(self: Any, sockets: Any = None) -> None:
        served.append(self.config.app)

    monkeypatch.setattr(server_module._Server, "serve", fake_serve)
    with caplog.at_level("INFO", logger="agendapy.dashboard"):
        await serve(agenda, port=8123)
    (app,) = served
    link = next(r.getMessage() for r in caplog.records if "?token=" in r.getMessage()).split()[-1]
    token = link.partition("?token=")[2]
    assert link.startswith("http://127.0.0.1:8123/?token=") and len(token) >= 32
    assert app.state.dashboard.policy.token == token
    caplog.clear()
    with caplog.at_level("INFO", logger="agendapy.dashboard"):
        await serve(agenda, port=8123, insecure_no_auth=True)
    assert served[1].state.dashboard.policy.requires_auth is False
    assert "NO AUTHENTICATION" in caplog.text and "?token=" not in caplog.text


async def test_serve_fails_before_listening(agenda: Agenda) -> None:
    with pytest.raises(ValueError, match="beyond loopback"):
        await serve(agenda, host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="invalid port"):
        await serve(agenda, port=70000)


# -- security: read-only mode -------------------------------------------------------------------------------


async def test_read_only_hides_and_refuses_every_write(
    agenda: Agenda, jobs_collection: Any, make_client: MakeClient
) -> None:
    job = await agenda.schedule(ago(60), "report")
    await set_fields(jobs_collection, job, lastFinishedAt=ago(1), failedAt=ago(1), failReason="x")
    http = await make_client(read_only=True)

    pages = [await http.get(path) for path in ("/", "/jobs", f"/jobs/{job.id}", "/workers")]
    writes = [
        await post(http, f"/api/jobs/{job.id}/{action}")
        for action in ("run", "retry", "disable", "enable", "cancel")
    ]
    create = await post(http, "/api/jobs", {"name": "x"})
    bearer = await (await make_client(read_only=True, token="t0ken-for-the-tests")).post(
        "/api/jobs", json={"name": "x"}, headers={"authorization": "Bearer t0ken-for-the-tests"}
    )

    for page in pages:
        assert page.status_code == 200
        assert "data-action=" not in page.text and "New job" not in page.text
        assert "read-only" in page.text
    for response in [*writes, create, bearer]:
        assert response.status_code == 403
        assert response.json() == {"error": "the dashboard is read-only"}
    assert (await http.get("/new")).status_code == 403
    assert (await http.get("/api/overview")).json()["read_only"] is True
    assert (await agenda.query_jobs()).total == 1


# -- security: CSRF ----------------------------------------------------------------------------------------


async def test_posts_need_the_sessions_csrf_token(agenda: Agenda, make_client: MakeClient) -> None:
    job = await agenda.schedule("in 1 hour", "report")
    app = create_app(agenda, insecure_no_auth=True)
    http = await make_client(app=app)
    stranger = await make_client(app=app)
    token = await csrf_token(http)
    await csrf_token(stranger)  # a session of its own
    path = f"/api/jobs/{job.id}/disable"

    missing = await http.post(path, headers={"origin": ORIGIN})
    wrong = await http.post(path, headers={"origin": ORIGIN, "x-csrf-token": "0" * 64})
    other_session = await stranger.post(path, headers={"origin": ORIGIN, "x-csrf-token": token})
    as_form = await http.post(path, data={"csrf_token": token}, headers={"origin": ORIGIN})

    for response in (missing, wrong, other_session, as_form):
        assert response.status_code == 403
        assert "CSRF" in response.json()["error"]
    assert not (await agenda.get_job(job.id)).disabled  # type: ignore[arg-type,union-attr]
    ok = await http.post(path, headers={"origin": ORIGIN, "x-csrf-token": token})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "http://127.0.0.1.evil.example"},
        {"referer": "https://evil.example/page"},
        {},  # neither Origin nor Referer
    ],
)
async def test_posts_must_come_from_the_same_origin(
    agenda: Agenda, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    job = await agenda.schedule("in 1 hour", "report")
    token = await csrf_token(http)

    response = await http.post(f"/api/jobs/{job.id}/cancel", headers={"x-csrf-token": token, **headers})

    assert response.status_code == 403
    assert "cross-origin" in response.json()["error"]
    assert await agenda.get_job(job.id) is not None  # type: ignore[arg-type]


async def test_same_origin_referer_is_enough_without_origin(agenda: Agenda, http: httpx.AsyncClient) -> None:
    job = await agenda.schedule("in 1 hour", "report")
    token = await csrf_token(http)

    response = await http.post(
        f"/api/jobs/{job.id}/disable", headers={"x-csrf-token": token, "referer": f"{ORIGIN}/jobs/{job.id}"}
    )

    assert response.status_code == 200


async def test_bearer_requests_need_no_csrf_token_but_cookie_and_basic_sessions_do(
    agenda: Agenda, make_client: MakeClient
) -> None:
    job = await agenda.schedule("in 1 hour", "report")
    path = f"/api/jobs/{job.id}/disable"
    bearer = await make_client(token="t0ken-for-the-tests")
    cookie = await make_client(token="t0ken-for-the-tests")
    await cookie.get("/", params={"token": "t0ken-for-the-tests"})
    basic_client = await make_client(basic_auth=("ops", "pw-for-the-tests"))

    by_bearer = await bearer.post(path, headers={"authorization": "Bearer t0ken-for-the-tests"})
    by_cookie = await cookie.post(path, headers={"origin": ORIGIN})
    by_basic = await basic_client.post(path, headers={**basic("ops", "pw-for-the-tests"), "origin": ORIGIN})

    assert by_bearer.status_code == 200
    assert by_cookie.status_code == 403
    assert by_basic.status_code == 403


# -- security: escaping and headers ------------------------------------------------------------------------


async def test_database_values_are_escaped_everywhere(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    job = await agenda.schedule(ago(30), XSS_NAME, XSS_DATA)
    await set_fields(
        jobs_collection,
        job,
        failedAt=ago(1),
        lastFinishedAt=ago(1),
        failReason=XSS_REASON,
        lockedAt=ago(1),
        lastModifiedBy="<b>worker</b>",
        checkpoint={"<script>": "</script>"},
        repeatTimezone="<i>tz</i>",
    )
    title_breaker = await agenda.now("x</title><script>alert(1)</script>")

    responses = [
        await http.get(path, params=params)
        for path, params in [
            ("/", {}),
            ("/jobs", {}),
            ("/jobs", {"name": XSS_NAME}),
            ("/jobs", {"search": "<script>"}),
            (f"/jobs/{job.id}", {}),
            (f"/jobs/{title_breaker.id}", {}),
            ("/workers", {}),
            ("/new", {}),
            ("/jobs", {"state": "<script>alert(1)</script>"}),  # an error page that repeats the input
        ]
    ]

    for response in responses:
        html = response.text
        assert "<script>alert" not in html
        assert "</pre><script>" not in html
        assert "<img src=x" not in html
        assert "<b>worker</b>" not in html and "<i>tz</i>" not in html
        # The only script is the static file: no inline script, no script from elsewhere.
        [script] = re.findall(r"<script\b[^>]*>", html)
        assert re.fullmatch(r'<script src="/static/app\.js\?v=[0-9a-f]{12}" defer>', script)
    detail = responses[4].text
    assert "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;" in detail
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#39;data&#39;)&lt;/script&gt;" in detail
    assert "&lt;script&gt;alert(&#39;reason&#39;)&lt;/script&gt;" in detail
    assert "&lt;b&gt;worker&lt;/b&gt;" in responses[6].text
    # JSON carries the same values with <, > and & escaped: never markup, even if sniffed.
    api = await http.get(f"/api/jobs/{job.id}")
    assert "<" not in api.text and ">" not in api.text
    assert api.json()["job"]["name"] == XSS_NAME
    assert api.json()["job"]["data"] == XSS_DATA


async def test_no_inline_styles_or_handlers_in_templates(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    jobs = await seed_states(agenda, jobs_collection)

    for path in (
        "/",
        "/jobs",
        f"/jobs/{jobs['failed'].id}",
        f"/jobs/{jobs['running'].id}",
        "/workers",
        "/new",
    ):
        html = (await http.get(path)).text
        assert " style=" not in html and "<style" not in html, path  # CSP allows no inline style
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers
        assert "javascript:" not in html, path


async def test_security_headers_on_every_response(agenda: Agenda, make_client: MakeClient) -> None:
    job = await agenda.now("report")
    open_app = await make_client()
    locked = await make_client(token="t0ken-for-the-tests")
    responses = {
        "page": await open_app.get("/"),
        "detail": await open_app.get(f"/jobs/{job.id}"),
        "api": await open_app.get("/api/overview"),
        "static": await open_app.get("/static/style.css"),
        "not found": await open_app.get("/nowhere"),
        "bad request": await open_app.get("/api/jobs", params={"page": "x"}),
        "unauthorized": await locked.get("/"),
        "forbidden": await open_app.post("/api/jobs", json={}),
    }

    for label, response in responses.items():
        headers = response.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, label
        assert (
            "default-src 'self'" in CONTENT_SECURITY_POLICY
            and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        )
        assert (
            "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
            and "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
        )
        assert headers["x-frame-options"] == "DENY", label
        assert headers["x-content-type-options"] == "nosniff", label
        assert headers["referrer-policy"] == "same-origin", label
    assert responses["api"].headers["cache-control"] == "no-store"
    assert responses["page"].headers["cache-control"] == "no-store"
    assert responses["static"].headers["content-type"].startswith("text/css")
    assert responses["static"].headers["cache-control"] == "no-cache"
    assert responses["not found"].status_code == 404
    assert responses["bad request"].status_code == 400


async def test_csrf_cookie_is_http_only_and_strict(http: httpx.AsyncClient) -> None:
    response = await http.get("/")

    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("agendapy_csrf="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    again = await http.get("/")
    assert not [c for c in again.headers.get_list("set-cookie") if c.startswith("agendapy_csrf=")]


# -- mounting and live updates ---------------------------------------------------------------------------------


async def test_mounted_in_fastapi_under_a_prefix(agenda: Agenda, make_client: MakeClient) -> None:
    fastapi = pytest.importorskip("fastapi")
    job = await agenda.now("report")
    outer = fastapi.FastAPI()

    @outer.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    outer.mount("/admin/jobs", create_app(agenda, title="Billing jobs", insecure_no_auth=True))
    http = await make_client(app=outer)

    page = await http.get("/admin/jobs/")
    detail = await http.get(f"/admin/jobs/jobs/{job.id}")
    api = await http.get("/admin/jobs/api/jobs")
    script = await http.get("/admin/jobs/static/app.js")
    health_response = await http.get("/health")
    token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    action = await http.post(
        f"/admin/jobs/api/jobs/{job.id}/disable", headers={"origin": ORIGIN, "x-csrf-token": token}
    )

    assert page.status_code == 200 and "Billing jobs" in page.text
    assert 'href="/admin/jobs/jobs"' in page.text and 'src="/admin/jobs/static/app.js' in page.text
    assert 'data-base="/admin/jobs"' in page.text
    cookie = next(c for c in page.headers.get_list("set-cookie") if c.startswith("agendapy_csrf="))
    assert "Path=/admin/jobs" in cookie
    assert detail.status_code == 200 and api.json()["total"] == 1
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert health_response.json() == {"status": "ok"}
    assert "content-security-policy" not in health_response.headers  # the host app's own responses
    assert action.status_code == 200


class EventReader:
    """Reads Server-Sent Events off one streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def read(self, count: int = 1) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        name, data = "message", ""
        async for line in self._lines:
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
            elif line == "" and data:
                events.append((name, json.loads(data)))
                name, data = "message", ""
                if len(events) == count:
                    break
        return events


async def test_server_sent_events_announce_changes(agenda: Agenda) -> None:
    app = create_app(agenda, live_interval=0.1, insecure_no_auth=True)
    await agenda.now("first")

    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("GET", "/api/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-frame-options"] == "DENY"
            events = EventReader(stream)
            [(name, first)] = await events.read()
            await agenda.now("second")
            [(_, second)] = await asyncio.wait_for(events.read(), 30)
        # The poller stops with its last listener.
        await wait_until(lambda: app.state.dashboard.live.listeners == 0, timeout=30)

    assert name == "overview"
    assert [row["name"] for row in first["overview"]["names"]] == ["first"]
    assert [row["name"] for row in second["overview"]["names"]] == ["first", "second"]
    assert second["version"] > first["version"]


async def test_server_sent_events_need_authentication(agenda: Agenda) -> None:
    app = create_app(agenda, token="t0ken-for-the-tests", live_interval=0.1)

    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        refused = await http.get("/api/events")
        async with http.stream(
            "GET", "/api/events", headers={"authorization": "Bearer t0ken-for-the-tests"}
        ) as stream:
            events = await EventReader(stream).read()

    assert refused.status_code == 401
    assert events[0][0] == "overview"


async def test_closing_the_feed_ends_open_streams(agenda: Agenda) -> None:
    app = create_app(agenda, live_interval=0.1, insecure_no_auth=True)

    async with (
        running_server(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        http.stream("GET", "/api/events") as stream,
    ):
        events = EventReader(stream)
        await events.read()
        app.state.dashboard.live.close()
        rest = await asyncio.wait_for(events.read(100), 30)  # returns when the stream ends
    assert rest == []


async def test_websockets_are_refused_before_anything_else(agenda: Agenda) -> None:
    app = create_app(agenda, token="t0ken-for-the-tests")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/api/events",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
    }
    await app(scope, receive, send)

    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_a_sign_in_link_leaves_no_token_in_the_address_bar(make_client: MakeClient) -> None:
    http = await make_client(token="s3cret-token-for-tests")

    signed_in = await http.get(
        "/jobs", params={"name": "send email", "token": "s3cret-token-for-tests", "state": "failed"}
    )
    assert signed_in.status_code == 303
    location = signed_in.headers["location"]
    assert location == "/jobs?name=send+email&state=failed" and "token" not in location
    page = await http.get(location)  # what the browser loads next, with the session cookie only
    assert page.status_code == 200 and "s3cret-token-for-tests" not in page.text

    # An API call with the token in the query (a script) gets its answer, not a redirect.
    api = await (await make_client(token="s3cret-token-for-tests")).get(
        "/api/overview", params={"token": "s3cret-token-for-tests"}
    )
    assert api.status_code == 200
