// The fleetbus dashboard: plain ES modules, no build step, served by the hub itself.
//
// Everything shown comes from the hub's API (/api/v1), which leaves secrets out; the page adds
// nothing of its own and builds the DOM with textContent only, never HTML from data. The token
// is asked for once and kept in sessionStorage (gone when the tab closes). The live feed is an
// EventSource on /api/v1/events/stream, authenticated by a one-minute stream ticket because
// EventSource cannot send an Authorization header; each event also refreshes the current view.

const TOKEN_KEY = "fleetbus.token";
const FEED_LIMIT = 200;
const REFRESH_EVERY_MS = 1000;
const RATE_EVERY_MS = 5000;

// `?project=P` in the page's address shows project P (as `--project` does on the CLI);
// without it the dashboard shows the token's own project (the whole hub for org tokens).
const PROJECT = new URLSearchParams(location.search).get("project");

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  source: null,
  cursor: null,
  refreshTimer: null,
  refreshedAt: 0,
  reconnectTimer: null,
  rateAt: 0,
  feedQueue: [],
  barHash: null,
  rateTimer: null,
};

// --- DOM helpers -------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function put(parent, ...children) {
  parent.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return parent;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.round(seconds)}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h ago`;
  return `${Math.round(seconds / 86400)}d ago`;
}

function time(iso) {
  return iso ? el("time", { datetime: iso, title: iso }, ago(iso)) : el("span", { class: "muted" }, "—");
}

const taskLink = (name) => el("a", { href: `#/taskset/${encodeURIComponent(name)}` }, name);
const clusterLink = (name) => el("a", { href: `#/cluster/${encodeURIComponent(name)}` }, name);

function badge(stateName, text) {
  return el("span", { class: `badge state-${stateName}` }, text ?? stateName);
}

function labels(map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return el("span", { class: "muted" }, "no labels");
  return el("span", { class: "labels" }, entries.map(([k, v]) => el("span", { class: "label" }, `${k}=${v}`)));
}

function progressBar(done, total, failed = 0) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  const failedPct = total ? Math.round((100 * failed) / total) : 0;
  return el(
    "div",
    { class: "progress", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
    el("div", { class: "bar done", style: `width:${pct}%` }),
    el("div", { class: "bar failed", style: `width:${failedPct}%` }),
    el("span", { class: "progress-text" }, `${done}/${total} applied` + (failed ? `, ${failed} failed` : "")),
  );
}

// --- API ---------------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {
      Accept: "application/json",
      Authorization: `Bearer ${state.token}`,
      ...(PROJECT ? { "X-Fleetbus-Project": PROJECT } : {}),
      ...(options.headers || {}),
    },
  });
  if (response.status === 401) throw new Unauthorized((await response.json()).error);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

// --- sign in -----------------------------------------------------------------------------------

async function signIn() {
  const dialog = document.getElementById("login");
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const error = document.getElementById("login-error");
  while (true) {
    if (state.token) {
      try {
        const me = await api("/api/v1/whoami");
        const where = me.project === "default" && me.org_level ? "" : ` in ${me.project}`;
        document.getElementById("who").textContent = `${me.name} (${me.role}${where})`;
        document.getElementById("logout").hidden = false;
        if (dialog.open) dialog.close();
        return me;
      } catch (e) {
        if (!(e instanceof Unauthorized)) throw e;
        error.textContent = e.message;
        state.token = null;
        sessionStorage.removeItem(TOKEN_KEY);
      }
    }
    if (!dialog.open) dialog.showModal();
    input.value = "";
    input.focus();
    await new Promise((resolve) => form.addEventListener("submit", resolve, { once: true }));
    state.token = input.value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  if (state.source) state.source.close();
  location.reload();
}

// --- live feed ---------------------------------------------------------------------------------

function setLive(text, ok) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.classList.toggle("on", ok);
}

async function connectLive() {
  clearTimeout(state.reconnectTimer);
  if (state.source) state.source.close();
  let ticket;
  try {
    ticket = (await api("/api/v1/stream-tickets", { method: "POST" })).ticket;
  } catch (e) {
    setLive("offline", false);
    state.reconnectTimer = setTimeout(connectLive, 5000);
    return;
  }
  const params = new URLSearchParams({ ticket });
  if (PROJECT) params.set("project", PROJECT);
  if (state.cursor) {
    const [events, reports] = state.cursor.split("-").map(Number);
    params.set("from_seq", String(events + 1));
    params.set("reports_from_seq", String(reports + 1));
  }
  const source = new EventSource(`/api/v1/events/stream?${params}`);
  state.source = source;
  source.onopen = () => setLive("live", true);
  source.onmessage = (message) => {
    state.cursor = message.lastEventId || state.cursor;
    queueFeed(JSON.parse(message.data));
    scheduleRefresh();
  };
  source.addEventListener("stream-error", () => source.close());
  source.onerror = () => {
    setLive("reconnecting…", false);
    // The browser retries by itself while the ticket is valid; once it gives up (the ticket
    // expired or the hub restarted), ask for a new ticket and resume from the cursor.
    if (source.readyState === EventSource.CLOSED) {
      state.reconnectTimer = setTimeout(connectLive, 2000);
    }
  };
}

