"""The dashboard in headless Chromium: pages, filters, actions, live updates, the form, and sign-in.

Every test fails on a console error, an uncaught script error or a Content-Security-Policy violation.
With ``AGENDAPY_SCREENSHOTS=1`` the screenshot test saves the main pages to ``docs/screenshots``.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dashboard_support import ago, running_server, set_fields

from agendapy import Agenda, Job
from agendapy.dashboard import create_app

from support import wait_until

#: The Debian package's browser (``apt-get install chromium``); never ``playwright install``.
CHROMIUM = Path(os.environ.get("AGENDAPY_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set AGENDAPY_CHROMIUM)",
)
async_api = pytest.importorskip("playwright.async_api", reason="playwright (python) is not installed")
expect = async_api.expect
# Assertions wait as long as page actions do: on a loaded 2-core machine 5 s (the default) is short.
expect.set_options(timeout=15_000)

# Reported through the console, which the tests watch; init scripts run outside the page's CSP.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class WatchedPage:
    """A page plus every console error, script error and CSP violation it produced."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        self.expected: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))

    def expect_console_error(self, text: str) -> None:
        """Allow (not require) one console error containing ``text``: Chromium logs every 4xx response
        a script receives, even one the script handles."""
        self.expected.append(text)

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        for text in self.expected:
            if text in message.text:
                self.expected.remove(text)
                return
        self.problems.append(f"console error: {message.text}")


@asynccontextmanager
async def watched_page(browser: Any, *, dark: bool = False) -> AsyncIterator[WatchedPage]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 860}, color_scheme="dark" if dark else "light"
    )
    await context.add_init_script(REPORT_CSP_VIOLATIONS)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    watched = WatchedPage(page)
    try:
        yield watched
    finally:
        await context.close()
    assert watched.problems == []


async def test_overview_filter_open_run_now_and_see_it_complete(make_agenda: Any, browser: Any) -> None:
    agenda: Agenda = await make_agenda(name="worker-1", history="all")

    @agenda.define("send report")
    async def send_report(job: Job) -> None:
        await asyncio.sleep(0.3)
        await job.touch(50)
        await asyncio.sleep(0.3)

    report = await agenda.schedule("in 3 hours", "send report", {"month": "2026-11"})
    await agenda.every("5 minutes", "heartbeat", skip_immediate=True)
    failed = await agenda.schedule("in 1 hour", "import users")
    await set_fields(
        agenda_collection(agenda), failed, lastFinishedAt=ago(5), failedAt=ago(5), failReason="bad CSV"
    )
    await agenda.start()

    async with (
        running_server(create_app(agenda, live_interval=0.2, insecure_no_auth=True)) as url,
        watched_page(browser) as watched,
    ):
        page = watched.page
        await page.goto(f"{url}/")
        await expect(page.locator("#live-status")).to_have_text("Live")
        await expect(page.locator("#overview-rows tr")).to_have_count(3)
        await expect(page.locator('[data-total="failed"]')).to_have_text("1")

        # From the overview to the list of one name.
        await page.locator("#overview-rows").get_by_role("link", name="send report", exact=True).click()
        await expect(page).to_have_url(re.compile(r"/jobs\?name=send\+report$|/jobs\?name=send%20report$"))
        await expect(page.locator("#job-rows tr")).to_have_count(1)

        # Filters: a state select submits at once; search on Enter.
        await page.goto(f"{url}/jobs")
        await expect(page.locator("#job-rows tr")).to_have_count(3)
        await expect(page.locator("#live-status")).to_have_text("Live")
        await page.select_option('select[name="state"]', "failed")
        await expect(page).to_have_url(re.compile(r"/jobs\?state=failed$"))
        await expect(page.locator("#live-status")).to_have_text("Live")
        await expect(page.locator("#job-rows tr")).to_have_count(1)
        await expect(page.locator("#job-rows")).to_contain_text("import users")
        await page.select_option('select[name="state"]', "")
        await expect(page).to_have_url(re.compile(r"/jobs\??$"))
        await expect(page.locator("#live-status")).to_have_text("Live")  # the page's script runs
        await page.fill('input[name="search"]', "beat")
        await page.press('input[name="search"]', "Enter")
        await expect(page).to_have_url(re.compile(r"/jobs\?search=beat$"))
        await expect(page.locator("#job-rows tr")).to_have_count(1)
        await expect(page.locator("#job-rows")).to_contain_text("heartbeat")

        # Open the job, run it now, and watch it complete through live updates.
        await page.goto(f"{url}/jobs?name=send+report")
        await page.locator("#job-rows").get_by_role("link", name="send report").click()
        await expect(page).to_have_url(f"{url}/jobs/{report.id}")
        badge = page.locator("h1 .badge")
        await expect(badge).to_have_text("scheduled")
        await expect(page.locator("pre.json").first).to_contain_text('"month": "2026-11"')
        await expect(page.locator("#live-status")).to_have_text("Live")
        await page.get_by_role("button", name="Run now").click()
        await expect(page.locator("#toast")).to_contain_text("will run as soon as a worker is free")
        await expect(badge).to_have_text("completed")
        await expect(page.locator("#run-rows tr")).to_have_count(1)
        await expect(page.locator("#run-rows .badge")).to_have_text("succeeded")
        await expect(page.locator('dd[data-field="last_modified_by"]')).to_have_text("worker-1")


