// docbatch dashboard: polls the v1 JSON api and renders jobs, counts, a throughput chart
// and errors. No framework, no build step, nothing loaded from outside.
"use strict";

const KEY_NAME = "docbatch_api_key";
const TERMINAL = new Set(["completed", "completed_with_errors", "failed", "cancelled"]);
// Each task's colour, from the one list of tasks (docbatch/schema/tasks.py) via the page.
const COLORS = JSON.parse(document.body.dataset.taskColors || "{}");
// A job with files has an extract stage (files -> text) that runs before its model tasks.
const EXTRACT = "extract";
const POLL_MS = 2000;

// A sign-in link may carry the key in the fragment (/ui#key=dbk_...): the fragment never
// reaches the server or its logs; the key is saved and the fragment removed at once.
(function keyFromFragment() {
  const match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
  if (!match) return;
  localStorage.setItem(KEY_NAME, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
})();

function apiKey() { return localStorage.getItem(KEY_NAME) || ""; }

function authHeaders() {
  const key = apiKey();
  return key ? {Authorization: "Bearer " + key} : {};
}

async function api(path) {
  const resp = await fetch(path, {headers: authHeaders()});
  if (resp.status === 401 || resp.status === 403) {
    showBanner("The api refused the request (" + resp.status + "): save a valid API key above.");
    throw new Error("unauthorised");
  }
  if (!resp.ok) throw new Error(path + ": " + resp.status);
  hideBanner();
  return resp;
}

function showBanner(text) {
  const el = document.getElementById("banner");
  el.textContent = text;
  el.hidden = false;
}

function hideBanner() { document.getElementById("banner").hidden = true; }

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k === "style") el.setAttribute("style", v);
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

// Today's times without the date; the full stamp is in the title.
function fmtShort(iso) {
  if (!iso) return "–";
  const full = fmtTime(iso);
  return full.slice(0, 10) === new Date().toISOString().slice(0, 10) ? full.slice(11) : full;
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0; n = Number(n || 0);
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

// The job page's delete button: asks first, then DELETE /v1/jobs/{id} (the rows go in
// batches; the page shows "deleting" until the job is gone).
function setupDelete(jobId) {
  const button = document.getElementById("delete");
  if (!button) return;
  button.addEventListener("click", async () => {
    if (!window.confirm("Delete job " + jobId + " and everything stored for it " +
        "(documents, results, original files)? A running job is cancelled first. " +
        "This cannot be undone.")) return;
    const resp = await fetch("/v1/jobs/" + encodeURIComponent(jobId),
      {method: "DELETE", headers: authHeaders()});
    showBanner(resp.ok ? "Deleting " + jobId + "…" : "Delete failed: HTTP " + resp.status);
    button.disabled = resp.ok;
  });
}

function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

function fmtNum(n) { return Number(n || 0).toLocaleString("en-US"); }

function taskName(task) { return task === EXTRACT ? "extraction" : task; }

// Extraction first: the model tasks of a file wait for it, so it reads as the first stage.
function taskEntries(counts) {
  return Object.entries(counts).sort(([a], [b]) => (b === EXTRACT) - (a === EXTRACT));
}

// Documents whose text is not extracted yet (their model tasks cannot start), or "".
function waitingText(job) {
  const n = job.counts[EXTRACT] ? job.counts[EXTRACT].pending : 0;
  return n ? fmtNum(n) + " " + (n === 1 ? "document" : "documents") + " waiting for extraction" : "";
}

function jobTotals(job) {
  let total = 0, ok = 0, bad = 0;
  for (const c of Object.values(job.counts)) {
    total += c.total; ok += c.succeeded; bad += c.failed + c.cancelled;
  }
  return {total, ok, bad, done: ok + bad};
}

function progressBar(ok, bad, total, big) {
  const pct = (x) => (total ? (100 * x / total).toFixed(1) : 0) + "%";
  return h("div", {class: "bar" + (big ? " big" : ""), role: "progressbar",
                   "aria-valuenow": String(ok + bad), "aria-valuemax": String(total)},
    h("span", {class: "ok", style: "width:" + pct(ok)}),
    h("span", {class: "bad", style: "width:" + pct(bad)}));
}

function badge(status) { return h("span", {class: "badge s-" + status}, status.replace(/_/g, " ")); }

// -- key form ----------------------------------------------------------------------------
function setupKeyForm() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const state = document.getElementById("key-state");
  const show = () => { state.textContent = apiKey() ? "key saved" : "no key"; };
  show();
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (input.value.trim()) localStorage.setItem(KEY_NAME, input.value.trim());
    else localStorage.removeItem(KEY_NAME);
    input.value = "";
    show();
    refresh();
  });
}

