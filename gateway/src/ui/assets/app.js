// Courier's dashboard script: plain JavaScript, no build step, served from the binary.
//
// Every page is an HTML shell rendered by the gateway; this script fills it from the
// gateway's JSON API (/system/*, /ui/api/*) and sends the changes a person asks for to the
// same API. Values from functions (names, log lines, bodies, headers) only ever reach the
// page through textContent, never as markup.
"use strict";

// Script errors are kept where a test (or a curious person) can read them.
window.__courierErrors = [];
window.addEventListener("error", (e) => window.__courierErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) =>
  window.__courierErrors.push(String(e.reason)));

// ---- small helpers ----------------------------------------------------------------------

/** An element with attributes and children (strings become text nodes, never markup). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "onclick") node.addEventListener("click", value);
    else if (key === "className") node.className = value;
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

/** Replaces the rows of `table` (its tbody) and shows `empty` when there are none. */
function fillTable(table, rows, empty) {
  const body = $(table + " tbody");
  body.replaceChildren(...rows);
  if (empty) $(empty).hidden = rows.length > 0;
}

let errorTimer;
function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { box.hidden = true; }, 15000);
}

/**
 * A request to the gateway. URLs are built from location.origin so a page opened with
 * credentials in its address still makes valid requests (fetch refuses such URLs).
 * Answers { status, ok, text, headers }; a network failure is status 0.
 */
async function request(method, path, body, headers) {
  const init = { method, headers: Object.assign({}, headers || {}), credentials: "same-origin" };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    if (!init.headers["Content-Type"]) init.headers["Content-Type"] = "application/json";
  }
  // A write under a login session carries the session's CSRF token (the gateway refuses a
  // cookie-authenticated write without it).
  if (CSRF && method !== "GET" && method !== "HEAD") init.headers["X-Courier-Csrf"] = CSRF;
  try {
    const response = await fetch(location.origin + path, init);
    if (response.status === 401 && CSRF) toLogin();
    return { status: response.status, ok: response.ok, text: await response.text(),
             headers: response.headers };
  } catch (e) {
    return { status: 0, ok: false, text: String(e), headers: new Headers() };
  }
}

/** The session's CSRF token, when the person logged in with the form. */
const CSRF = (document.querySelector('meta[name="courier-csrf"]') || {}).content || "";

/** The session ended (expired, logged out elsewhere, gateway restarted): back to the form. */
function toLogin() {
  location.assign("/ui/login?next=" + encodeURIComponent(location.pathname + location.search));
}

/** GET `path` as JSON; on failure shows the gateway's message and returns `fallback`. */
async function getJson(path, fallback) {
  const answer = await request("GET", path);
  if (!answer.ok) {
    showError(`GET ${path}: ${answer.status} ${answer.text.trim()}`);
    return fallback;
  }
  try {
    return JSON.parse(answer.text);
  } catch (e) {
    showError(`GET ${path}: not JSON`);
    return fallback;
  }
}

/** A two-step button: the first click arms it, the second (within 5 s) runs `action`. */
function confirmButton(label, confirmLabel, action) {
  const button = el("button", { type: "button" }, label);
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      button.classList.add("danger");
      setTimeout(() => {
        armed = false;
        button.textContent = label;
        button.classList.remove("danger");
      }, 5000);
      return;
    }
    armed = false;
    await action();
  });
  return button;
}

/** Runs `task` now and every `ms` milliseconds, never two at once. */
function poll(ms, task) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try { await task(); } finally { running = false; }
  };
  tick();
  return setInterval(tick, ms);
}

/** Shows `value` in `selector`, or "n/a" with `reason` as its tooltip when it is null. */
function figure(selector, value, reason) {
  const node = $(selector);
  if (value === null || value === undefined) {
    node.textContent = "n/a";
    node.title = reason;
    node.classList.add("na");
  } else {
    node.textContent = String(value);
    node.removeAttribute("title");
    node.classList.remove("na");
  }
}