function addToFeed(record) {
  const feed = document.getElementById("feed");
  const kind = record.stream === "reports" ? "report" : "event";
  const item = el(
    "li",
    { class: `feed-item ${kind} type-${record.type}`, dataset: { type: record.type } },
    el("div", { class: "feed-head" }, el("strong", {}, record.type), " ", time(record.stored_at)),
    el("div", { class: "feed-summary" }, record.summary),
    el("div", { class: "feed-actor muted" }, record.event.actor || ""),
  );
  feed.prepend(item);
  while (feed.children.length > FEED_LIMIT) feed.lastChild.remove();
}

// A publish to 10,000 clusters brings 10,000 reports in seconds: the feed takes them in batches,
// once per frame, and keeps only the newest FEED_LIMIT.
function queueFeed(record) {
  state.feedQueue.push(record);
  if (state.feedQueue.length > FEED_LIMIT) state.feedQueue.splice(0, state.feedQueue.length - FEED_LIMIT);
  if (state.feedQueue.length === 1) requestAnimationFrame(flushFeed);
}

function flushFeed() {
  const records = state.feedQueue;
  state.feedQueue = [];
  records.forEach(addToFeed);
}

async function loadRecentFeed() {
  const feed = document.getElementById("feed");
  clear(feed);
  for (const stream of ["events", "reports"]) {
    const head = await api(`/api/v1/events?stream=${stream}&limit=1`);
    const from = Math.max(1, head.last_seq - 24);
    if (!head.last_seq) continue;
    const page = await api(`/api/v1/events?stream=${stream}&from_seq=${from}&limit=25`);
    page.events.forEach(addToFeed);
  }
  const sorted = [...feed.children].sort((a, b) =>
    (b.querySelector("time")?.getAttribute("datetime") || "").localeCompare(
      a.querySelector("time")?.getAttribute("datetime") || "",
    ),
  );
  sorted.forEach((item) => feed.append(item));
}

// The view is refreshed at most once a second however many events arrive (a burst of reports
// must not postpone it, nor ask for it once per event).
function scheduleRefresh() {
  if (state.refreshTimer) return;
  const wait = Math.max(300, state.refreshedAt + REFRESH_EVERY_MS - Date.now());
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    state.refreshedAt = Date.now();
    route(false);
  }, wait);
}

// --- views -------------------------------------------------------------------------------------
//
// Shapes (see /api/v1/openapi.json): a cell is a projector StatusRow (cluster, taskset, state,
// desired_version, applied_version, drift_count, last_report_at, error, wave); a taskset view
// carries `rollout` ({state, wave, total_waves, applied, targets, failed, reason}) or null.

const drifted = (cell) => cell.state === "drifted" || cell.drift_count > 0;

function cellContent(cell) {
  if (!cell) return el("span", { class: "muted" }, "·");
  const desired = cell.desired_version;
  const appliedVersion = cell.applied_version;
  const version =
    appliedVersion && desired && appliedVersion !== desired
      ? `v${appliedVersion} → v${desired}`
      : desired
        ? `v${desired}`
        : cell.state;
  const title = [
    `desired ${desired ? "v" + desired : "—"}`,
    `applied ${appliedVersion ? "v" + appliedVersion : "nothing yet"}`,
    `state ${cell.state}`,
    cell.drift_count ? `${cell.drift_count} drift report(s)` : "",
    cell.error || "",
  ]
    .filter(Boolean)
    .join("\n");
  return el(
    "span",
    { class: `cell state-${cell.state}`, title, dataset: { state: cell.state } },
    version,
    drifted(cell) ? el("span", { class: "drift", title: "drift detected" }, " ⚠") : null,
  );
}

// --- charts (SVG, drawn here: the dashboard loads no library) -------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 720, height: 170, left: 44, right: 12, top: 14, bottom: 24 };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

