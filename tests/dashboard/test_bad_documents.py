"""The dashboard beside documents written by other tools: every page and API route answers, and a
document agendapy cannot read is shown as broken, with the fields it cannot read."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import httpx

from agendapy import Agenda

FOREIGN: list[dict[str, Any]] = [
    {"name": 5},
    {"name": {"a": 1}},
    {"name": "task", "failReason": datetime(2020, 1, 1, tzinfo=UTC), "failedAt": datetime(2020, 1, 1)},
    {"name": "task", "failReason": math.nan},
    {"name": "task", "failCount": "n/a", "nextRunAt": datetime(2030, 1, 1)},
]


async def test_pages_and_api_answer_beside_foreign_documents(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    await agenda.now("task")
    ids = [str((await jobs_collection.insert_one(dict(doc))).inserted_id) for doc in FOREIGN]

    for path in ("/", "/jobs", "/jobs?state=broken", "/new", "/workers", "/api/overview", "/api/jobs"):
        response = await http.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    overview = (await http.get("/api/overview")).json()["overview"]
    broken = (await http.get("/api/jobs", params={"state": "broken"})).json()
    detail = (await http.get(f"/api/jobs/{ids[4]}")).json()["job"]
    page = await http.get(f"/jobs/{ids[4]}")

    assert overview["totals"]["broken"] == 5 and overview["totals"]["total"] == 6
    assert {row["name"] for row in overview["names"]} == {"<name: 5>", "<name: {'a': 1}>", "task"}
    assert broken["total"] == 5
    assert sorted(job["unreadable"].rsplit(": ", 1)[0] for job in broken["jobs"]) == [
        "failCount 'n/a'",
        "failReason datetime.datetime(2020, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)",
        "failReason nan",
        "name 5",
        "name {'a': 1}",
    ]
    assert (detail["state"], detail["unreadable"]) == ("broken", "failCount 'n/a': must be a whole number")
    assert page.status_code == 200
    assert "failCount &#39;n/a&#39;: must be a whole number" in page.text
    for job_id in ids:
        assert (await http.get(f"/jobs/{job_id}")).status_code == 200
        assert (await http.get(f"/api/jobs/{job_id}")).status_code == 200


async def test_a_foreign_name_is_shown_never_empty_and_never_a_filter(
    agenda: Agenda, jobs_collection: Any, http: httpx.AsyncClient
) -> None:
    await agenda.now("task")
    inserted = await jobs_collection.insert_one({"name": 42, "nextRunAt": datetime(2030, 1, 1)})
    job_id = str(inserted.inserted_id)
    # Counted as it is listed: broken, whatever its raw lockedAt says.
    await jobs_collection.insert_one({"name": "task", "lockedAt": "yesterday"})

    overview = (await http.get("/api/overview")).json()["overview"]
    rows = {row["name"]: row for row in overview["names"]}
    listed = (await http.get("/api/jobs")).json()["jobs"]
    detail = (await http.get(f"/api/jobs/{job_id}")).json()["job"]
    overview_page = (await http.get("/")).text
    job_page = (await http.get(f"/jobs/{job_id}")).text

    assert set(rows) == {"<name: 42>", "task"}
    assert rows["<name: 42>"]["broken"] == rows["<name: 42>"]["total"] == 1
    # Its links list every job (of the state clicked): no query can match the label.
    assert rows["<name: 42>"]["filter_name"] == "" and rows["task"]["filter_name"] == "task"
    assert (rows["task"]["running"], rows["task"]["broken"]) == (0, 1)
    assert overview["totals"]["broken"] == len(
        (await http.get("/api/jobs", params={"state": "broken"})).json()["jobs"]
    )
    assert (await http.get("/api/jobs", params={"state": "running"})).json()["total"] == 0
    assert {job["name"] for job in listed} == {"<name: 42>", "task"}
    assert all(job["name"] for job in listed)
    assert (detail["name"], detail["filter_name"], detail["foreign_name"]) == ("<name: 42>", "", "42")
    assert "&lt;name: 42&gt;" in overview_page and "&lt;name: 42&gt;" in job_page
    assert "name=%3Cname" not in overview_page and "name=%3Cname" not in job_page
    assert (await http.get("/api/jobs", params={"name": "<name: 42>"})).json()["total"] == 0