/** "340 ms", "4.2 s", "3 min 5 s", "2 h 10 min". */
function duration(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.floor(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/**
 * Draws `values` (numbers, oldest first) into `svg` as a line over a filled area, scaled to
 * its viewBox; the largest value is the top. Inline SVG, no library.
 */
function sparkline(svg, values) {
  const box = svg.viewBox.baseVal;
  const width = box.width || 300;
  const height = box.height || 40;
  svg.dataset.points = String(values.length);
  if (!values.length) { svg.replaceChildren(); return; }
  if (values.length === 1) values = [values[0], values[0]];
  const max = Math.max(...values, 1e-9);
  const step = width / (values.length - 1);
  const points = values.map((v, i) =>
    `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
  svg.replaceChildren(
    svgEl("polygon", { points: `0,${height} ${points.join(" ")} ${width},${height}`, class: "area" }),
    svgEl("polyline", { points: points.join(" "), class: "line" }),
    svgEl("title", {}, `max ${max.toFixed(2)}, now ${values[values.length - 1].toFixed(2)}`));
}

/** Per-second rates between successive samples [{at (ms), value}], oldest first. */
function rates(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = (samples[i].at - samples[i - 1].at) / 1000;
    out.push(seconds > 0 ? Math.max(0, samples[i].value - samples[i - 1].value) / seconds : 0);
  }
  return out;
}

function qs(params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") search.set(k, v);
  const text = search.toString();
  return text ? "?" + text : "";
}

function functionLink(name, namespace) {
  return el("a", { href: `/ui/function/${encodeURIComponent(name)}${qs({ namespace })}` }, name);
}

function stateCell(state) {
  return el("td", { className: "state-" + state }, state);
}

function sourceText(source) {
  if (!source) return "";
  if (typeof source === "string") return source;
  const rest = Object.entries(source).filter(([k]) => k !== "kind").map(([k, v]) => `${k} ${v}`);
  return rest.length ? `${source.kind} (${rest.join(", ")})` : source.kind;
}

async function allFunctions() {
  const namespaces = await getJson("/system/namespaces", ["openfaas-fn"]);
  const lists = await Promise.all(namespaces.map((ns) =>
    getJson("/system/functions" + qs({ namespace: ns }), [])));
  return lists.flat().sort((a, b) =>
    (a.namespace + "/" + a.name).localeCompare(b.namespace + "/" + b.name));
}

const modeOf = (f) => (f.envVars && f.envVars.mode) || "fork";

// ---- Functions ----------------------------------------------------------------------------

async function functionsPage() {
  const refresh = async () => {
    // Leave the table alone while a person types a replica count into it.
    if (document.activeElement && document.activeElement.closest("#functions tbody")) return;
    const [functions, stats] = await Promise.all([allFunctions(), getJson("/ui/api/stats", {})]);
    fillTable("#functions", functions.map((f) => functionRow(f, stats, refresh)),
      "#functions-empty");
  };
  $("#deploy-button").addEventListener("click", async () => {
    $("#deploy-button").disabled = true;
    try {
      await deployStack();
    } finally {
      $("#deploy-button").disabled = false;
    }
    refresh();
  });
  poll(5000, refresh);
}

/**
 * Reads the pasted stack file on the gateway (the format `courier up -f` reads), then deploys
 * each function through /system/functions as `courier deploy` does: update, else create.
 */
async function deployStack() {
  const result = $("#deploy-result");
  const textarea = $("#deploy-spec");
  result.hidden = false;
  result.className = "";
  result.textContent = "reading the stack file…";
  const answer = await request("POST", "/ui/api/stack", textarea.value, { "Content-Type": "text/yaml" });
  let parsed;
  try { parsed = JSON.parse(answer.text); } catch (e) { parsed = null; }
  if (!answer.ok) {
    result.className = "state-failed";
    const problem = parsed && parsed.error ? parsed : { error: `${answer.status} ${answer.text.trim()}` };
    result.textContent = (problem.line ? `line ${problem.line}: ` : "") + problem.error;
    if (problem.line) selectLine(textarea, problem.line);
    return;
  }
  const lines = [];
  let failed = false;
  const existing = new Map();
  for (const spec of parsed) {
    const query = qs({ namespace: spec.namespace });
    if (!existing.has(query)) {
      const list = await getJson("/system/functions" + query, []);
      existing.set(query, new Set(list.map((f) => f.name)));
    }
    // Update what exists, create the rest (`courier deploy` does the same).
    const method = existing.get(query).has(spec.service) ? "PUT" : "POST";
    const put = await request(method, "/system/functions" + query, spec);
    const where = `${spec.service}${spec.namespace ? "." + spec.namespace : ""}`;
    if (put.ok) lines.push(`deployed ${where}`);
    else { failed = true; lines.push(`could not deploy ${where}: ${put.status} ${put.text.trim()}`); }
  }
  result.className = failed ? "state-failed" : "state-succeeded";
  result.textContent = lines.join("\n");
}

/** Selects line `line` (1-based) of a textarea and scrolls to it. */
function selectLine(textarea, line) {
  const lines = textarea.value.split("\n");
  const index = Math.min(line, lines.length) - 1;
  const start = lines.slice(0, index).reduce((n, l) => n + l.length + 1, 0);
  textarea.focus();
  textarea.setSelectionRange(start, start + lines[index].length);
}

function functionRow(f, stats, refresh) {
  const figures = stats[`${f.name}.${f.namespace}`] || {};
  const invocations = figures.invocations ?? f.invocationCount ?? 0;
  const errorRate = invocations ? `${((100 * (figures.errors || 0)) / invocations).toFixed(1)} %` : "—";
  const p50 = figures.p50Seconds != null ? `≤ ${Math.round(figures.p50Seconds * 1000)} ms` : "—";
  const replicas = el("input", { type: "number", min: 0, value: f.replicas, className: "replicas",
                                 "aria-label": `replicas of ${f.name}` });
  const scale = el("button", { type: "button", className: "scale" }, "Scale");
  scale.addEventListener("click", async () => {
    const count = Number(replicas.value);
    if (!Number.isInteger(count) || count < 0) { showError("replicas: a whole number, 0 or more"); return; }
    const answer = await request("POST",
      `/system/scale-function/${encodeURIComponent(f.name)}${qs({ namespace: f.namespace })}`,
      { serviceName: f.name, namespace: f.namespace, replicas: count });
    if (!answer.ok) showError(`scale ${f.name}: ${answer.status} ${answer.text.trim()}`);
    replicas.blur();
    refresh();
  });
  const remove = confirmButton("Remove", `Confirm remove ${f.name}`, async () => {
    const answer = await request("DELETE", "/system/functions" + qs({ namespace: f.namespace }),
      { functionName: f.name });
    if (!answer.ok) showError(`remove ${f.name}: ${answer.status} ${answer.text.trim()}`);
    refresh();
  });
  remove.classList.add("remove");
  return el("tr", { "data-function": f.name },
    el("td", {}, functionLink(f.name, f.namespace)),
    el("td", {}, f.namespace),
    el("td", {}, modeOf(f)),
    el("td", { className: "num" }, `${f.availableReplicas}/${f.replicas}`),
    el("td", { className: "num" }, invocations),
    el("td", { className: "num" }, errorRate),
    el("td", { className: "num" }, p50),
    el("td", {}, f.createdAt || ""),
    el("td", { className: "actions" }, replicas, " ", scale),
    el("td", {}, remove));
}

// ---- Function -----------------------------------------------------------------------------

async function functionPage() {
  const name = document.body.dataset.function;
  const namespace = document.body.dataset.namespace;
  const query = qs({ namespace });
  const loadSpec = async () => {
    const [f, stats] = await Promise.all([
      getJson(`/system/function/${encodeURIComponent(name)}${query}`, null),
      getJson("/ui/api/stats", {}),
    ]);
    if (!f) return;
    const figures = stats[`${name}.${namespace}`] || {};
    const entries = [
      ["Replicas", `${f.availableReplicas} ready / ${f.replicas} desired`],
      ["Mode", modeOf(f)],
      ["Image", f.image],
      ["Invocations", figures.invocations ?? 0],
      ["Errors", figures.errors ?? 0],
      ["Deployed", f.createdAt || "—"],
    ];
    $("#summary").replaceChildren(...entries.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))),
      el("div", {}, el("a", { href: "/ui/calls" + qs({ function: `${name}.${namespace}` }) }, "Calls of this function")));
    $("#spec").textContent = JSON.stringify(f, null, 2);
  };
  poll(5000, loadSpec);

  // The request rate: differences of the gateway's invocation counter between polls.
  const samples = [];
  poll(2000, async () => {
    const stats = await getJson("/ui/api/stats", null);
    if (!stats) return;
    const figures = stats[`${name}.${namespace}`] || {};
    samples.push({ at: Date.now(), value: figures.invocations || 0 });
    if (samples.length > 61) samples.shift();
    const perSecond = rates(samples);
    sparkline($("#rate-chart"), perSecond);
    $("#rate-now").textContent = perSecond.length
      ? `${perSecond[perSecond.length - 1].toFixed(2)}/s` : "…";
  });

  $("#invoke-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await invoke(name, namespace);
  });

  let lastLogs = "";
  poll(2000, async () => {
    const answer = await request("GET", "/system/logs" + qs({ name, namespace, tail: 200 }));
    if (!answer.ok) return;
    const lines = answer.text.split("\n").filter((l) => l.trim()).map((line) => {
      try {
        const m = JSON.parse(line);
        return `${m.timestamp || ""} ${m.instance || ""} ${m.text || ""}`.trimEnd();
      } catch (e) {
        return line;
      }
    });
    const text = lines.join("\n");
    $("#logs-updated").textContent = "updated " + new Date().toLocaleTimeString();
    if (text === lastLogs) return;
    lastLogs = text;
    const box = $("#logs");
    box.textContent = text;
    box.scrollTop = box.scrollHeight;
  });
}

/** Parses "Name: value" lines; throws on a line without a colon. */
function parseHeaders(text) {
  const headers = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`header line ${JSON.stringify(line)} has no "Name: value" form`);
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return headers;
}

async function invoke(name, namespace) {
  const method = $("#invoke-method").value;
  const mode = $("#invoke-mode").value;
  let path = $("#invoke-path").value.trim() || "/";
  if (!path.startsWith("/")) path = "/" + path;
  let headers;
  try {
    headers = parseHeaders($("#invoke-headers").value);
  } catch (e) {
    showError(e.message);
    return;
  }
  const route = mode === "async" ? "/async-function/" : "/function/";
  const init = { method, headers, credentials: "omit" };
  if (method !== "GET" && method !== "HEAD") init.body = $("#invoke-body").value;
  $("#invoke-button").disabled = true;
  const started = performance.now();
  let status, statusText, responseHeaders, body;
  try {
    // Credentials are omitted: a function never sees (or can ask for) the admin's login.
    const response = await fetch(`${location.origin}${route}${encodeURIComponent(name)}.${encodeURIComponent(namespace)}${path}`, init);
    status = response.status;
    statusText = response.statusText;
    responseHeaders = [...response.headers.entries()];
    body = await response.text();
  } catch (e) {
    status = 0;
    statusText = String(e);
    responseHeaders = [];
    body = "";
  } finally {
    $("#invoke-button").disabled = false;
  }
  const elapsed = performance.now() - started;
  $("#invoke-result").hidden = false;
  $("#invoke-status").textContent = `${status} ${statusText}`.trim();
  $("#invoke-status").className = status >= 200 && status < 400 ? "state-succeeded" : "state-failed";
  $("#invoke-duration").textContent = `in ${elapsed.toFixed(0)} ms`;
  $("#invoke-response").textContent = body;
  fillTable("#invoke-response-headers",
    responseHeaders.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
  const callLink = $("#invoke-call");
  const callId = responseHeaders.find(([k]) => k === "x-call-id");
  if (mode === "async" && callId) {
    callLink.hidden = false;
    callLink.href = "/ui/calls" + qs({ call: callId[1] });
    callLink.textContent = `call ${callId[1]}`;
  } else {
    callLink.hidden = true;
  }
}

// ---- Calls --------------------------------------------------------------------------------

async function callsPage() {
  const params = new URLSearchParams(location.search);
  $("#filter-function").value = params.get("function") || "";
  $("#filter-state").value = params.get("state") || "";
  let selected = params.get("call") || "";

  const list = async () => {
    const query = qs({ function: $("#filter-function").value.trim(),
                       state: $("#filter-state").value, limit: 100 });
    const calls = await getJson("/system/calls" + query, null);
    if (!calls) return;
    fillTable("#calls", calls.map((c) => {
      const link = el("a", { href: "/ui/calls" + qs({ call: c.id }), className: "call-link" }, c.id);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        selected = c.id;
        history.replaceState(null, "", "/ui/calls" + qs({ call: c.id }));
        showCall(c.id);
        list();
      });
      return el("tr", { "data-call": c.id, className: c.id === selected ? "selected" : "" },
        el("td", {}, el("code", {}, link)),
        el("td", {}, functionLink(c.function, c.namespace)),
        stateCell(c.state),
        el("td", {}, sourceText(c.source)),
        el("td", { className: "num" }, (c.attempts || []).length),
        el("td", {}, c.createdAt || ""),
        el("td", {}, c.updatedAt || ""));
    }), "#calls-empty");
    if (selected) showCall(selected);
  };
  $("#calls-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    list();
  });
  $("#call-cancel").addEventListener("click", async () => {
    if (!selected) return;
    const answer = await request("DELETE", `/system/calls/${encodeURIComponent(selected)}`);
    $("#call-cancel-result").textContent = answer.ok ? "cancelled" : `${answer.status} ${answer.text.trim()}`;
    list();
  });
  poll(2000, list);
}

let shownResultFor = "";
async function showCall(id) {
  const record = await getJson(`/system/calls/${encodeURIComponent(id)}`, null);
  if (!record) return;
  $("#call-detail").hidden = false;
  $("#call-id").textContent = record.id;
  const summary = [
    ["Function", `${record.function}.${record.namespace}`],
    ["State", record.state],
    ["Source", sourceText(record.source)],
    ["Created", record.createdAt],
    ["Updated", record.updatedAt],
    ["Trace", record.traceId],
  ];
  if (record.callback) {
    const cb = record.callback;
    summary.push(["Callback", `${cb.url} → ${cb.status ?? "no answer"} after ${cb.attempts} attempt(s)`]);
  }
  $("#call-summary").replaceChildren(...summary.map(([k, v]) =>
    el("div", {}, el("dt", {}, k), el("dd", { className: k === "State" ? "state-" + v : "" }, v ?? ""))));
  $("#call-attempts").replaceChildren(...(record.attempts || []).map((a) => {
    const parts = [`started ${a.startedAt}`];
    if (a.status != null) parts.push(`status ${a.status}`);
    if (a.durationSeconds != null) parts.push(`${(a.durationSeconds * 1000).toFixed(0)} ms`);
    if (a.error) parts.push(`error: ${a.error}`);
    if (a.nextDelaySeconds != null) parts.push(`retry in ${a.nextDelaySeconds} s`);
    return el("li", {}, parts.join(" · "));
  }));
  if (!(record.attempts || []).length) $("#call-attempts").replaceChildren(el("li", { className: "muted" }, "not started"));
  drawTimeline($("#call-timeline"), record);
  $("#call-cancel").hidden = record.state !== "queued";
  if (record.result && shownResultFor !== record.id + record.updatedAt) {
    shownResultFor = record.id + record.updatedAt;
    const answer = await request("GET", `/system/calls/${encodeURIComponent(id)}/result`);
    $("#call-result").textContent = answer.status === 0 ? answer.text
      : `${record.result.status} (${record.result.bytes} bytes${record.result.truncated ? ", truncated" : ""})\n\n${answer.text}`;
  } else if (!record.result) {
    $("#call-result").textContent = "not kept (deploy with the label com.courier.ledger.result=true, or send X-Courier-Keep-Result: true)";
  }
}

/**
 * A call's attempts as bars on one time axis, from its acceptance to the end of its last
 * attempt (or now, while one runs): a bar's start and length are the attempt's start and
 * duration; the gaps between bars are the queue's wait and the retry delays.
 */
function drawTimeline(svg, record) {
  const attempts = record.attempts || [];
  const row = 22, top = 16, width = 640, left = 40, right = 150;
  const height = top + Math.max(1, attempts.length) * row + 4;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.dataset.bars = String(attempts.length);
  const t0 = Date.parse(record.createdAt);
  const spans = attempts.map((a) => {
    const start = Date.parse(a.startedAt);
    const end = a.durationSeconds != null ? start + a.durationSeconds * 1000 : Date.now();
    return { a, start, end };
  });
  const tEnd = Math.max(t0 + 1, ...spans.map((s) => s.end));
  const x = (t) => left + ((t - t0) / (tEnd - t0)) * (width - left - right);
  const children = [
    svgEl("line", { x1: left, x2: width - right, y1: top - 4, y2: top - 4, class: "axis" }),
    svgEl("text", { x: left, y: top - 7, class: "tick" }, "accepted"),
    svgEl("text", { x: width - right, y: top - 7, class: "tick end" }, `+${duration((tEnd - t0) / 1000)}`),
  ];
  if (!attempts.length) {
    children.push(svgEl("text", { x: left, y: top + 14, class: "label" }, "not started"));
  }
  spans.forEach(({ a, start, end }, i) => {
    const y = top + i * row;
    const running = a.durationSeconds == null;
    const ok = a.status != null && a.status < 400;
    const kind = running ? "running" : ok ? "ok" : "bad";
    const x1 = x(start);
    const w = Math.max(2, x(end) - x1);
    const label = [running ? "running" : a.status != null ? `${a.status}` : "no answer",
      running ? "" : `${((end - start)).toFixed(0)} ms`].filter(Boolean).join(" · ");
    children.push(
      svgEl("text", { x: 4, y: y + 13, class: "label" }, `#${i + 1}`),
      svgEl("rect", { x: x1, y: y + 2, width: w, height: row - 8, rx: 2, class: "bar " + kind },
        svgEl("title", {}, `attempt ${i + 1}: started ${a.startedAt}, ${label}${a.error ? ", " + a.error : ""}`)),
      svgEl("text", { x: Math.min(x1 + w + 6, width - right + 6), y: y + 13, class: "label" }, label));
  });
  svg.replaceChildren(...children);
}