async def test_late_jobs_and_tracebacks_show_and_follow_live_updates(make_agenda: Any, browser: Any) -> None:
    agenda: Agenda = await make_agenda()
    orphan = await agenda.schedule(ago(600), "orphan task")
    stack = 'Traceback (most recent call last):\n  File "app.py", line 9, in orphan\nKeyError: "user"'
    await set_fields(
        agenda_collection(agenda), orphan, lastFinishedAt=ago(700), failedAt=ago(700), failStack=stack
    )

    async with (
        running_server(create_app(agenda, live_interval=0.2, insecure_no_auth=True)) as url,
        watched_page(browser) as watched,
    ):
        page = watched.page
        await page.goto(f"{url}/")
        await expect(page.locator('[data-total="late"]')).to_have_text("1")
        await expect(page.locator("#late")).to_contain_text("orphan task")
        await page.goto(f"{url}/jobs?state=late")
        await expect(page.locator("#job-rows tr")).to_have_count(1)
        await expect(page.locator("#job-rows .tag.late")).to_be_visible()
        await page.goto(f"{url}/jobs/{orphan.id}")
        await expect(page.locator("h1 .tag.late")).to_be_visible()
        await page.locator("details.traceback summary").click()
        await expect(page.locator("pre.stack")).to_have_text(stack)
        await expect(page.locator("#live-status")).to_have_text("Live")
        await agenda.disable(id=orphan.id)  # paused jobs are not late: the page follows
        await expect(page.locator("h1 .tag.late")).to_be_hidden()
        await expect(page.locator("h1 .tag.paused")).to_be_visible()


async def test_workers_page_job_log_and_overview_charts(make_agenda: Any, browser: Any) -> None:
    agenda: Agenda = await make_agenda(name="worker-1", logging=True, heartbeat_every=0.2)

    @agenda.define("flaky")
    async def flaky(job: Job) -> None:
        raise RuntimeError("disk full")

    @agenda.define("fine")
    async def fine(job: Job) -> None:
        return None

    held = await agenda.schedule(ago(3000), "export ledger")
    await set_fields(agenda_collection(agenda), held, lockedAt=ago(2400), lastModifiedBy="billing-2")
    workers = agenda.store.database["agendaWorkers"]  # type: ignore[attr-defined]
    # A worker that died long ago (holding "export ledger"), and one that will stop refreshing now.
    await workers.insert_one(
        {"name": "billing-2", "host": "h2", "pid": 11, "heartbeatEvery": 5.0, "lastSeen": ago(600)}
    )
    await workers.insert_one(
        {"name": "fading-3", "host": "h3", "pid": 12, "heartbeatEvery": 0.5, "lastSeen": ago(0)}
    )
    await agenda.start()
    failing = await agenda.now("flaky")
    for _ in range(3):
        await agenda.now("fine")

    async def counted() -> bool:
        minutes = await agenda.activity(2)
        return sum(m["done"] for m in minutes) >= 3 and sum(m["failed"] for m in minutes) >= 1

    await wait_until(counted, timeout=30)

    async with (
        running_server(create_app(agenda, live_interval=0.2, insecure_no_auth=True)) as url,
        watched_page(browser) as watched,
    ):
        page = watched.page
        await page.goto(f"{url}/")
        await expect(page.locator("#chart-throughput rect")).not_to_have_count(0)
        await expect(page.locator("#chart-failures rect")).not_to_have_count(0)
        await expect(page.locator('[data-chart-total="throughput"]')).to_have_text("3")
        await expect(page.locator('[data-chart-line="queue"]')).to_have_attribute("points", re.compile(r"\d"))

        await page.goto(f"{url}/workers")
        rows = page.locator("#fleet-rows tr")
        await expect(rows).to_have_count(3)
        mine = rows.filter(has_text="worker-1")
        await expect(mine.locator(".badge")).to_have_text("live")
        await expect(mine).to_contain_text("fine, flaky")
        lost = rows.filter(has_text="billing-2")
        await expect(lost.locator(".badge")).to_have_text("lost")
        await expect(lost.locator('[data-field="held"]')).to_have_text("export ledger")
        # No heartbeat from fading-3: the open page turns it lost by itself.
        await expect(rows.filter(has_text="fading-3").locator(".badge")).to_have_text("lost")
        await expect(mine.locator(".badge")).to_have_text("live")

        await page.goto(f"{url}/jobs/{failing.id}")
        log_rows = page.locator("#log-rows tr")
        await expect(log_rows).to_have_count(3)
        await expect(log_rows.nth(0)).to_contain_text("complete")
        await expect(log_rows.nth(1).locator(".badge")).to_have_text("error")
        await expect(log_rows.nth(1)).to_contain_text("job failed: disk full")
        await expect(log_rows.nth(2)).to_contain_text("job started")
        await expect(log_rows.nth(2)).to_contain_text("worker-1")