function chartFrame(id, label, data, yMax, yLabel) {
  const { width, height, left, right, top, bottom } = CHART;
  const root = svg("svg", { id, class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  Object.entries(data).forEach(([k, v]) => root.setAttribute(`data-${k}`, String(v)));
  const base = height - bottom;
  root.append(
    svg("line", { class: "axis", x1: left, y1: base, x2: width - right, y2: base }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: base }),
  );
  if (yMax !== null) {
    root.append(
      svg("text", { class: "tick", x: left - 6, y: top + 4, "text-anchor": "end" }, String(yMax)),
      svg("text", { class: "tick", x: left - 6, y: base, "text-anchor": "end" }, "0"),
      svg("text", { class: "tick", x: 4, y: top + (base - top) / 2, transform: `rotate(-90 10 ${top + (base - top) / 2})`, "text-anchor": "middle" }, yLabel),
    );
  }
  return root;
}

function legend(...entries) {
  return el("div", { class: "legend small" }, entries.map(([cls, text]) => el("span", { class: `key ${cls}` }, text)));
}

function eventRateChart(rate) {
  const buckets = rate.buckets;
  const { width, height, left, right, top, bottom } = CHART;
  const totals = buckets.map((b) => b.events + b.reports);
  const max = Math.max(1, ...totals);
  const total = totals.reduce((a, b) => a + b, 0);
  const root = chartFrame("chart-event-rate", "fleet event rate", { total, buckets: buckets.length }, max, "per bucket");
  const step = (width - left - right) / Math.max(1, buckets.length);
  const y = (v) => (v / max) * (height - top - bottom);
  const base = height - bottom;
  buckets.forEach((b, i) => {
    const x = left + i * step + 0.5;
    const w = Math.max(1, step - 1);
    const title = `${clock(Date.parse(b.at))}: ${b.events} events, ${b.reports} reports`;
    if (b.reports) root.append(svg("rect", { class: "bar reports", x, y: base - y(b.reports), width: w, height: y(b.reports) }, svg("title", {}, title)));
    if (b.events) root.append(svg("rect", { class: "bar events", x, y: base - y(b.reports) - y(b.events), width: w, height: y(b.events) }, svg("title", {}, title)));
  });
  if (buckets.length) {
    root.append(
      svg("text", { class: "tick", x: left, y: height - 6 }, clock(Date.parse(buckets[0].at))),
      svg("text", { class: "tick", x: width - right, y: height - 6, "text-anchor": "end" }, clock(Date.parse(rate.until))),
    );
  }
  return el(
    "figure",
    { class: "chart-box" },
    el("figcaption", {}, `Fleet event rate, last ${Math.round((Date.parse(rate.until) - Date.parse(rate.since)) / 60000)} min (per ${rate.bucket_seconds} s)`),
    root,
    legend(["events", "hub events"], ["reports", "cluster reports"]),
  );
}

function convergenceChart(series, targets) {
  const points = series.points;
  const { width, height, left, right, top, bottom } = CHART;
  const start = Date.parse(series.since);
  const times = [...points.map((p) => Date.parse(p.at)), ...series.waves.map((w) => Date.parse(w.at))];
  const end = Math.max(start + 1000, ...times);
  const last = points[points.length - 1] || { applied: 0, failed: 0 };
  const max = Math.max(1, targets || 0, ...points.map((p) => Math.max(p.applied, p.failed)));
  const root = chartFrame("chart-convergence", "rollout convergence", { applied: last.applied, failed: last.failed, waves: series.waves.length }, max, "clusters");
  const x = (ms) => left + ((ms - start) / (end - start)) * (width - left - right);
  const y = (v) => height - bottom - (v / max) * (height - top - bottom);
  const stepLine = (key) => {
    let d = `M ${x(start)} ${y(0)}`;
    let value = 0;
    for (const p of points) {
      const px = x(Date.parse(p.at));
      d += ` L ${px} ${y(value)} L ${px} ${y(p[key])}`;
      value = p[key];
    }
    return d + ` L ${x(end)} ${y(value)}`;
  };
  for (const w of series.waves) {
    const wx = x(Date.parse(w.at));
    root.append(
      svg("line", { class: w.halted ? "wave halted" : "wave", x1: wx, y1: top, x2: wx, y2: height - bottom }),
      svg("text", { class: "wave-label", x: wx + 3, y: top + 9 }, w.halted ? `halted (wave ${w.wave})` : `wave ${w.wave}/${w.total_waves}`),
    );
  }
  if (targets) root.append(svg("line", { class: "target", x1: left, y1: y(targets), x2: width - right, y2: y(targets) }));
  root.append(
    svg("path", { class: "series applied", d: stepLine("applied") }),
    svg("path", { class: "series failed", d: stepLine("failed") }),
    svg("text", { class: "tick", x: left, y: height - 6 }, clock(start)),
    svg("text", { class: "tick", x: width - right, y: height - 6, "text-anchor": "end" }, `+${Math.round((end - start) / 1000)} s`),
  );
  return el(
    "figure",
    { class: "chart-box" },
    el("figcaption", {}, "Convergence since this version was published"),
    root,
    legend(["applied", "applied"], ["failed", "failed"], ["wavemark", "wave started"], ["target", "targets"]),
  );
}

function driftChart(timeline) {
  const points = timeline.points;
  if (!points.length) {
    return el("figure", { class: "chart-box" }, el("figcaption", {}, "Drift timeline"), el("p", { id: "chart-drift", class: "muted", dataset: { points: "0" } }, "No drift seen."));
  }
  const { width, height, left, right, top, bottom } = CHART;
  const times = points.map((p) => Date.parse(p.at));
  // From the first drift seen to now: how recent, and how spread, the drift is.
  const start = Math.min(...times);
  const end = Math.max(start + 60000, Date.now(), ...times);
  const detected = points.filter((p) => p.type === "DriftDetected").length;
  const root = chartFrame("chart-drift", "drift timeline", { points: points.length, detected, corrected: points.length - detected }, null, "");
  const x = (ms) => left + 6 + ((ms - start) / (end - start)) * (width - left - right - 12);
  const rows = { DriftDetected: top + (height - top - bottom) * 0.3, DriftCorrected: top + (height - top - bottom) * 0.7 };
  root.append(
    svg("text", { class: "tick", x: left + 4, y: rows.DriftDetected - 10 }, "detected"),
    svg("text", { class: "tick", x: left + 4, y: rows.DriftCorrected - 10 }, "corrected"),
  );
  for (const p of points) {
    root.append(
      svg("circle", { class: p.type === "DriftDetected" ? "point detected" : "point corrected", cx: x(Date.parse(p.at)), cy: rows[p.type], r: 4 }, svg("title", {}, `${clock(Date.parse(p.at))} ${p.summary}`)),
    );
  }
  root.append(
    svg("text", { class: "tick", x: left, y: height - 6 }, new Date(start).toLocaleString()),
    svg("text", { class: "tick", x: width - right, y: height - 6, "text-anchor": "end" }, new Date(end).toLocaleString()),
  );
  return el("figure", { class: "chart-box" }, el("figcaption", {}, "Drift timeline"), root, legend(["detected", "detected"], ["corrected", "corrected"]));
}

function rolloutBadge(rollout) {
  if (!rollout) return null;
  return badge(rollout.state, `${rollout.state} ${rollout.applied}/${rollout.targets}`);
}

// The fleet view summarizes the whole fleet (counts from /api/v1/fleet) and shows one page of
// its clusters, filtered by the hub (SQLite answers paging and filters): at 10,000 clusters the
// page holds PAGE_SIZE rows, never the whole matrix. The filters and the page live in the URL
// (#/?q=…&state=…&page=…). Live events refresh the counts and the rows shown in place; the
// filter bar (and what is being typed in it) is left alone.

const PAGE_SIZE = 50;
const CELL_STATES = ["pending", "applied", "failed", "drifted", "refused", "removing", "unscheduled"];

function fleetFilters(query) {
  return {
    q: query.get("q") || "",
    selector: query.get("selector") || "",
    state: CELL_STATES.includes(query.get("state")) ? query.get("state") : "",
    connected: ["true", "false"].includes(query.get("connected")) ? query.get("connected") : "",
    page: Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1),
  };
}