// ---- Dead letters -------------------------------------------------------------------------

async function deadLettersPage() {
  const list = async () => {
    const letters = await getJson("/system/dead-letters", null);
    if (!letters) return;
    fillTable("#dead-letters", letters.map((d) => {
      const show = el("button", { type: "button" }, "Show");
      show.addEventListener("click", async () => {
        const full = await getJson(`/system/dead-letters/${encodeURIComponent(d.callId)}`, null);
        if (!full) return;
        $("#dead-letter-detail").hidden = false;
        $("#dead-letter-id").textContent = d.callId;
        $("#dead-letter-request").textContent = JSON.stringify(full, null, 2);
      });
      const replay = el("button", { type: "button", className: "replay" }, "Replay");
      replay.addEventListener("click", async () => {
        const answer = await request("POST", `/system/dead-letters/${encodeURIComponent(d.callId)}/replay`);
        if (!answer.ok) { showError(`replay: ${answer.status} ${answer.text.trim()}`); return; }
        let replayId = "";
        try { replayId = JSON.parse(answer.text).replayId; } catch (e) { /* shown as text below */ }
        $("#purge-result").replaceChildren("Replayed as ",
          el("a", { href: "/ui/calls" + qs({ call: replayId }), id: "replayed-call" }, replayId || answer.text));
        list();
      });
      const remove = confirmButton("Remove", "Confirm remove", async () => {
        const answer = await request("DELETE", `/system/dead-letters/${encodeURIComponent(d.callId)}`);
        if (!answer.ok) showError(`remove: ${answer.status} ${answer.text.trim()}`);
        list();
      });
      return el("tr", { "data-call": d.callId },
        el("td", {}, el("code", {}, d.callId)),
        el("td", {}, functionLink(d.function, d.namespace)),
        el("td", { className: "num" }, d.attempts),
        el("td", { className: "num" }, d.lastStatus ?? "—"),
        el("td", {}, d.error),
        el("td", {}, d.failedAt),
        el("td", { className: "actions" }, show, " ", replay, " ", remove));
    }), "#dead-letters-empty");
  };
  $("#purge").addEventListener("click", () => { $("#purge-confirm").hidden = false; });
  $("#purge-confirm").addEventListener("click", async () => {
    $("#purge-confirm").hidden = true;
    const answer = await request("DELETE", "/system/dead-letters");
    $("#purge-result").textContent = answer.ok ? `purged: ${answer.text.trim()}` : `${answer.status} ${answer.text.trim()}`;
    list();
  });
  poll(3000, list);
}