async def test_retry_disable_enable_and_delete(make_agenda: Any, browser: Any) -> None:
    agenda: Agenda = await make_agenda()
    failed = await agenda.schedule("in 1 hour", "import users", {"file": "users.csv"})
    await set_fields(
        agenda_collection(agenda),
        failed,
        lastFinishedAt=ago(5),
        failedAt=ago(5),  # after lastFinishedAt, even across a millisecond: the job reads as failed
        failReason="bad CSV",
        failCount=2,
    )

    async with (
        running_server(create_app(agenda, live_interval=0.2, insecure_no_auth=True)) as url,
        watched_page(browser) as watched,
    ):
        page = watched.page
        await page.goto(f"{url}/jobs/{failed.id}")
        await expect(page.locator("pre.reason")).to_have_text("bad CSV")
        await page.get_by_role("button", name="Disable").click()
        await expect(page.locator("h1 .tag.paused")).to_be_visible()
        await expect(page.get_by_role("button", name="Enable")).to_be_visible()
        await page.get_by_role("button", name="Enable").click()
        await expect(page.locator("h1 .tag.paused")).to_be_hidden()
        await page.get_by_role("button", name="Retry").click()
        await expect(page.locator("#toast")).to_contain_text("will be retried now")
        # A refresh already on its way when the job goes may find it gone (Chromium logs that 404).
        watched.expect_console_error("404 (Not Found)")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.get_by_role("button", name="Delete").click()
        await expect(page).to_have_url(f"{url}/jobs")
        await expect(page.locator("#toast")).to_contain_text("was deleted")
        await expect(page.locator("[data-empty='job-rows']")).to_be_visible()
    assert await agenda.get_job(failed.id) is None  # type: ignore[arg-type]


async def test_create_a_job_through_the_form(agenda: Agenda, browser: Any) -> None:
    async with (
        running_server(create_app(agenda, live_interval=0.2, insecure_no_auth=True)) as url,
        watched_page(browser) as watched,
    ):
        page = watched.page
        await page.goto(f"{url}/new")

        # The page checks the JSON, the server checks everything else with agendapy's own validation.
        await page.fill('input[name="name"]', "cleanup")
        await page.fill('textarea[name="data"]', "{nope")
        await page.get_by_role("button", name="Create job").click()
        await expect(page.locator("#form-error")).to_contain_text("Data is not valid JSON")
        await page.fill('textarea[name="data"]', '{"days": 30, "dry_run": false}')
        await page.fill('input[name="repeat_every"]', "every blue moon")
        watched.expect_console_error("status of 400 (Bad Request)")
        await page.get_by_role("button", name="Create job").click()
        await expect(page.locator("#form-error")).to_contain_text("invalid interval")

        await page.fill('input[name="schedule"]', "in 2 hours")  # focusing it selects "Once, at"
        await expect(page.locator('input[value="schedule"]')).to_be_checked()
        await page.get_by_role("button", name="Create job").click()
        await expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{24}$"))
        await expect(page.locator("#toast")).to_contain_text("'cleanup' is scheduled")
        await expect(page.locator("h1")).to_contain_text("cleanup")
        await expect(page.locator("h1 .badge")).to_have_text("scheduled")
        await expect(page.locator("pre.json").first).to_contain_text('"days": 30')

    [job] = (await agenda.query_jobs(name="cleanup")).jobs
    assert job.data == {"days": 30, "dry_run": False}


async def test_sign_in_link_sets_a_session_and_leaves_the_address(agenda: Agenda, browser: Any) -> None:
    await agenda.now("report")
    app = create_app(agenda, token="correct-horse-battery-staple", live_interval=0.2)

    async with running_server(app) as url, watched_page(browser) as watched:
        page = watched.page
        await page.goto(f"{url}/jobs?token=correct-horse-battery-staple")
        await expect(page).to_have_url(f"{url}/jobs")  # the token left the address bar and history
        await expect(page.locator("#live-status")).to_have_text("Live")  # the stream got the cookie
        await expect(page.locator("#job-rows tr")).to_have_count(1)
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["agendapy_session"]["httpOnly"] and cookies["agendapy_session"]["sameSite"] == "Strict"

        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{url}/login")
        await page.fill('input[name="token"]', "correct-horse-battery-staple")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{url}/")
        await expect(page.locator("#overview-rows tr")).to_have_count(1)