// -- jobs list ---------------------------------------------------------------------------
async function renderJobs() {
  const body = await (await api("/v1/jobs?limit=100")).json();
  const tbody = document.getElementById("jobs-body");
  document.getElementById("jobs-count").textContent = plural(body.count, "job");
  tbody.replaceChildren();
  if (!body.data.length) {
    tbody.append(h("tr", {}, h("td", {colspan: "6", class: "muted"}, "No jobs yet.")));
  }
  for (const job of body.data) {
    const t = jobTotals(job);
    const tasks = taskEntries(job.counts).map(([task, c]) =>
      h("span", {class: "chip", style: "border-color:" + (COLORS[task] || "#999"), "data-task": task},
        taskName(task) + " " + (c.succeeded + c.failed + c.cancelled) + "/" + c.total));
    const waiting = waitingText(job);
    tbody.append(h("tr", {class: "job-row", "data-job-id": job.id},
      h("td", {}, h("a", {href: "/ui/jobs/" + job.id}, job.name || job.id),
        h("div", {class: "muted mono small"}, job.id)),
      h("td", {}, badge(job.status)),
      h("td", {}, progressBar(t.ok, t.bad, t.total, false),
        h("div", {class: "small muted progress-text"}, fmtNum(t.done) + " / " + fmtNum(t.total) +
          " done" + (t.bad ? " · " + fmtNum(t.bad) + " failed or cancelled" : "") +
          (waiting ? " · " + waiting : ""))),
      h("td", {}, ...tasks),
      h("td", {class: "num"}, job.documents_per_second ? job.documents_per_second.toFixed(1) : "–"),
      h("td", {class: "small nowrap", title: fmtTime(job.created_at)}, fmtShort(job.created_at))));
  }
  return true;  // keep polling: new jobs may arrive
}

// -- one job -----------------------------------------------------------------------------
let errorsLoadedFor = null;