// ---- Queue --------------------------------------------------------------------------------

async function queuePage() {
  const samples = [];
  poll(1000, async () => {
    const q = await getJson("/ui/api/queue", null);
    if (!q) return;
    samples.push(q);
    if (samples.length > 120) samples.shift();
    const noWorker = "no queue worker runs in this process (courier gateway, or courier queue-worker " +
      "on its own): its figures are on that process's /metrics";
    const ledgerOff = "the invocation ledger is off (--ledger-retention 0)";
    $("#queue-pending").textContent = q.pending;
    $("#queue-dead-letters").textContent = q.deadLetters;
    figure("#queue-running", q.running, ledgerOff);
    figure("#queue-retrying", q.retrying, ledgerOff);
    figure("#queue-in-flight", q.inFlight, noWorker);
    figure("#queue-processed", q.processedTotal, noWorker);
    if (q.oldestAgeSeconds != null) {
      figure("#queue-oldest", (q.oldestIsLowerBound ? "≥ " : "") + duration(q.oldestAgeSeconds));
    } else {
      figure("#queue-oldest", q.running == null ? null : "none", ledgerOff);
    }
    if (q.processedTotal == null) {
      figure("#queue-throughput", null, noWorker);
    } else {
      const recent = samples.filter((s) => s.atMs >= q.atMs - 10000 && s.processedTotal != null);
      const first = recent[0];
      const seconds = (q.atMs - first.atMs) / 1000;
      figure("#queue-throughput", seconds > 0
        ? `${((q.processedTotal - first.processedTotal) / seconds).toFixed(1)}/s` : "…");
    }
    sparkline($("#queue-depth-chart"), samples.map((s) => s.pending));
    $("#queue-updated").textContent = "Last: " + new Date().toLocaleTimeString();
  });
}

