// The CallState dashboard (docs/dashboard.md): one server-sent event stream brings the figures each second; changes go
// through the admin API with the session cookie and the X-CallState-Dashboard header. Every value is written with
// textContent, never parsed as HTML.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let watched = params.get("key") || "";
let source = null;
let canWrite = false;
// Calls whose "End call" was clicked once: the table is redrawn each second, the second click must still find it armed.
const armed = new Set();

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

// A time of today as a time, any other as date and time (a confirmed call's lease may end another day).
function when(text) {
  const date = new Date(text);
  return date.toDateString() === new Date().toDateString() ? date.toLocaleTimeString() : date.toLocaleString();
}

function number(value, digits = 0) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function bar(row, ratio) {
  const td = row.insertCell();
  const outer = document.createElement("div");
  outer.className = "bar";
  if (ratio === null || ratio === undefined) {
    outer.textContent = "unlimited";
    outer.classList.add("muted");
  } else {
    outer.dataset.level = ratio >= 1 ? "full" : ratio >= 0.9 ? "warn" : "ok";
    const fill = document.createElement("span");
    fill.style.width = `${Math.min(100, ratio * 100)}%`;
    const label = document.createElement("em");
    label.textContent = `${(ratio * 100).toFixed(0)}%`;
    outer.append(fill, label);
  }
  td.append(outer);
  return td;
}

