// agendapy dashboard: live updates, actions and the new-job form, in plain JavaScript.
//
// The server renders every page; this script keeps it current from the JSON API. Values from the
// database are only ever written with textContent or as attributes: nothing received is parsed as
// HTML or executed. New rows are cloned from <template> elements that the server renders from the
// same Jinja macros as the rows themselves.
"use strict";

(() => {
  const body = document.body;
  const base = body.dataset.base || "";
  const page = body.dataset.page || "";
  const interval = Math.max(Number(body.dataset.liveInterval) || 2, 0.25) * 1000;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") || "";
  const NONE = "—";

  // -- formatting ------------------------------------------------------------------------------

  function show(value) {
    if (value === null || value === undefined || value === "") return NONE;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function relative(date) {
    const diff = (date.getTime() - Date.now()) / 1000;
    const abs = Math.abs(diff);
    if (abs < 1.5) return "now";
    let text;
    if (abs < 60) text = `${Math.round(abs)} s`;
    else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
    else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
    else text = `${Math.round(abs / 86400)} d`;
    return diff > 0 ? `in ${text}` : `${text} ago`;
  }

  function longDate(date) {
    return date.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function formatTime(el) {
    const date = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(date.getTime())) return;
    el.textContent = el.classList.contains("long") ? `${longDate(date)} (${relative(date)})` : relative(date);
    el.title = `${longDate(date)} (${date.toISOString()})`;
  }

  function humanSeconds(s) {
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    const [total, units] = s < 3600 ? [Math.round(s), ["min", "s"]] : [Math.round(s / 60), ["h", "min"]];
    const [big, small] = [Math.floor(total / 60), total % 60];
    return small ? `${big} ${units[0]} ${small} ${units[1]}` : `${big} ${units[0]}`;
  }

  function formatAll(root = document) {
    root.querySelectorAll("time[datetime]").forEach(formatTime);
    root.querySelectorAll("[data-seconds]").forEach((el) => {
      el.textContent = humanSeconds(Number(el.dataset.seconds));
    });
  }

  // -- building nodes (text only) ----------------------------------------------------------------

  function node(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function timeNode(iso, long) {
    if (!iso) return node("span", "none", NONE);
    const el = node("time", long ? "long" : "", iso);
    el.setAttribute("datetime", iso);
    formatTime(el);
    return el;
  }

  function secondsNode(value) {
    if (typeof value !== "number") return node("span", "none", NONE);
    const el = node("span", "secs", humanSeconds(value));
    el.dataset.seconds = String(value);
    return el;
  }

  function progressNodes(value, dash) {
    if (typeof value !== "number") return dash ? [node("span", "none", NONE)] : [];
    const bar = node("progress");
    bar.max = 100;
    bar.value = value;
    return [bar, node("span", "pct", `${Math.round(value)}%`)];
  }

  function listLink(name, state) {
    const params = new URLSearchParams();
    if (name) params.set("name", name);
    if (state) params.set("state", state);
    return `${base}/jobs?${params}`;
  }

  // Fill every [data-field] of root from obj, except those inside a nested table body (its rows are
  // filled from their own objects).
  function fill(root, obj) {
    const scope = root.closest("tbody");
    const targets = [...(root.matches("[data-field]") ? [root] : []), ...root.querySelectorAll("[data-field]")];
    for (const el of targets) {
      if (el.closest("tbody") !== scope) continue;
      const value = obj[el.dataset.field];
      switch (el.dataset.format) {
        case "state":
        case "run":
          el.textContent = show(value);
          el.className = `badge ${el.dataset.format}-${value}`;
          break;
        case "log-level":
          el.textContent = show(value);
          el.className = `badge log-${value}`;
          break;
        case "worker-state":
          el.textContent = show(value);
          el.className = `badge worker-${value}`;
          break;
        case "time":
        case "long-time":
          el.replaceChildren(timeNode(value, el.dataset.format === "long-time"));
          break;
        case "duration":
          el.replaceChildren(secondsNode(value));
          break;
        case "progress":
          el.replaceChildren(...progressNodes(value, el.hasAttribute("data-dash")));
          break;
        case "flag":
          el.hidden = !value;
          break;
        case "section":
          el.hidden = value === null || value === undefined || (Array.isArray(value) && value.length === 0);
          break;
        case "failures":
          el.toggleAttribute("data-failed", Boolean(value));
          break;
        case "block":
          el.textContent = value ?? "";
          if (el.classList.contains("reason") || el.classList.contains("unreadable")) el.hidden = !value;
          break;
        case "count":
          el.textContent = String(value ?? 0);
          el.classList.toggle("zero", !value);
          break;
        case "plain":
          el.textContent = value ?? "";
          break;
        case "job-ref":
          if (value) {
            el.textContent = value === el.dataset.current ? "this job" : `…${String(value).slice(-6)}`;
            el.href = `${base}/jobs/${encodeURIComponent(value)}`;
            el.title = value;
          } else {
            el.textContent = NONE;
            el.removeAttribute("href");
          }
          break;
        case "worker":
          el.textContent = value || "(unnamed worker)";
          break;
        default:
          el.textContent = show(value);
      }
      if (el.dataset.link === "job") el.href = `${base}/jobs/${encodeURIComponent(obj.id)}`;
      if (el.dataset.link === "list") el.href = listLink(obj.filter_name ?? obj.name, el.dataset.state);
    }
  }

  function renderRows(container, templateId, items, afterFill) {
    const template = document.getElementById(templateId);
    if (!container || !template) return;
    const rows = items.map((item) => {
      const row = document.importNode(template.content.firstElementChild, true);
      fill(row, item);
      if (afterFill) afterFill(row, item);
      return row;
    });
    container.replaceChildren(...rows);
    const empty = document.querySelector(`[data-empty="${container.id}"]`);
    if (empty) empty.hidden = items.length > 0;
  }

  // -- talking to the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, payload) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(`${base}${path}`, init);
    } catch {
      throw new ApiError("The dashboard server cannot be reached.", 0);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError((data && data.error) || `${response.status} ${response.statusText}`, response.status);
    }
    return data;
  }

  // -- toasts ----------------------------------------------------------------------------------------

  let toastTimer = 0;
  function toast(message, isError = false) {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.classList.toggle("error", isError);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 8000 : 4000);
  }

  function toastAfterNavigation(message) {
    try { sessionStorage.setItem("agendapy-toast", message); } catch { /* private mode: no toast */ }
  }

  // -- views: each refreshes its page from the API ------------------------------------------------------

  function renderOverview(overview) {
    for (const el of document.querySelectorAll("[data-total]")) {
      el.textContent = String(overview.totals[el.dataset.total] ?? 0);
    }
    renderRows(document.getElementById("overview-rows"), "tpl-overview-row", overview.names);
  }

  function renderPager(listing) {
    const pager = document.getElementById("pager");
    if (!pager) return;
    document.getElementById("pager-text").textContent = `${listing.first}–${listing.last} of ${listing.total}`;
    for (const [rel, target] of [["prev", listing.page - 1], ["next", listing.page + 1]]) {
      const link = pager.querySelector(`[rel="${rel}"]`);
      const params = new URLSearchParams(location.search);
      params.set("page", String(target));
      link.href = `?${params}`;
      link.hidden = target < 1 || target > listing.pages;
    }
  }

  let jobGone = false;
  let settleTimer = 0;

  function renderJob(job, runs, logs) {
    const main = document.querySelector("main");
    fill(main, job);
    for (const button of document.querySelectorAll("[data-visible]")) {
      const when = button.dataset.visible;
      button.hidden = when === "failed" ? job.state !== "failed" : when === "disabled" ? !job.disabled : job.disabled;
    }
    renderRows(document.getElementById("run-rows"), "tpl-run-row", runs);
    renderRows(document.getElementById("log-rows"), "tpl-log-row", logs || []);
    const fields = document.getElementById("all-fields");
    if (fields) {
      const items = [];
      for (const key of job.fields) {
        if (key === "data" || key === "checkpoint_state") continue;
        const value = job[key];
        const dd = node("dd");
        if (key.endsWith("_at") || key.endsWith("_date")) dd.append(timeNode(value, true));
        else dd.textContent = show(value);
        items.push(node("dt", "", key), dd);
      }
      fields.replaceChildren(...items);
    }
  }

  function markJobGone() {
    jobGone = true;
    document.getElementById("job-gone").hidden = false;
    document.getElementById("job-actions")?.setAttribute("hidden", "");
  }

  // The overview's charts: bars and a line redrawn from /api/activity (the same geometry the server drew).
  const SVG = "http://www.w3.org/2000/svg";
  let chartsFetchedAt = 0;
  let chartsTimer = 0;

  function renderCharts(charts) {
    for (const id of ["throughput", "failures"]) {
      const group = document.querySelector(`[data-chart-bars="${id}"]`);
      if (!group) continue;
      const rects = charts[id].bars.filter((bar) => bar.h > 0).map((bar) => {
        const rect = document.createElementNS(SVG, "rect");
        for (const [attr, key] of [["x", "x"], ["y", "y"], ["width", "w"], ["height", "h"]]) {
          rect.setAttribute(attr, String(bar[key]));
        }
        const title = document.createElementNS(SVG, "title");
        title.textContent = String(bar.v);
        rect.append(title);
        return rect;
      });
      group.replaceChildren(...rects);
      document.querySelector(`[data-chart-total="${id}"]`).textContent = String(charts[id].total);
      document.querySelector(`[data-chart-max="${id}"]`).textContent = String(charts[id].max);
    }
    const line = document.querySelector('[data-chart-line="queue"]');
    if (line) {
      line.setAttribute("points", charts.queue.points);
      const last = charts.queue.last;
      document.querySelector('[data-chart-total="queue"]').textContent = last === null ? NONE : String(last);
      document.querySelector('[data-chart-max="queue"]').textContent = String(charts.queue.max);
    }
  }

  async function refreshCharts() {
    if (!document.getElementById("activity") || Date.now() - chartsFetchedAt < 10000) return;
    chartsFetchedAt = Date.now();
    renderCharts((await api("GET", "/api/activity")).charts);
  }

  let workersTimer = 0;

  function renderWorkers(listing) {
    renderRows(document.getElementById("fleet-rows"), "tpl-fleet-row", listing.fleet || []);
    const container = document.getElementById("workers");
    renderRows(container, "tpl-worker", listing.workers, (section, worker) => {
      renderRows(section.querySelector("[data-rows]"), "tpl-lock-row", worker.jobs);
    });
  }

  const views = {
    async overview(event) {
      const overview = event ? event.overview : (await api("GET", "/api/overview")).overview;
      renderOverview(overview);
      await refreshCharts();
      // The charts move with time even when no job changes: redraw them every quarter minute.
      clearTimeout(chartsTimer);
      if (document.getElementById("activity")) chartsTimer = setTimeout(() => refresh(null), 15000);
    },
    async jobs() {
      const listing = await api("GET", `/api/jobs${location.search}`);
      renderRows(document.getElementById("job-rows"), "tpl-job-row", listing.jobs);
      renderPager(listing);
    },
    async job() {
      if (jobGone) return;
      const id = document.getElementById("job").dataset.jobId;
      try {
        const data = await api("GET", `/api/jobs/${encodeURIComponent(id)}`);
        renderJob(data.job, data.runs, data.logs);
        // A run's record is finished just after the job's state is saved: while anything is still in
        // flight, look again without waiting for the overview to change.
        const busy = ["running", "waiting"].includes(data.job.state) || data.runs.some((r) => r.status === "running");
        clearTimeout(settleTimer);
        if (busy) settleTimer = setTimeout(() => refresh(null), interval);
      } catch (error) {
        if (error.status === 404) markJobGone();
        else throw error;
      }
    },
    async workers() {
      renderWorkers(await api("GET", "/api/workers"));
      // Heartbeats change nothing the overview stream reports: look again now and then, so a worker
      // that stops answering turns lost on screen.
      clearTimeout(workersTimer);
      workersTimer = setTimeout(() => refresh(null), Math.max(interval, 2000));
    },
  };

  // -- live updates: Server-Sent Events, else polling ---------------------------------------------------

  function setLive(state, label) {
    const el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = label;
  }

  let refreshing = null;
  let queued = null;

  // One refresh at a time; events arriving meanwhile collapse into one more refresh.
  async function refresh(event) {
    if (refreshing) {
      queued = { event };
      return refreshing;
    }
    refreshing = (async () => {
      try {
        await views[page](event);
        return true;
      } catch {
        setLive("offline", "Offline");
        return false;
      }
    })();
    try {
      return await refreshing;
    } finally {
      refreshing = null;
      if (queued) {
        const next = queued;
        queued = null;
        refresh(next.event);
      }
    }
  }

  function startPolling() {
    setLive("polling", "Polling");
    const tick = async () => {
      if (await refresh(null)) setLive("polling", "Polling");
      setTimeout(tick, interval);
    };
    setTimeout(tick, interval);
  }

  function startLive() {
    if (!views[page]) return;
    if (typeof EventSource !== "function") {
      startPolling();
      return;
    }
    setLive("connecting", "Connecting");
    const source = new EventSource(`${base}/api/events`);
    let watchdog = 0;
    const fallBack = () => {
      clearTimeout(watchdog);
      source.close();
      startPolling();
    };
    // The server pings every 15 s: a stream silent for longer is stuck (a buffering proxy, say).
    const alive = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(fallBack, 45000);
      setLive("live", "Live");
    };
    source.addEventListener("overview", (message) => {
      alive();
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      refresh(event);
    });
    source.addEventListener("ping", alive);
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) fallBack();
      else setLive("connecting", "Reconnecting");
    });
  }

  // -- actions -----------------------------------------------------------------------------------------

  async function logout() {
    try {
      await fetch(`${base}/logout`, { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    } finally {
      location.assign(`${base}/login`);
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "logout") {
      await logout();
      return;
    }
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    // Deleting: stop asking for the job now, not only once it is gone.
    if (action === "cancel") {
      jobGone = true;
      clearTimeout(settleTimer);
    }
    try {
      const result = await api("POST", `/api/jobs/${encodeURIComponent(button.dataset.id)}/${action}`);
      if (action === "cancel") {
        toastAfterNavigation(result.message);
        location.assign(`${base}/jobs`);
        return;
      }
      toast(result.message);
      await refresh(null);
    } catch (error) {
      if (action === "cancel") jobGone = false;
      toast(error.message, true);
    } finally {
      button.disabled = false;
    }
  });

  function setUpFilters() {
    const form = document.getElementById("filters");
    if (!form) return;
    form.addEventListener("change", (event) => {
      if (event.target.tagName === "SELECT") form.requestSubmit();
    });
    // Leave empty filters out of the address.
    form.addEventListener("formdata", (event) => {
      for (const [key, value] of [...event.formData.entries()]) {
        if (value === "") event.formData.delete(key);
      }
    });
  }

  function setUpNewJobForm() {
    const form = document.getElementById("new-job");
    if (!form) return;
    const errorBox = document.getElementById("form-error");
    const fail = (message) => {
      errorBox.textContent = message;
      errorBox.hidden = false;
    };
    // Typing into a choice's input selects that choice.
    form.addEventListener("focusin", (event) => {
      const choice = event.target.closest(".choice");
      if (choice && event.target.type !== "radio") choice.querySelector('input[type="radio"]').checked = true;
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errorBox.hidden = true;
      const fields = new FormData(form);
      const text = String(fields.get("data") || "").trim();
      let data = null;
      if (text) {
        try {
          data = JSON.parse(text);
        } catch (error) {
          fail(`Data is not valid JSON: ${error.message}`);
          return;
        }
      }
      const payload = { name: String(fields.get("name") || "").trim(), data };
      const when = fields.get("when");
      if (when === "schedule") payload.schedule = String(fields.get("schedule") || "");
      if (when === "repeat") {
        payload.repeat_every = String(fields.get("repeat_every") || "");
        const timezone = String(fields.get("timezone") || "").trim();
        if (timezone) payload.timezone = timezone;
      }
      const submit = form.querySelector('button[type="submit"]');
      submit.disabled = true;
      try {
        const result = await api("POST", "/api/jobs", payload);
        toastAfterNavigation(result.message);
        location.assign(`${base}/jobs/${encodeURIComponent(result.job.id)}`);
      } catch (error) {
        fail(error.message);
      } finally {
        submit.disabled = false;
      }
    });
  }

  // -- start -------------------------------------------------------------------------------------------

  // A ?token= sign-in link has done its work (the session cookie is set): keep it out of the history.
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  try {
    const message = sessionStorage.getItem("agendapy-toast");
    if (message) {
      sessionStorage.removeItem("agendapy-toast");
      toast(message);
    }
  } catch { /* storage unavailable */ }

  formatAll();
  setInterval(() => document.querySelectorAll("time[datetime]").forEach(formatTime), 5000);
  setUpFilters();
  setUpNewJobForm();
  startLive();
})();