async function renderJob(jobId) {
  const job = await (await api("/v1/jobs/" + encodeURIComponent(jobId))).json();
  document.getElementById("job-title").textContent = job.name || job.id;
  document.getElementById("job-status").replaceWith(
    Object.assign(badge(job.status), {id: "job-status"}));
  const t = jobTotals(job);
  const pct = (x) => (t.total ? (100 * x / t.total).toFixed(1) : 0) + "%";
  document.getElementById("overall-bar").style.width = pct(t.ok);
  document.getElementById("overall-bar-failed").style.width = pct(t.bad);
  const waiting = waitingText(job);
  document.getElementById("overall-text").textContent =
    fmtNum(t.done) + " of " + fmtNum(t.total) + " task results done (" + pct(t.done) + ")" +
    (waiting ? " · " + waiting : "");
  const facts = [
    ["Documents", fmtNum(job.documents)],
    ["Created", fmtShort(job.created_at)],
    ["Started", fmtShort(job.started_at)],
    ["Finished", fmtShort(job.finished_at)],
    ["Elapsed", job.elapsed_seconds != null ? job.elapsed_seconds.toFixed(1) + " s" : "–"],
    ["Docs/s", job.documents_per_second != null ? job.documents_per_second.toFixed(2) : "–"],
    ["Result reuse", job.reuse_results ? "on" : "off"],
  ];
  // Stored size and expiry (docbatch.domain.usage); a job being deleted shows what is left.
  const st = await fetch("/v1/jobs/" + encodeURIComponent(jobId) + "/storage", {headers: authHeaders()});
  if (st.ok) {
    const s = await st.json();
    facts.push(["Stored", fmtBytes(s.stored_bytes) + " (" + fmtBytes(s.original_bytes) +
      " originals, " + fmtBytes(s.extracted_text_bytes) + " text)"]);
    facts.push(["Expires", s.expires_at ? fmtShort(s.expires_at) : "never"]);
  }
  if (job.delete_left) {
    facts.push(["Left to delete", fmtNum(Object.values(job.delete_left).reduce((a, b) => a + b, 0)) + " rows"]);
  }
  document.getElementById("job-facts").replaceChildren(...facts.map(([k, v]) =>
    h("div", {class: "fact"}, h("div", {class: "muted small"}, k), h("div", {}, v))));

  // e.g. "no worker serves deployment e5: ..." (its units wait, queued).
  document.getElementById("job-warnings").replaceChildren(...(job.warnings || []).map((w) =>
    h("div", {class: "warning"}, w)));

  const tbody = document.getElementById("counts-body");
  tbody.replaceChildren();
  for (const [task, c] of taskEntries(job.counts)) {
    const stage = task === EXTRACT;
    // A job task is keyed by its deployment; a task's default deployment has the task's name.
    const kind = (job.tasks[task] || {}).type;
    const label = stage ? "extraction (files → text)" : kind && kind !== task ? task + " (" + kind + ")" : task;
    tbody.append(h("tr", {class: "count-row" + (stage ? " stage-row" : ""), "data-task": task},
      h("td", {class: "nowrap"}, h("span", {class: "dot", style: "background:" + (COLORS[task] || "#999")}),
        label),
      h("td", {}, progressBar(c.succeeded, c.failed + c.cancelled, c.total, false),
        ...(stage && waiting ? [h("div", {class: "small muted progress-text"}, waiting)] : [])),
      ...[c.total, c.succeeded, c.reused || 0, c.failed, c.cancelled, c.pending, c.chunks, c.tokens]
        .map((n, i) => h("td", {class: "num c-" + ["total", "succeeded", "reused", "failed",
          "cancelled", "pending", "chunks", "tokens"][i]}, fmtNum(n)))));
  }

  // Buckets of ~1/30 of the job's duration: a short test job and a night's run both fill the chart.
  const span = job.elapsed_seconds || 10;
  const bucket = Math.max(1, Math.ceil(span / 30));
  const tp = await (await api("/v1/jobs/" + encodeURIComponent(jobId) + "/throughput?bucket=" + bucket)).json();
  drawChart(document.getElementById("chart"), tp.progress || []);
  document.getElementById("chart-note").textContent = "documents done over time (the slope is " +
    "the rate); rates averaged over the last " + tp.window_seconds + " s";

  const terminal = TERMINAL.has(job.status);
  if (errorsLoadedFor !== job.status) {  // reload errors when the status moves
    errorsLoadedFor = job.status;
    await renderErrors(jobId);
  }
  return !terminal;
}

const MAX_ERRORS = 200;