@pytest.mark.skipif(os.environ.get("AGENDAPY_SCREENSHOTS") != "1", reason="set AGENDAPY_SCREENSHOTS=1")
async def test_screenshots(make_agenda: Any, browser: Any) -> None:
    agenda: Agenda = await make_agenda(name="worker-1", history="all", logging=True, heartbeat_every=0.2)
    release = asyncio.Event()

    @agenda.define("send invoice")
    async def send_invoice(job: Job) -> None:
        await asyncio.sleep(0.05)
        if job.data.get("customer") == "Globex":
            raise RuntimeError("SMTP 554: mailbox unavailable (invoices@globex.example)")

    @agenda.define("import users", concurrency=1)
    async def import_users(job: Job) -> None:
        await job.checkpoint({"file": job.data["file"], "row": 6500})
        await job.touch(65)
        await release.wait()

    collection = agenda_collection(agenda)
    for customer in ("Initech", "Umbrella", "Hooli", "Globex", "Stark"):
        await agenda.now("send invoice", {"customer": customer, "amount": 1200, "currency": "EUR"})
    await agenda.every(
        "0 2 * * *", "nightly report", {"recipients": ["ops@example.com"]}, timezone="Europe/Paris"
    )
    await agenda.every("5 minutes", "sync crm", {"full": False}, skip_immediate=True)
    for days in (30, 90):
        await agenda.schedule(f"in {days // 10} hours", "cleanup", {"older_than_days": days})
    paused = await agenda.schedule("tomorrow at noon", "cleanup", {"older_than_days": 365})
    await agenda.disable(id=paused.id)
    await agenda.schedule(ago(90), "reindex search")
    stuck = await agenda.schedule(ago(3000), "export ledger", {"year": 2026})
    await set_fields(
        collection, stuck, lockedAt=ago(2400), lastRunAt=ago(2400), lastModifiedBy="billing-2", progress=20
    )
    await agenda.now("import users", {"file": "s3://uploads/users-2026-11.csv"})
    database = agenda.store.database  # type: ignore[attr-defined]
    # The worker that held "export ledger" died a while ago; the last hour's traffic of a small fleet.
    await database["agendaWorkers"].insert_one(
        {
            "name": "billing-2",
            "host": "billing-7f9c",
            "pid": 4121,
            "version": "0.9.0",
            "heartbeatEvery": 5.0,
            "startedAt": ago(86000),
            "lastSeen": ago(2390),
            "definitions": ["export ledger", "send invoice"],
            "running": 1,
            "locked": 1,
            "done": 1812,
            "failed": 7,
            "state": "running",
        }
    )
    this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
    await database["agendaActivity"].insert_many(
        [
            {
                "_id": this_minute - timedelta(minutes=m),
                "minute": this_minute - timedelta(minutes=m),
                "done": 20 + (m * 7) % 13 + (15 if 20 <= m <= 28 else 0),
                "failed": 2 if m % 11 == 3 else 0,
                "queued": 3 + (m * 5) % 9 + (25 - abs(24 - m) if 20 <= m <= 28 else 0),
            }
            for m in range(1, 60)
        ]
    )
    await agenda.start()

    async def settled() -> bool:
        overview = {row["name"]: row for row in await agenda.jobs_overview()}
        return (
            overview.get("send invoice", {}).get("completed") == 4
            and overview["import users"]["running"] == 1
        )

    for _ in range(300):
        if await settled():
            break
        await asyncio.sleep(0.05)
    [failed] = (await agenda.query_jobs(name="send invoice", state="failed")).jobs

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        async with running_server(create_app(agenda, live_interval=0.5, insecure_no_auth=True)) as url:
            for dark in (False, True):
                suffix = "-dark" if dark else ""
                async with watched_page(browser, dark=dark) as watched:
                    page = watched.page
                    for name, path in (
                        ("overview", "/"),
                        ("jobs", "/jobs"),
                        ("job", f"/jobs/{failed.id}"),
                        ("workers", "/workers"),
                        ("new", "/new"),
                    ):
                        await page.goto(url + path)
                        if name != "new":
                            await expect(page.locator("#live-status")).to_have_text("Live")
                        await page.screenshot(path=str(SCREENSHOTS / f"{name}{suffix}.png"), full_page=True)
    finally:
        release.set()


def agenda_collection(agenda: Agenda) -> Any:
    """The raw jobs collection of an Agenda (tests put jobs into states by writing fields directly)."""
    return agenda.store.collection  # type: ignore[attr-defined]