// ---- Schedules ----------------------------------------------------------------------------

async function schedulesPage() {
  poll(5000, async () => {
    const schedules = await getJson("/system/schedules", null);
    if (!schedules) return;
    const lasts = await Promise.all(schedules.map((s) => lastFire(s)));
    fillTable("#schedules", schedules.map((s, i) => el("tr", { "data-function": s.function },
      el("td", {}, functionLink(s.function, s.namespace)),
      el("td", {}, s.namespace),
      el("td", {}, el("code", {}, s.schedule)),
      el("td", {}, s.timezone || "—"),
      el("td", { className: "last" }, lasts[i]),
      el("td", { className: "next" }, s.error ? el("span", { className: "state-failed" }, s.error)
        : el("ol", {}, ...(s.next || []).map((t) => el("li", {}, t)))))),
      "#schedules-empty");
  });
}

/** The newest cron call of a scheduled function in the ledger, as a cell's content. */
async function lastFire(s) {
  const answer = await request("GET", "/system/calls" +
    qs({ function: `${s.function}.${s.namespace}`, limit: 50 }));
  if (!answer.ok) {
    return el("span", { className: "na", title: `the ledger cannot tell: ${answer.status} ${answer.text.trim()}` }, "n/a");
  }
  let calls = [];
  try { calls = JSON.parse(answer.text); } catch (e) { /* none */ }
  const call = calls.find((c) => c.source && c.source.kind === "cron");
  if (!call) return el("span", { className: "muted" }, "not yet");
  const attempts = call.attempts || [];
  const last = attempts[attempts.length - 1];
  return el("span", {},
    el("a", { href: "/ui/calls" + qs({ call: call.id }) }, call.source.scheduledAt || call.createdAt),
    " ", el("span", { className: "state-" + call.state }, call.state),
    last && last.status != null ? el("span", { className: "muted" }, ` (${last.status})`) : null);
}