function fleetPath(filters) {
  const params = new URLSearchParams({ offset: String((filters.page - 1) * PAGE_SIZE), limit: String(PAGE_SIZE) });
  for (const key of ["q", "selector", "state", "connected"]) if (filters[key]) params.set(key, filters[key]);
  return `/api/v1/fleet?${params}`;
}

function fleetHash(filters) {
  const params = new URLSearchParams();
  for (const key of ["q", "selector", "state", "connected"]) if (filters[key]) params.set(key, filters[key]);
  if (filters.page > 1) params.set("page", String(filters.page));
  const text = params.toString();
  return text ? `#/?${text}` : "#/";
}

function filterBar(filters) {
  let timer = null;
  const form = el("form", { class: "filters", id: "fleet-filters", onsubmit: (e) => e.preventDefault() });
  const apply = () => {
    const data = new FormData(form);
    const next = { q: "", selector: "", state: "", connected: "", page: 1 };
    for (const key of ["q", "selector", "state", "connected"]) next[key] = String(data.get(key) || "").trim();
    const hash = fleetHash(next);
    state.barHash = hash;
    if (hash !== (location.hash || "#/")) location.hash = hash;
  };
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(apply, 300);
  };
  const option = (value, text, chosen) => el("option", { value, selected: value === chosen }, text);
  put(
    form,
    el("input", { name: "q", type: "search", placeholder: "cluster name", value: filters.q, "aria-label": "cluster name", oninput: later }),
    el("input", { name: "selector", type: "search", placeholder: "labels, e.g. env=prod", value: filters.selector, "aria-label": "label selector", oninput: later }),
    el(
      "select",
      { name: "state", "aria-label": "placement state", onchange: apply },
      option("", "any state", filters.state),
      CELL_STATES.map((s) => option(s, s, filters.state)),
    ),
    el(
      "select",
      { name: "connected", "aria-label": "connection", onchange: apply },
      option("", "connected or not", filters.connected),
      option("true", "connected", filters.connected),
      option("false", "not connected", filters.connected),
    ),
  );
  return form;
}

function fleetCards(summary) {
  const card = (value, label, cls = "", filter = null) =>
    el(
      filter ? "a" : "div",
      { class: `card ${cls}`, dataset: { metric: label }, href: filter ? fleetHash({ page: 1, ...filter }) : null },
      el("b", {}, Number(value).toLocaleString("en")),
      label,
    );
  const states = summary.states || {};
  return el(
    "section",
    { class: "cards", id: "fleet-cards" },
    card(summary.clusters, "clusters"),
    card(summary.connected, "connected", "", { connected: "true" }),
    card(summary.tasksets, "tasksets"),
    card(summary.rolling_out, "rolling out"),
    card(summary.halted, "halted", summary.halted ? "alert" : ""),
    card(summary.drifted, "drifted", summary.drifted ? "warn" : "", { state: "drifted" }),
    el(
      "div",
      { class: "states", id: "fleet-states" },
      CELL_STATES.filter((s) => states[s]).map((s) =>
        el("a", { class: `badge state-${s}`, href: fleetHash({ page: 1, state: s }), dataset: { state: s, count: String(states[s]) } }, `${s} ${Number(states[s]).toLocaleString("en")}`),
      ),
    ),
  );
}

function pager(page, filters) {
  const from = page.total ? page.offset + 1 : 0;
  const to = page.offset + page.clusters.length;
  const pages = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
  const go = (n) => fleetHash({ ...filters, page: n });
  return el(
    "nav",
    { class: "pager", id: "pager", dataset: { total: String(page.total), page: String(filters.page), pages: String(pages) } },
    filters.page > 1 ? el("a", { href: go(filters.page - 1), rel: "prev" }, "← previous") : el("span", { class: "muted" }, "← previous"),
    el("span", { class: "pager-text" }, `${from.toLocaleString("en")}–${to.toLocaleString("en")} of ${page.total.toLocaleString("en")} clusters · page ${filters.page} of ${pages}`),
    filters.page < pages ? el("a", { href: go(filters.page + 1), rel: "next" }, "next →") : el("span", { class: "muted" }, "next →"),
  );
}

