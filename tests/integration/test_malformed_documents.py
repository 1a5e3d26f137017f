"""Malformed documents beside good jobs (DESIGN.md section 12), with Hypothesis.

Random documents are written straight into the jobs collection, as another tool or a corruption would
leave them: wrong types in every field, foreign names (numbers, mappings, empty, huge), values at and
beyond the limits (int64 bounds, NaN, dates outside datetime's years, long text). Beside them, good jobs.
The properties:

* a worker runs every good job exactly once, and keeps running (no error escapes its loops);
* every listing answers: ``query_jobs`` in every state, ``jobs_overview``, ``get_job`` of each document;
  the dashboard's pages and JSON API (no 5xx); the CLI's ``jobs ls``, ``stats``, ``jobs show`` with and
  without ``--json`` (exit 0, no traceback, valid JSON).

Examples are few (each starts a worker and runs the CLI in process); ``AGENDAPY_FUZZ_EXAMPLES`` scales
them. The reported reproductions are pinned with ``@example``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure

from agendapy import Agenda, JobState
from agendapy.cli import main
from agendapy.dashboard import create_app

from support import wait_until

EXAMPLES = max(int(os.environ.get("AGENDAPY_FUZZ_EXAMPLES", "150")) // 15, 5)
TOKEN = "malformed-documents-test-token-0123456789abcdef"
GOOD_JOBS = 4

SUITE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    print_blob=True,
)

#: Every field Agenda and agendapy store.
FIELDS = [
    "name",
    "data",
    "type",
    "priority",
    "nextRunAt",
    "lockedAt",
    "lastRunAt",
    "lastFinishedAt",
    "failedAt",
    "failCount",
    "failReason",
    "repeatInterval",
    "repeatTimezone",
    "repeatAt",
    "disabled",
    "progress",
    "lastModifiedBy",
    "startDate",
    "endDate",
    "skipDays",
    "debounceStartedAt",
    "checkpoint",
    "fixedDelay",
    "misfire",
    "requires",
    "intervalStartedAt",
    "intervalEndedAt",
    "waitingFor",
    "waitingReason",
    "lockToken",
]

_now = datetime.now(UTC).replace(microsecond=0)
_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)


def _ok_key(key: str) -> bool:
    return "\x00" not in key and not key.startswith("$") and "." not in key


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(Int64),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.sampled_from(["", " ", "n/a", "1 minute", "* * * * *", "3:30pm", "Europe/Paris", "once", "single"]),
    st.just("x" * 20_000),
    st.datetimes(timezones=st.just(UTC)),
    st.sampled_from([_now - timedelta(days=1), _now, _now + timedelta(days=1)]),
    st.sampled_from([DatetimeMS(2**62), DatetimeMS(-(2**62)), DatetimeMS(253_402_300_800_000)]),
    st.builds(ObjectId),
    st.binary(max_size=10),
    st.just(Decimal128("1.5")),
)
wild = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_text.filter(_ok_key), inner, max_size=3)
    ),
    max_leaves=6,
)


names = st.one_of(st.just("task"), st.just("other"), wild)


@st.composite
def malformed_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A document due now (mostly), some of whose fields hold whatever another tool wrote."""
    doc: dict[str, Any] = {"name": draw(names), "nextRunAt": _now - timedelta(seconds=1), "lockedAt": None}
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        if draw(st.booleans()):
            doc[field] = draw(wild)
        else:
            doc.pop(field, None)
    return doc


async def _check_listings(agenda: Agenda, ids: list[str]) -> None:
    """Every reading entry point answers for every document."""
    result = await agenda.query_jobs()
    assert result.total == len(ids)
    for state in JobState:
        await agenda.query_jobs(state=state)
    await agenda.jobs_overview()
    for job_id in ids:
        assert await agenda.get_job(job_id) is not None


async def _check_dashboard(agenda: Agenda, ids: list[str]) -> None:
    """Every page and API route answers without a server error."""
    app = create_app(agenda, token=TOKEN)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=headers
    ) as http:
        paths = ["/", "/jobs", "/jobs?state=broken", "/jobs?state=failed", "/jobs?name=task", "/new"]
        paths += ["/workers", "/api/overview", "/api/jobs", "/api/jobs?state=broken", "/api/jobs?page=3"]
        paths += ["/api/runs", "/api/workers"]
        for job_id in ids:
            paths += [f"/jobs/{job_id}", f"/api/jobs/{job_id}"]
        for path in paths:
            response = await http.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text[:500])
            if path.startswith("/api/"):
                _strict_json(response.text)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _cli(db_url: str, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"AGENDAPY_MONGO_URL": db_url}, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.output)
    assert result.exit_code == 0, (args, result.output)
    # Errors and logged tracebacks go to stderr; stdout may hold a job's stored failStack, which is data.
    assert "Traceback" not in result.stderr, (args, result.stderr)
    return result.output