function replaceRows(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

function rates(limits) {
  const parts = [];
  for (const [name, rate, burst] of [["total", limits.totalRate, limits.totalBurst], ["in", limits.inboundRate, limits.inboundBurst], ["out", limits.outboundRate, limits.outboundBurst]]) {
    if (rate !== undefined && rate !== null) parts.push(`${name} ${rate}/s` + (burst ? ` (${burst})` : ""));
  }
  return parts.join(", ") || "–";
}

// Shadow mode (docs/policies.md, "Shadow mode"): whether the limit is in it, and the calls it let through that it would
// have refused; null for a limit never in shadow mode that has no such count.
function shadow(entry) {
  const on = entry.limits && entry.limits.shadow === true;
  const count = entry.shadowRefused || 0;
  if (!on && count === 0) return null;
  return `${on ? "on" : "off"}, ${count} would-be refusal${count === 1 ? "" : "s"}`;
}

function renderKinds(kinds, active) {
  const here = new Map((active || []).map((a) => [a.kind, a]));
  replaceRows($("kinds"), kinds.map((k) => {
    const row = document.createElement("tr");
    row.dataset.kind = k.kind;
    cell(row, k.kind);
    cell(row, k.keys, "num");
    cell(row, k.total, "num calls");
    cell(row, `${k.inbound} / ${k.outbound}`, "num");
    cell(row, k.capacity + (k.unlimited ? ` (+${k.unlimited} unlimited)` : ""), "num");
    bar(row, k.utilisation);
    const a = here.get(k.kind);
    cell(row, a ? `${a.inUse} of ${a.capacity}` : "–", "num");
    return row;
  }));
}

function renderTop(top, count) {
  $("limit-count").textContent = `(${top.length} of ${count})`;
  let anyShadow = false;
  const rows = top.map((e) => {
    const row = document.createElement("tr");
    row.dataset.key = e.key;
    cell(row, e.key, "key");
    cell(row, e.total, "num calls");
    cell(row, `${e.inbound} / ${e.outbound}`, "num");
    cell(row, e.maximum === undefined || e.maximum === null ? "unlimited" : `${e.maximum} (${e.sources.total})`, "num maximum");
    bar(row, e.utilisation);
    cell(row, rates(e.limits));
    const s = shadow(e);
    anyShadow ||= s !== null;
    cell(row, s ?? "", "shadow-col");
    const actions = row.insertCell();
    const watch = document.createElement("button");
    watch.type = "button";
    watch.textContent = "Calls";
    watch.addEventListener("click", () => watch_(e.key));
    const edit = document.createElement("button");
    edit.type = "button";
    edit.textContent = "Change";
    edit.disabled = !canWrite;
    edit.addEventListener("click", () => {
      $("change-key").value = e.key;
      $("change-total").focus();
    });
    actions.append(watch, " ", edit);
    return row;
  });
  replaceRows($("top"), rows);
  for (const el of document.querySelectorAll("#top .shadow-col")) el.hidden = !anyShadow;
}

function renderAdmissions(table, list) {
  replaceRows(table, list.map((a) => {
    const row = document.createElement("tr");
    row.dataset.result = a.result;
    row.dataset.reason = a.reason;
    if (a.result !== "admitted" && a.result !== "unlimited" && a.result !== "duplicate") row.className = "refused";
    cell(row, a.result);
    cell(row, a.reason);
    cell(row, number(a.perSecond, 1), "num");
    cell(row, a.total, "num total");
    return row;
  }));
}

function renderLatency(f) {
  const rows = [["Admission (grains)", f.admissionLatency], ["Admission (edge)", f.edgeAdmissionLatency], ["Storage commit", f.commitLatency]]
    .map(([name, l]) => {
      const row = document.createElement("tr");
      cell(row, name);
      cell(row, l.count, "num");
      for (const v of [l.p50, l.p90, l.p99, l.max]) cell(row, number(v, 2), "num");
      return row;
    });
  replaceRows($("latency"), rows);
}

function renderCluster(cluster) {
  if (!cluster) return;
  replaceRows($("silos"), cluster.silos.map((s) => {
    const row = document.createElement("tr");
    cell(row, s.name);
    cell(row, s.address);
    cell(row, s.status, s.status === "Active" ? "" : "error");
    cell(row, s.activations ?? "–", "num");
    return row;
  }));
  $("edges").textContent = cluster.edges && cluster.edges.length ? cluster.edges.join(", ") : "none";
}

function renderWatched(w) {
  if (w.key !== watched) return;
  if (!w.entry) {
    $("watched-summary").textContent = `${w.key}: ${w.error ?? "not available"}`;
    replaceRows($("calls"), []);
    return;
  }
  const e = w.entry;
  $("watched-summary").textContent = `${e.key}: ${e.total} calls (${e.inbound} in, ${e.outbound} out), maximum ${e.maximum ?? "unlimited"}`;
  $("watched-summary").dataset.total = e.total;
  replaceRows($("calls"), (e.calls || []).map((c) => {
    const row = document.createElement("tr");
    row.dataset.call = c.callKey;
    cell(row, c.callKey, "key");
    cell(row, c.direction);
    cell(row, c.phase);
    cell(row, when(c.since));
    cell(row, when(c.leaseEnd));
    const td = row.insertCell();
    const end = document.createElement("button");
    end.type = "button";
    end.className = "danger";
    end.textContent = armed.has(c.callKey) ? "Confirm end" : "End call";
    end.disabled = !canWrite;
    end.addEventListener("click", () => endCall(c.callKey, end));
    td.append(end);
    return row;
  }));
}

function render(snapshot) {
  $("updated").textContent = `updated ${new Date(snapshot.at).toLocaleTimeString()}`;
  const errors = snapshot.errors || [];
  $("errors").hidden = errors.length === 0;
  $("errors").textContent = errors.join("; ");
  renderKinds(snapshot.kinds, snapshot.figures.active);
  renderTop(snapshot.top, snapshot.limits);
  renderAdmissions($("admissions"), snapshot.figures.admissions);
  const edge = snapshot.figures.edgeAdmissions || [];
  $("edge-admissions").hidden = $("edge-admissions-title").hidden = edge.length === 0;
  renderAdmissions($("edge-admissions"), edge);
  renderLatency(snapshot.figures);
  renderCluster(snapshot.cluster);
}

function connect() {
  if (source) source.close();
  const url = watched ? `/dashboard/stream?key=${encodeURIComponent(watched)}` : "/dashboard/stream";
  source = new EventSource(url);
  $("status").dataset.state = "connecting";
  $("status").textContent = "connecting";
  source.addEventListener("open", () => {
    $("status").dataset.state = "live";
    $("status").textContent = "live";
  });
  source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  source.addEventListener("key", (event) => renderWatched(JSON.parse(event.data)));
  source.addEventListener("error", async () => {
    $("status").dataset.state = "lost";
    $("status").textContent = "reconnecting";
    if (source.readyState === EventSource.CLOSED) {
      // The stream was refused (401 when the session ended): back to the login form, else try again.
      const answer = await fetch("/dashboard/session");
      if (answer.status === 401) location.assign("/dashboard/login");
      else setTimeout(connect, 3000);
    }
  });
}

function watch_(key) {
  watched = key.trim();
  $("watch-key").value = watched;
  $("watched-summary").textContent = watched ? `${watched}: waiting for the next update` : "";
  delete $("watched-summary").dataset.total;
  replaceRows($("calls"), []);
  const url = new URL(location.href);
  if (watched) url.searchParams.set("key", watched); else url.searchParams.delete("key");
  history.replaceState(null, "", url);
  connect();
}

async function api(method, path, body) {
  const answer = await fetch(path, {
    method,
    headers: { "Content-Type": "application/json", "X-CallState-Dashboard": "1" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!answer.ok) throw new Error(json?.detail || json?.title || `${answer.status} ${answer.statusText}`);
  return json;
}

function limitPath(key) {
  const slash = key.indexOf("/");
  if (slash <= 0) throw new Error("a key is kind/value, e.g. user/alice");
  return `/api/limits/${encodeURIComponent(key.slice(0, slash))}/${key.slice(slash + 1).split("/").map(encodeURIComponent).join("/")}`;
}

function said(text, ok) {
  const p = $("change-result");
  p.textContent = text;
  p.className = ok ? "muted" : "error";
}

async function change(event) {
  event.preventDefault();
  const key = $("change-key").value.trim();
  const body = {};
  for (const name of ["total", "inbound", "outbound"]) {
    const value = $(`change-${name}`).value.trim();
    if (value !== "") body[name] = Number(value);
  }
  const mode = $("change-shadow").value;
  if (mode !== "") body.shadow = mode === "on";
  if (Object.keys(body).length === 0) {
    said("nothing to change: fill total, inbound or outbound, or choose a shadow mode", false);
    return;
  }
  try {
    const entry = await api("PATCH", limitPath(key), body);
    said(`${entry.key}: maximum now ${entry.maximum ?? "unlimited"} (total ${entry.limits.total ?? "unlimited"}, in ${entry.limits.inbound ?? "unlimited"}, out ${entry.limits.outbound ?? "unlimited"}), shadow mode ${entry.limits.shadow === true ? "on" : "off"}`, true);
  } catch (error) {
    said(`${key}: ${error.message}`, false);
  }
}

async function revert() {
  const key = $("change-key").value.trim();
  try {
    const entry = await api("PATCH", limitPath(key), { revert: ["total", "inbound", "outbound", "shadow"] });
    said(`${entry.key}: back to configuration, maximum ${entry.maximum ?? "unlimited"}`, true);
  } catch (error) {
    said(`${key}: ${error.message}`, false);
  }
}

async function endCall(callKey, button) {
  // Two clicks: the first asks, the second ends the call.
  if (!armed.has(callKey)) {
    armed.add(callKey);
    button.textContent = "Confirm end";
    return;
  }
  armed.delete(callKey);
  button.disabled = true;
  const result = $("call-result");
  try {
    const answer = await api("POST", "/api/calls/end", { callKey });
    result.textContent = `${callKey}: ${answer.outcome}${answer.edge ? ` by ${answer.edge}` : ""} (${answer.detail})`;
    result.className = "muted";
  } catch (error) {
    result.textContent = `${callKey}: ${error.message}`;
    result.className = "error";
  }
}

async function start() {
  const answer = await fetch("/dashboard/session");
  if (answer.status === 401) {
    location.assign("/dashboard/login");
    return;
  }
  const session = await answer.json();
  canWrite = session.role === "write";
  $("who").textContent = `${session.name} (${session.role})`;
  for (const id of ["change-apply", "change-revert"]) $(id).disabled = !canWrite;
  if (!canWrite) said("this token may only read: changes need a write token", true);
  $("change-form").addEventListener("submit", change);
  $("change-revert").addEventListener("click", revert);
  $("watch-form").addEventListener("submit", (event) => {
    event.preventDefault();
    watch_($("watch-key").value);
  });
  $("logout").addEventListener("click", async () => {
    await fetch("/dashboard/logout", { method: "POST", headers: { "X-CallState-Dashboard": "1" } });
    location.assign("/dashboard/login");
  });
  $("watch-key").value = watched;
  connect();
}

start();