function fleetMatrix(page) {
  const cells = new Map(page.cells.map((c) => [`${c.cluster}\u0000${c.taskset}`, c]));
  const head = el(
    "tr",
    {},
    el("th", { class: "corner" }, "cluster \\ taskset"),
    page.tasksets.map((t) =>
      el(
        "th",
        { class: t.retired ? "retired" : "", dataset: { taskset: t.name } },
        taskLink(t.name),
        el("div", { class: "muted small" }, `v${t.version}`, t.retired ? " · retired" : ""),
        el("div", {}, rolloutBadge(t.rollout)),
      ),
    ),
  );
  const rows = page.clusters.map((cluster) =>
    el(
      "tr",
      { dataset: { cluster: cluster.name } },
      el(
        "th",
        { class: "row-head" },
        el("span", {
          class: cluster.connected ? "dot on" : "dot",
          title: cluster.connected ? "connected" : `last seen ${ago(cluster.last_seen)}`,
        }),
        clusterLink(cluster.name),
        el("div", {}, labels(cluster.labels)),
        edgeLine(cluster),
        controllerLine(cluster),
      ),
      page.tasksets.map((t) =>
        el("td", { dataset: { taskset: t.name } }, cellContent(cells.get(`${cluster.name}\u0000${t.name}`))),
      ),
    ),
  );
  return el("div", { class: "matrix-wrap", id: "matrix-wrap" }, el("table", { class: "matrix", id: "matrix" }, el("thead", {}, head), el("tbody", {}, rows)));
}

function fleetBody(page, filters) {
  const body = el("div", { id: "fleet-body" });
  if (!page.summary.clusters) {
    return put(body, el("p", { class: "empty" }, "No clusters yet: fleetbus cluster register NAME"));
  }
  if (!page.total) {
    return put(body, el("p", { class: "empty", id: "no-match" }, "No cluster matches these filters."));
  }
  put(body, pager(page, filters), fleetMatrix(page));
  if (!page.tasksets.length) {
    put(body, el("p", { class: "empty" }, "Nothing published yet: fleetbus publish PATH --name N"));
  }
  return body;
}

function renderFleet(view, page, rate, filters) {
  put(
    view,
    el("h1", {}, "Fleet"),
    fleetCards(page.summary),
    rate ? eventRateChart(rate) : null,
    filterBar(filters),
    fleetBody(page, filters),
  );
  view.dataset.fleet = fleetHash(filters);
}

// A live refresh of the fleet view already shown: counts and rows change in place; the filter
// bar, its focus and the page's scroll stay as they are.
function updateFleet(view, page, rate, filters) {
  // The bar is redrawn when the filters changed from elsewhere (a link, the address, the pager),
  // never for a live refresh or for what the bar itself asked for.
  const hash = fleetHash(filters);
  const bar = view.querySelector("#fleet-filters");
  if (bar && hash !== view.dataset.fleet && hash !== state.barHash) bar.replaceWith(filterBar(filters));
  if (hash !== view.dataset.fleet) state.barHash = null;
  view.dataset.fleet = hash;
  view.querySelector("#fleet-cards")?.replaceWith(fleetCards(page.summary));
  if (rate) view.querySelector("#chart-event-rate")?.closest(".chart-box")?.replaceWith(eventRateChart(rate));
  view.querySelector("#fleet-body")?.replaceWith(fleetBody(page, filters));
}

function edgeLine(cluster) {
  if (!cluster.edge_version && cluster.edge_ready == null) return el("div", { class: "muted small edge" }, "edge: not reported");
  const state = cluster.edge_ready ? "ready" : "not ready";
  return el(
    "div",
    { class: cluster.edge_ready ? "small edge" : "small edge warn", title: cluster.edge_health || state },
    `edge ${cluster.edge_version || "?"} · ${state}`,
  );
}

function controllerLine(cluster) {
  const c = cluster.controller;
  if (!c) return el("div", { class: "muted small controller" }, "controller: not reported");
  const state = c.ready ? "ready" : "not ready";
  return el(
    "div",
    { class: c.ready ? "small controller" : "small controller warn", title: c.reason || state },
    `controller ${c.version || "?"} · ${state}`,
  );
}

function controllerFacts(c) {
  if (!c) return [];
  const replicas = (c.replicas || []).map((r) =>
    el(
      "li",
      { class: r.stale || !r.ready ? "warn" : "" },
      el("code", {}, r.name),
      ` ${r.role || "?"} · ${r.stale ? "stale" : r.ready ? "ready" : "not ready"} · heard `,
      time(r.heard_at),
      r.reason ? el("span", { class: "muted" }, ` · ${r.reason}`) : "",
    ),
  );
  return [
    el("div", { class: "muted small controller-reason" }, c.reason || ""),
    c.leader
      ? el("div", { class: "muted small" }, `leader ${c.leader} · watches ${c.watches_synced == null ? "?" : c.watches_synced ? "synced" : "not synced"}`)
      : "",
    c.last_error
      ? el("div", { class: "small warn controller-error" }, "last error ", time(c.last_error_at), `: ${c.last_error}`)
      : "",
    replicas.length ? el("ul", { class: "small replicas" }, replicas) : "",
  ];
}