async def _check_cli(db_url: str, ids: list[str]) -> None:
    """Every CLI listing exits 0 without a traceback, and its --json output parses."""

    def run_all() -> None:
        _cli(db_url, "jobs", "ls")
        _cli(db_url, "stats")
        for args in (["jobs", "ls", "--json"], ["stats", "--json"]):
            _strict_json(_cli(db_url, *args))
        for job_id in ids:
            _cli(db_url, "jobs", "show", job_id)
            _strict_json(_cli(db_url, "jobs", "show", job_id, "--json"))

    # The CLI runs its own event loop (asyncio.run), so it cannot run on this test's loop.
    await asyncio.to_thread(run_all)


async def _insert(collection: Any, doc: dict[str, Any]) -> str | None:
    """Write ``doc`` as it is; None if the server refuses it. (SecantusDB refuses dates outside the years
    1-9999, which mongod stores; agendapy reads them either way.)"""
    try:
        result = await collection.insert_one(dict(doc))
    except OperationFailure as exc:
        note(f"the server refused {doc!r}: {exc}")
        return None
    return str(result.inserted_id)


# Each example starts a worker and runs the CLI a few times: more examples need more than the default.
@pytest.mark.timeout(max(120, EXAMPLES * 10))
@SUITE
@given(bad=st.lists(malformed_documents(), min_size=1, max_size=4))
@example(bad=[{"name": "task", "nextRunAt": _now, "failCount": "n/a"}, {"name": "task", "repeatAt": 5}])
@example(bad=[{"name": 5, "nextRunAt": _now}, {"name": {"a": 1}, "nextRunAt": _now}])
@example(
    bad=[{"name": "task", "failReason": _now}, {"name": "task", "failReason": math.nan, "lockedAt": _now}]
)
@example(bad=[{"name": "task", "nextRunAt": DatetimeMS(2**62), "failCount": 2**63 - 1}])
@example(bad=[{"name": "task", "nextRunAt": _now, "failCount": 2**63 - 1, "priority": -(2**63)}])
@example(bad=[{"name": "task", "nextRunAt": _now, "skipDays": [99], "repeatInterval": "1 minute"}])
async def test_good_jobs_run_once_and_everything_answers_beside_malformed_documents(
    db_url: str, jobs_collection: Any, bad: list[dict[str, Any]]
) -> None:
    await jobs_collection.delete_many({})
    agenda = Agenda(db_url, process_every=0.05)
    runs: dict[str, int] = {}
    errors: list[BaseException] = []
    agenda.on("error", errors.append)

    def handler(job: Any) -> None:
        runs[str(job.id)] = runs.get(str(job.id), 0) + 1
        if not (isinstance(job.data, dict) and job.data.get("good")):
            raise RuntimeError("a foreign job fails, to take the failure paths too")

    agenda.define("task", handler)
    try:
        good = [str((await agenda.now("task", {"good": True, "n": i})).id) for i in range(GOOD_JOBS)]
        bad_ids = [job_id for doc in bad if (job_id := await _insert(jobs_collection, doc))]
        await agenda.start()
        await wait_until(lambda: all(runs.get(job_id) for job_id in good), timeout=20)
        # A few more claim passes: no good job runs twice, and the worker is still up.
        await asyncio.sleep(0.25)
        assert [runs[job_id] for job_id in good] == [1] * GOOD_JOBS
        assert agenda.is_running and not errors, errors

        ids = good + bad_ids
        await _check_listings(agenda, ids)
        await _check_dashboard(agenda, ids)
        await _check_cli(db_url, [good[0], *bad_ids])
    finally:
        await agenda.stop(grace=1.0)
        await agenda.close()


async def test_cli_lists_and_purges_documents_with_foreign_names(
    db_url: str, jobs_collection: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    module = f"purge_target_{ObjectId()}"
    (tmp_path / f"{module}.py").write_text(
        f"from agendapy import Agenda\nagenda = Agenda({db_url!r})\nagenda.define('task', lambda job: None)\n"
    )
    monkeypatch.chdir(tmp_path)
    agenda = Agenda(db_url)
    try:
        await agenda.now("task")
    finally:
        await agenda.close()
    await jobs_collection.insert_many([{"name": 5}, {"name": {"a": 1}}, {"name": "gone", "failCount": "n/a"}])

    stats = json.loads(await asyncio.to_thread(_cli, db_url, "stats", "--json"))
    listing = json.loads(await asyncio.to_thread(_cli, db_url, "jobs", "ls", "--json", "--state", "broken"))
    purged = await asyncio.to_thread(_cli, db_url, "jobs", "purge", f"{module}:agenda", "--yes", "--json")

    by_name = {entry["name"]: entry for entry in stats["overview"]}
    # Each foreign name has its own row, labelled: never an empty name.
    assert (by_name["<name: 5>"]["broken"], by_name["<name: {'a': 1}>"]["broken"]) == (1, 1)
    assert (by_name["gone"]["broken"], by_name["task"]["queued"]) == (1, 1)
    assert sorted(job["unreadable"] for job in listing["jobs"]) == [
        "failCount 'n/a': must be a whole number",
        "name 5: must be a job name (a non-empty string)",
        "name {'a': 1}: must be a job name (a non-empty string)",
    ]
    assert json.loads(purged) == {"purged": 3}
    assert [doc["name"] async for doc in jobs_collection.find({})] == ["task"]