async function renderErrors(jobId) {
  // One more than shown tells whether there are more; a job with a million failures
  // must not make the page download them all.
  const text = await (await api("/v1/jobs/" + encodeURIComponent(jobId) +
                                "/errors?limit=" + (MAX_ERRORS + 1))).text();
  const all = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  const more = all.length > MAX_ERRORS;
  const lines = all.slice(0, MAX_ERRORS);
  const tbody = document.getElementById("errors-body");
  tbody.replaceChildren();
  let n = 0;
  for (const line of lines) {
    for (const [task, r] of Object.entries(line.results)) {
      n += 1;
      tbody.append(h("tr", {class: "error-row"}, h("td", {class: "mono"}, line.custom_id),
        h("td", {}, taskName(task)), h("td", {class: "reason"}, r.error || r.status)));
    }
  }
  document.getElementById("errors-count").textContent =
    n ? (more ? "first " + lines.length + " failed documents shown" : n + " failed") : "";
  if (!n) tbody.append(h("tr", {}, h("td", {colspan: "3", class: "muted"}, "No errors.")));
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// Cumulative progress per task, one line each: results land in unit-sized bursts, so
// documents per time bucket form a comb; documents done over time is a readable line whose
// slope is the rate. The legend and tooltips give the rate averaged over a trailing window.
function drawChart(host, data) {
  const W = 1100, H = 260, L = 56, R = 16, T = 16, B = 40;
  const times = [...new Set(data.map((d) => Date.parse(d.t)))].sort((a, b) => a - b);
  const tasks = [...new Set(data.map((d) => d.task))].sort()
    .sort((a, b) => (b === EXTRACT) - (a === EXTRACT));
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img",
                            "aria-label": "progress chart: documents done over time"});
  if (!times.length) {
    chart.append(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis"},
      "No finished documents yet"));
    host.replaceChildren(chart);
    return;
  }
  // A top that splits into 4 whole-number steps.
  const ymax = Math.max(4, Math.ceil(niceMax(Math.max(...data.map((d) => d.done))) / 4) * 4);
  const iw = W - L - R, ih = H - T - B;
  // A point marks the end of its bucket; the line starts at zero at the first bucket's start.
  const step = times.length > 1 ? times[1] - times[0] : 1000;
  const x0 = times[0], x1 = times[times.length - 1] + step;
  const px = (t) => L + (iw * (t - x0)) / Math.max(1, x1 - x0);
  const py = (v) => T + ih - (ih * v) / ymax;
  for (let i = 0; i <= 4; i++) {
    const y = T + ih - (ih * i) / 4;
    chart.append(svg("line", {x1: L, x2: W - R, y1: y, y2: y, class: "grid"}));
    chart.append(svg("text", {x: L - 8, y: y + 4, "text-anchor": "end", class: "axis"},
      fmtNum(Math.round((ymax * i) / 4))));
  }
  const latest = {};
  for (const task of tasks) {
    const pts = data.filter((d) => d.task === task).sort((a, b) => Date.parse(a.t) - Date.parse(b.t));
    const color = COLORS[task] || "#999";
    const path = ["M" + px(x0).toFixed(1) + "," + py(0).toFixed(1)];
    for (const p of pts) path.push("L" + px(Date.parse(p.t) + step).toFixed(1) + "," + py(p.done).toFixed(1));
    chart.append(svg("path", {d: path.join(" "), fill: "none", stroke: color, "stroke-width": 2,
                              class: "progress-line", "data-task": task}));
    for (const p of pts) {
      const at = new Date(Date.parse(p.t) + step).toISOString().slice(11, 19);
      chart.append(svg("circle", {cx: px(Date.parse(p.t) + step), cy: py(p.done), r: 3, fill: color},
        svg("title", {}, `${at} ${taskName(task)}: ${fmtNum(p.done)} done, ${p.rate.toFixed(2)} docs/s`)));
    }
    latest[task] = pts[pts.length - 1];
  }
  const ticks = 8;
  for (let i = 0; i <= ticks; i++) {
    const t = x0 + ((x1 - x0) * i) / ticks;
    const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
    chart.append(svg("text", {x: px(t), y: H - B + 18, "text-anchor": anchor, class: "axis"},
      new Date(t).toISOString().slice(11, 19)));
  }
  chart.append(svg("line", {x1: L, x2: W - R, y1: T + ih, y2: T + ih, class: "baseline"}));
  let lx = L;
  for (const task of tasks) {
    const label = `${taskName(task)} ${formatRate(latest[task].rate)} docs/s`;
    chart.append(svg("rect", {x: lx, y: H - 12, width: 10, height: 10, fill: COLORS[task] || "#999", rx: 2}));
    chart.append(svg("text", {x: lx + 14, y: H - 3, class: "axis legend", "data-task": task}, label));
    lx += 24 + label.length * 7;
  }
  host.replaceChildren(chart);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function formatRate(v) { return v >= 10 ? v.toFixed(0) : v.toFixed(1); }