function describePlacement(placement) {
  const parts = [];
  if (placement.selector) parts.push(`selector ${placement.selector}`);
  if (placement.clusters?.length) parts.push(`clusters ${placement.clusters.join(", ")}`);
  return parts.join("; ") || "no clusters";
}

function describeStrategy(strategy) {
  const parts = [strategy.batch_size ? `waves of ${strategy.batch_size}` : "all at once"];
  if (strategy.max_unavailable) parts.push(`at most ${strategy.max_unavailable} updating`);
  if (strategy.pause_seconds) parts.push(`${strategy.pause_seconds}s between waves`);
  parts.push(`halts after ${strategy.failure_threshold} failed`);
  return parts.join(", ");
}

function describeProvenance(p) {
  if (!p) return "upload";
  if (p.kind === "git") {
    return `git ${p.url}${p.path ? " " + p.path : ""} at ${p.ref} (${p.commit.slice(0, 12)})`;
  }
  return `${p.kind} ${p.url} chart ${p.chart} ${p.chart_version} (${p.digest.slice(0, 19)})`;
}

function renderTaskset(view, detail, series) {
  const t = detail.taskset;
  const r = t.rollout;
  put(view, 
    el("h1", {}, "Taskset ", el("code", {}, t.name), t.retired ? badge("retired") : null),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "version"),
      el("dd", {}, `v${t.version} (${t.format})`),
      el("dt", {}, "digest"),
      el("dd", {}, el("code", {}, t.digest)),
      el("dt", {}, "source"),
      el("dd", { class: "provenance" }, describeProvenance(t.provenance)),
      el("dt", {}, "published"),
      el("dd", {}, time(detail.published_at), detail.published_by ? ` by ${detail.published_by}` : ""),
      el("dt", {}, "placement"),
      el("dd", {}, describePlacement(t.placement)),
      el("dt", {}, "rollout"),
      el("dd", {}, describeStrategy(t.strategy)),
    ),
  );
  if (r) {
    put(view, 
      el("h2", {}, `Rollout of v${r.version} `, badge(r.state), el("span", { class: "muted small" }, `wave ${r.wave + 1} of ${r.total_waves}`)),
      progressBar(r.applied, r.targets, r.failed.length),
      r.reason ? el("p", { class: "error" }, r.reason) : null,
      series ? convergenceChart(series, r.targets) : null,
    );
  } else {
    put(view, el("h2", {}, "Rollout"), el("p", { class: "muted" }, "Not scheduled yet."));
  }
  put(view, 
    el(
      "ol",
      { class: "waves" },
      detail.waves.map((wave) =>
        el(
          "li",
          { class: `wave ${!r || wave.wave <= r.wave ? "started" : "waiting"}` },
          el("span", { class: "wave-name" }, `wave ${wave.wave + 1}`),
          wave.clusters.map((c) =>
            el(
              "span",
              { class: `chip state-${c.state}`, title: c.error || c.state },
              clusterLink(c.cluster),
              " ",
              c.applied_version ? `v${c.applied_version}` : "—",
            ),
          ),
        ),
      ),
    ),
    el("h2", {}, "Versions"),
    el(
      "table",
      { class: "list" },
      el("thead", {}, el("tr", {}, ["version", "digest", "source", "size", "published", "by"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        detail.versions.map((v) =>
          el(
            "tr",
            {},
            el("td", {}, `v${v.version}`),
            el("td", {}, el("code", {}, v.digest.slice(0, 19))),
            el("td", { class: "provenance" }, describeProvenance(v.provenance)),
            el("td", {}, `${v.body_size.toLocaleString()} B`),
            el("td", {}, time(v.published_at)),
            el("td", {}, v.actor),
          ),
        ),
      ),
    ),
  );
}

function auditTable(rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el(
    "table",
    { class: "list" },
    el("thead", {}, el("tr", {}, ["when", "type", "taskset", "what"].map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          {},
          el("td", {}, time(row.time)),
          el("td", {}, badge(row.type === "TaskFailed" ? "failed" : row.type.startsWith("Drift") ? "drifted" : "applied", row.type)),
          el("td", {}, row.taskset ? taskLink(row.taskset) : ""),
          el("td", {}, row.summary),
        ),
      ),
    ),
  );
}