// ---- Connectors ---------------------------------------------------------------------------

async function connectorsPage() {
  poll(5000, async () => {
    const [functions, figures] = await Promise.all([allFunctions(), getJson("/ui/api/connectors", null)]);
    const topics = new Map();
    for (const f of functions) {
      const annotation = (f.annotations || {}).topic;
      if (!annotation) continue;
      for (const topic of annotation.split(",").map((t) => t.trim()).filter(Boolean)) {
        if (!topics.has(topic)) topics.set(topic, []);
        topics.get(topic).push(f);
      }
    }
    const fig = figures || { received: {}, lag: {}, depth: {}, invocations: {}, fires: {}, skips: {} };
    const na = (reason) => el("span", { className: "na", title: reason }, "n/a");
    const noConnector = "no connector runs in this process; its figures are on its own /metrics";
    const rows = [...topics.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([topic, fs]) => {
      const cron = topic === "cron-function";
      let lag;
      if (cron) lag = el("span", { className: "muted", title: "cron fires go to the queue: see the Queue page" }, "—");
      else if (fig.lag[topic] != null) lag = `lag ${fig.lag[topic]}`;
      else if (fig.depth[topic] != null) lag = `depth ${fig.depth[topic]}`;
      else lag = na(fig.connectorsRunning ? "the connector has reported no lag or depth for this topic yet"
        : noConnector);
      let received;
      if (cron) received = el("span", { className: "muted", title: "the scheduler makes its own messages" }, "—");
      else if (fig.connectorsRunning) received = fig.received[topic] ?? 0;
      else received = na(noConnector);
      const settled = fs.map((f) => {
        const key = `${f.name}.${f.namespace}`;
        if (cron) {
          if (!fig.schedulerRunning) return el("div", {}, `${f.name}: `, na("no scheduler runs in this process"));
          const skipped = Object.values(fig.skips[key] || {}).reduce((a, b) => a + b, 0);
          return el("div", {}, `${f.name}: ${fig.fires[key] || 0} fired` + (skipped ? `, ${skipped} skipped` : ""));
        }
        if (!fig.connectorsRunning) return el("div", {}, `${f.name}: `, na(noConnector));
        const o = fig.invocations[key] || {};
        const done = (o.success || 0) + (o.queued || 0) + (o.dead_letter || 0);
        return el("div", { title: "counted over every topic this function subscribes to" },
          `${f.name}: ${done} (${o.success || 0} answered, ${o.queued || 0} queued, ` +
          `${o.dead_letter || 0} dead-lettered, ${o.failed || 0} failed attempts)`);
      });
      return el("tr", { "data-topic": topic }, el("td", {}, el("code", {}, topic)),
        el("td", {}, ...fs.flatMap((f, i) => [i ? ", " : "", functionLink(f.name, f.namespace)])),
        el("td", { className: "num lag" }, lag),
        el("td", { className: "num received" }, received),
        el("td", { className: "settled" }, ...settled));
    });
    fillTable("#connectors", rows, "#connectors-empty");
  });
}

// ---- start --------------------------------------------------------------------------------

const PAGES = {
  functions: functionsPage,
  function: functionPage,
  calls: callsPage,
  "dead-letters": deadLettersPage,
  queue: queuePage,
  schedules: schedulesPage,
  connectors: connectorsPage,
};

document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  if (page) page();
});