async function downloadResults(jobId) {
  // A plain link cannot send the Authorization header; fetch the stream and hand it over.
  const blob = await (await api("/v1/jobs/" + encodeURIComponent(jobId) + "/results")).blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", {href: url, download: jobId + "-results.jsonl"});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// -- schedules ---------------------------------------------------------------------------
async function renderSchedules() {
  const body = await (await api("/v1/schedules")).json();
  document.getElementById("schedules-count").textContent = plural(body.count, "schedule");
  const tbody = document.getElementById("schedules-body");
  tbody.replaceChildren();
  if (!body.data.length) tbody.append(h("tr", {}, h("td", {colspan: "6", class: "muted"}, "No schedules.")));
  for (const s of body.data) {
    const runs = s.runs.slice(0, 5).map((r) => r.job_id
      ? h("a", {href: "/ui/jobs/" + r.job_id, class: "chip"}, fmtTime(r.period_start).slice(11, 19) + " " + (r.job_status || ""))
      : h("span", {class: "chip bad-chip", title: r.error || ""}, "error"));
    tbody.append(h("tr", {},
      h("td", {}, s.name, h("div", {class: "muted mono small"}, s.id)),
      h("td", {class: "mono"}, s.cron),
      h("td", {class: "mono small"}, s.source.path + "/" + s.source.pattern),
      h("td", {}, s.tasks.map((t) => t.type).join(", ")),
      h("td", {class: "small"}, s.enabled ? fmtTime(s.next_run_at) : "disabled"),
      h("td", {}, ...runs)));
  }
  return true;
}

// -- usage -------------------------------------------------------------------------------
async function renderUsage() {
  // One row per day and task: the day's usage by task, a bar per row scaled to the
  // busiest row's input tokens (the chart), from /v1/usage grouped by day then by task.
  const days = (await (await api("/v1/usage?group_by=day")).json()).data;
  const tbody = document.getElementById("usage-body");
  tbody.replaceChildren();
  if (!days.length) tbody.append(h("tr", {}, h("td", {colspan: "8", class: "muted"}, "No usage yet.")));
  const rows = [];
  for (const d of days) {
    const next = new Date(Date.parse(d.day + "T00:00:00Z") + 86400000).toISOString().slice(0, 10);
    const tasks = (await (await api(`/v1/usage?group_by=task&start=${d.day}&end=${next}`)).json()).data;
    for (const t of tasks) rows.push({day: d.day, ...t});
  }
  const top = Math.max(1, ...rows.map((r) => r.input_tokens));
  for (const r of rows.reverse()) {
    const bar = h("div", {class: "bar", style: `width:${Math.max(2, 120 * r.input_tokens / top)}px;height:10px;background:var(--accent, #4a7)`});
    tbody.append(h("tr", {},
      h("td", {class: "mono"}, r.day), h("td", {}, r.task),
      h("td", {}, String(r.documents)), h("td", {}, String(r.reused_documents)),
      h("td", {}, String(r.input_tokens)), h("td", {}, String(r.generated_tokens)),
      h("td", {}, String(r.model_seconds)), h("td", {}, bar)));
  }
  return true;
}

// -- polling -----------------------------------------------------------------------------
const PAGE = window.DOCBATCH_PAGE || {page: "jobs"};
let timer = null;

async function refresh() {
  clearTimeout(timer);
  let again = true;
  try {
    if (PAGE.page === "job") again = await renderJob(PAGE.jobId);
    else if (PAGE.page === "schedules") again = await renderSchedules();
    else if (PAGE.page === "usage") again = await renderUsage();
    else again = await renderJobs();
  } catch (err) {
    if (err.message !== "unauthorised") showBanner("Could not load: " + err.message);
  }
  if (again) timer = setTimeout(refresh, POLL_MS);
}

setupKeyForm();
if (PAGE.page === "job") {
  document.getElementById("download").addEventListener("click", () => downloadResults(PAGE.jobId));
  setupDelete(PAGE.jobId);
}
refresh();