function renderCluster(view, detail, drift) {
  const c = detail.cluster;
  put(view, 
    el(
      "h1",
      {},
      "Cluster ",
      el("code", {}, c.name),
      el("span", { class: c.connected ? "dot on" : "dot" }),
      el("span", { class: "muted small" }, c.connected ? "connected" : "not connected"),
    ),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "labels"),
      el("dd", {}, labels(c.labels)),
      el("dt", {}, "registered"),
      el("dd", {}, time(c.registered_at)),
      el("dt", {}, "last seen"),
      el("dd", {}, time(c.last_seen)),
      el("dt", {}, "edge"),
      el("dd", { class: "edge-health" }, edgeLine(c), c.edge_health ? el("div", { class: "muted small" }, c.edge_health) : ""),
      el("dt", {}, "controller"),
      el("dd", { class: "controller-health" }, controllerLine(c), controllerFacts(c.controller)),
      el("dt", {}, "last report"),
      el("dd", {}, detail.reports.length ? [time(detail.reports[0].time), " ", detail.reports[0].summary] : "none yet"),
    ),
    el("h2", {}, "Tasksets"),
    detail.cells.length
      ? el(
          "table",
          { class: "list" },
          el("thead", {}, el("tr", {}, ["taskset", "desired", "applied", "state", "last report", "overrides", "message"].map((h) => el("th", {}, h)))),
          el(
            "tbody",
            {},
            detail.cells.map((cell) =>
              el(
                "tr",
                {},
                el("td", {}, taskLink(cell.taskset)),
                el("td", {}, cell.desired_version ? `v${cell.desired_version}` : "—"),
                el("td", {}, cell.applied_version ? `v${cell.applied_version}` : "—"),
                el("td", {}, badge(cell.state), drifted(cell) ? el("span", { class: "drift" }, ` ⚠ ${cell.drift_count}`) : null),
                el("td", {}, time(cell.last_report_at)),
                el("td", {}, cell.overrides.join(", ") || el("span", { class: "muted" }, "none")),
                el("td", { class: "muted" }, cell.error || ""),
              ),
            ),
          ),
        )
      : el("p", { class: "muted" }, "No taskset is placed on this cluster."),
    el("h2", {}, "Drift history"),
    drift ? driftChart(drift) : null,
    auditTable(detail.drift, "No drift seen."),
    el("h2", {}, "Latest reports"),
    auditTable(detail.reports, "No reports yet."),
  );
}

async function renderEvents(view) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const stream = params.get("stream") || "events";
  const head = await api(`/api/v1/events?stream=${stream}&limit=1`);
  const from = Math.max(1, head.last_seq - 99);
  const query = new URLSearchParams({ stream, limit: "100", from_seq: String(from) });
  for (const key of ["cluster", "taskset"]) if (params.get(key)) query.set(key, params.get(key));
  if (params.get("cluster") || params.get("taskset")) query.delete("from_seq");
  const page = await api(`/api/v1/events?${query}`);
  const filter = el(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(e.target);
        const next = new URLSearchParams();
        for (const [k, v] of data.entries()) if (v) next.set(k, String(v));
        location.hash = `#/events?${next}`;
      },
    },
    el("select", { name: "stream" }, ["events", "reports"].map((s) => el("option", { value: s, selected: s === stream }, s))),
    el("input", { name: "cluster", placeholder: "cluster", value: params.get("cluster") || "" }),
    el("input", { name: "taskset", placeholder: "taskset", value: params.get("taskset") || "" }),
    el("button", { type: "submit" }, "Filter"),
  );
  put(view, 
    el("h1", {}, "Events"),
    filter,
    el(
      "table",
      { class: "list events" },
      el("thead", {}, el("tr", {}, ["seq", "time", "type", "actor", "what"].map((h) => el("th", {}, h)))),
      el("tbody", {}, page.events.slice().reverse().map((e) => el("tr", {}, el("td", {}, String(e.seq)), el("td", {}, time(e.stored_at)), el("td", {}, e.type), el("td", {}, e.event.actor || ""), el("td", {}, e.summary)))),
    ),
    page.next_from_seq ? el("p", { class: "muted" }, "Showing the first 100 matches; narrow the filters to see more.") : null,
  );
}

// --- blueprints --------------------------------------------------------------------------------

const blueprintLink = (name) => el("a", { href: `#/blueprint/${encodeURIComponent(name)}` }, name);

const SYNC_STATES = { in_sync: "applied", updating: "pending", out_of_date: "pending", failed: "failed" };

function renderBlueprints(view, blueprints) {
  put(view, el("h1", {}, "Blueprints"));
  if (!blueprints.length) {
    put(view, el("p", { class: "empty" }, "No blueprint published yet: fleetbus blueprint publish FILE"));
    return;
  }
  put(view,
    el(
      "table",
      { class: "list", id: "blueprints" },
      el("thead", {}, el("tr", {}, ["blueprint", "version", "selector", "entries", "published"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        blueprints.map((b) =>
          el(
            "tr",
            { dataset: { blueprint: b.name } },
            el("td", {}, blueprintLink(b.name)),
            el("td", {}, `v${b.version}`),
            el("td", {}, b.selector || el("span", { class: "muted" }, "assigned clusters only")),
            el("td", {}, b.entries.map((e) => e.taskset).join(", ")),
            el("td", {}, time(b.published_at), ` by ${b.published_by}`),
          ),
        ),
      ),
    ),
  );
}

function renderBlueprint(view, blueprint, clusters) {
  const behind = clusters.filter((c) => c.version !== blueprint.version || c.state !== "in_sync");
  put(view,
    el("h1", {}, "Blueprint ", el("code", {}, blueprint.name), ` v${blueprint.version}`),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "selector"),
      el("dd", {}, blueprint.selector || "—"),
      el("dt", {}, "base"),
      el("dd", {}, blueprint.base ? `${blueprint.base} v${blueprint.base_version}` : "—"),
      el("dt", {}, "drift"),
      el("dd", {}, blueprint.drift_policy || "per taskset"),
      el("dt", {}, "published"),
      el("dd", {}, time(blueprint.published_at), ` by ${blueprint.published_by}`),
    ),
    el("h2", {}, "Entries"),
    el(
      "table",
      { class: "list" },
      el("thead", {}, el("tr", {}, ["taskset", "version", "dependsOn"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        blueprint.entries.map((e) =>
          el(
            "tr",
            {},
            el("td", {}, taskLink(e.taskset)),
            el("td", {}, e.version ? `v${e.version}` : "latest"),
            el("td", {}, e.depends_on.join(", ") || el("span", { class: "muted" }, "—")),
          ),
        ),
      ),
    ),
    el("h2", {}, `Clusters (${clusters.length - behind.length} of ${clusters.length} in sync on v${blueprint.version})`),
    progressBar(clusters.length - behind.length, clusters.length, clusters.filter((c) => c.state === "failed").length),
    el(
      "table",
      { class: "list", id: "blueprint-clusters" },
      el("thead", {}, el("tr", {}, ["cluster", "version", "status", "detail"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        clusters.map((c) =>
          el(
            "tr",
            { dataset: { cluster: c.cluster, state: c.state } },
            el("td", {}, clusterLink(c.cluster)),
            el("td", {}, `v${c.version}`, c.pinned ? el("span", { class: "muted small" }, " pinned") : null),
            el("td", {}, badge(SYNC_STATES[c.state] || c.state, c.state.replace(/_/g, " "))),
            el("td", {}, c.entry ? `${c.entry}: ${c.reason}` : c.reason || ""),
          ),
        ),
      ),
    ),
  );
}

// --- routing -----------------------------------------------------------------------------------

let routing = 0;

async function route(showLoading = true) {
  const ticket = ++routing;
  const hash = location.hash || "#/";
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] === "events" ? "events" : parts[0]?.startsWith("blueprint") ? "blueprints" : "fleet";
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === section));
  const view = document.getElementById("view");
  const next = el("div", { class: "page" });
  const fleetShown = section === "fleet" && !parts.length && view.querySelector(".page[data-fleet]");
  if (showLoading && !fleetShown) clear(view).append(el("p", { class: "muted" }, "Loading…"));
  try {
    if (parts[0] === "taskset" && parts[1]) {
      const name = encodeURIComponent(parts[1]);
      const [detail, series] = await Promise.all([api(`/api/v1/tasksets/${name}`), api(`/api/v1/charts/convergence/${name}`).catch(() => null)]);
      renderTaskset(next, detail, series);
    }
    else if (parts[0] === "cluster" && parts[1]) {
      const name = encodeURIComponent(parts[1]);
      const [detail, drift] = await Promise.all([api(`/api/v1/clusters/${name}`), api(`/api/v1/charts/drift/${name}`).catch(() => null)]);
      renderCluster(next, detail, drift);
    }
    else if (parts[0] === "events") await renderEvents(next);
    else if (parts[0] === "blueprints") renderBlueprints(next, await api("/api/v1/blueprints"));
    else if (parts[0] === "blueprint" && parts[1]) {
      const name = encodeURIComponent(parts[1]);
      const [blueprint, clusters] = await Promise.all([api(`/api/v1/blueprints/${name}`), api(`/api/v1/blueprints/${name}/status`)]);
      renderBlueprint(next, blueprint, clusters);
    }
    else {
      const filters = fleetFilters(new URLSearchParams(hash.slice(1).split("?")[1] || ""));
      const shown = view.querySelector(".page[data-fleet]");
      const chartDue = !shown || Date.now() - state.rateAt > RATE_EVERY_MS;
      let page, rate;
      try {
        [page, rate] = await Promise.all([
          api(fleetPath(filters)),
          chartDue ? api("/api/v1/charts/event-rate?minutes=30&bucket_seconds=30").catch(() => null) : null,
        ]);
      } catch (e) {
        // A filter the hub refuses (a bad label selector) is said below the filter bar, which
        // stays to be corrected.
        if (e instanceof Unauthorized || !shown || ticket !== routing) throw e;
        shown.dataset.fleet = fleetHash(filters);
        shown.querySelector("#fleet-body")?.replaceWith(el("div", { id: "fleet-body" }, el("p", { class: "error", id: "fleet-error" }, e.message)));
        document.body.dataset.ready = "true";
        return;
      }
      if (chartDue) state.rateAt = Date.now();
      else if (!state.rateTimer) {
        // The chart skipped now is drawn once it is due, even if no event comes to ask.
        state.rateTimer = setTimeout(() => {
          state.rateTimer = null;
          scheduleRefresh();
        }, state.rateAt + RATE_EVERY_MS - Date.now() + 50);
      }
      if (ticket !== routing) return;
      if (shown && !parts.length) {
        updateFleet(shown, page, rate, filters);
        document.body.dataset.ready = "true";
        return;
      }
      renderFleet(next, page, rate, filters);
    }
  } catch (e) {
    if (e instanceof Unauthorized) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      await start();
      return;
    }
    next.append(el("p", { class: "error" }, e.message));
  }
  if (ticket !== routing) return; // a newer navigation won
  clear(view).append(next);
  // The first full render of the fleet page, for measuring time to a meaningful paint.
  if (next.dataset.fleet && !performance.getEntriesByName("fleet-rendered").length) performance.mark("fleet-rendered");
  document.body.dataset.ready = "true";
}

async function start() {
  await signIn();
  await Promise.all([route(), loadRecentFeed().catch(() => {}), connectLive()]);
}

document.getElementById("logout").addEventListener("click", signOut);
window.addEventListener("hashchange", () => route());
setInterval(() => document.querySelectorAll("time[datetime]").forEach((t) => (t.textContent = ago(t.getAttribute("datetime")))), 10000);
start();
