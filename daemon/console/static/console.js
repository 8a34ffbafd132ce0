// The operator console: polls the daemon's read-only console views, follows execution updates
// live (server-sent events), and changes state only through the REST API with the bearer token
// the operator typed (kept in this tab's sessionStorage, never elsewhere). No framework, no
// build step: every value is put into the page as text (textContent), never as markup.
"use strict";

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "bis-console-token";
const LIVE_ROWS = 200;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

const fmt = (value, digits = 2) =>
  value === null || value === undefined || Number.isNaN(Number(value)) ? "–" : Number(value).toFixed(digits);
const badge = (text, cls = text) => el("span", { class: `badge ${cls}` }, text);
const say = (text) => { $("#message").textContent = text || ""; };

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// --- readiness -----------------------------------------------------------------------------

async function refreshReadiness() {
  try {
    const response = await fetch("/health/ready", { cache: "no-store" });
    const body = await response.json();
    const failing = Object.entries(body.checks || {}).filter(([, state]) => state !== "ok");
    const node = $("#readiness");
    node.className = `badge ${body.ready ? "ready" : "not-ready"}`;
    node.textContent = body.ready ? "ready" : "not ready";
    node.title = failing.map(([name, state]) => `${name}: ${state}`).join("\n") || "every check ok";
  } catch (error) {
    $("#readiness").className = "badge not-ready";
    $("#readiness").textContent = "unreachable";
  }
}

// --- brokers -------------------------------------------------------------------------------

async function setMaintenance(brokerId, enabled) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(`/brokers/${encodeURIComponent(brokerId)}/maintenance`, {
    method: "PUT",
    headers,
    body: JSON.stringify({ enabled, reason: "operator console" }),
  });
  if (response.status === 401) {
    say("Changing maintenance needs the bearer token: type it above.");
    return;
  }
  if (!response.ok) {
    say(`Maintenance not changed: HTTP ${response.status}`);
    return;
  }
  say("");
  await refreshBrokers();
}

function brokerRow(b) {
  const latency = b.latencyMs || {};
  const toggle = el(
    "button",
    {
      type: "button",
      class: "maintenance",
      "data-broker": b.brokerId,
      "aria-pressed": String(b.maintenance),
      onclick: () => setMaintenance(b.brokerId, !b.maintenance),
    },
    b.maintenance ? "end maintenance" : "start maintenance",
  );
  return el(
    "tr",
    { "data-broker": b.brokerId },
    el("td", {}, el("strong", {}, b.brokerId), " ", el("small", {}, b.name)),
    el("td", { class: "status" }, badge(b.status)),
    el("td", { class: "num" }, `${fmt(b.uptimePercent, 1)} %`),
    el("td", { class: "num" }, `${fmt(latency.p50)} / ${fmt(latency.p95)} / ${fmt(latency.p99)}`),
    el("td", {}, badge(b.breaker)),
    el("td", { class: "num" }, `${fmt(b.loadPercent, 1)} %`),
    el("td", { class: "num" }, `${fmt(b.rateLimitHeadroomPercent, 1)} %`),
    el("td", { class: "num" }, b.inFlight),
    el("td", {}, toggle),
  );
}

async function refreshBrokers() {
  const rows = await getJson("/console/api/brokers");
  $("#brokers tbody").replaceChildren(...rows.map(brokerRow));
}

// --- live updates --------------------------------------------------------------------------

function liveRow(update) {
  const fill = update.latestFill;
  const time = (update.timestamp || "").replace("T", " ").replace("Z", "").slice(11, 23);
  return el(
    "li",
    { class: "fresh", "data-order-id": update.orderId, "data-status": update.status },
    `${time} `,
    badge(update.status),
    ` ${update.orderId} @ ${update.brokerId} filled ${update.filledQuantity}`,
    fill ? ` (+${fill.quantity} at ${fill.price})` : "",
    update.reason ? ` — ${update.reason}` : "",
  );
}

let executionsDue = null;

function followUpdates() {
  const source = new EventSource("/console/api/events");
  source.addEventListener("open", () => {
    $("#stream").className = "badge on";
    $("#stream").textContent = "stream: live";
  });
  source.addEventListener("error", () => {
    $("#stream").className = "badge off";
    $("#stream").textContent = "stream: reconnecting";
  });
  source.addEventListener("update", (event) => {
    const update = JSON.parse(event.data);
    const list = $("#live");
    const row = liveRow(update);
    list.prepend(row);
    setTimeout(() => row.classList.remove("fresh"), 1500);
    while (list.children.length > LIVE_ROWS) list.lastElementChild.remove();
    if (executionsDue === null) {
      executionsDue = setTimeout(() => {
        executionsDue = null;
        refreshExecutions().catch(report);
        refreshCharts().catch(report);
      }, 500);
    }
  });
}

// --- executions ----------------------------------------------------------------------------

function executionRow(x) {
  const tca = x.tca || {};
  const fills = x.fills.map((f) => `${f.quantity} @ ${f.price}`).join(", ");
  return el(
    "tr",
    { "data-execution": x.executionId, "data-order-id": x.orderId },
    el("td", { title: x.executionId }, x.orderId),
    el("td", {}, x.brokerId),
    el("td", {}, badge(x.status)),
    el("td", { class: "num" }, x.filledQuantity),
    el("td", { class: "num" }, x.averagePrice ?? "–"),
    el("td", { title: fills }, x.fills.length),
    el("td", { class: "num" }, fmt(tca.slippageBps)),
    el("td", { class: "num" }, fmt(tca.totalCostBps)),
    el("td", { class: "num" }, fmt(tca.executionQualityScore, 1)),
    el("td", { class: "num" }, tca.brokerPerformanceRank ?? "–"),
  );
}

async function refreshExecutions() {
  const rows = await getJson("/console/api/executions");
  $("#executions tbody").replaceChildren(...rows.map(executionRow));
}

// --- charts (inline SVG) -------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// One horizontal bar per broker; negative values (a saving) grow left of the zero line.
function barChart(title, rows, key, unit, color) {
  const values = rows.map((r) => r[key]).filter((v) => v !== null && v !== undefined);
  const box = el("figure", { class: "chart", "data-chart": key }, el("h3", {}, title));
  if (!values.length) {
    box.append(el("p", { class: "empty" }, "no data yet"));
    return box;
  }
  const width = 320, bar = 18, gap = 6, label = 90, height = rows.length * (bar + gap) + gap;
  const low = Math.min(0, ...values), high = Math.max(0, ...values);
  const span = high - low || 1, plot = width - label - 60;
  const x = (v) => label + ((v - low) / span) * plot;
  const chart = svg("svg", { width, height, role: "img", "aria-label": title });
  chart.append(svg("line", { x1: x(0), x2: x(0), y1: 0, y2: height, stroke: "#999" }));
  rows.forEach((r, i) => {
    const y = gap + i * (bar + gap);
    chart.append(svg("text", { x: 0, y: y + bar - 5 }, r.brokerId));
    const v = r[key];
    if (v === null || v === undefined) {
      chart.append(svg("text", { x: x(0) + 4, y: y + bar - 5 }, "–"));
      return;
    }
    const x0 = Math.min(x(0), x(v)), w = Math.max(1, Math.abs(x(v) - x(0)));
    chart.append(svg("rect", { x: x0, y, width: w, height: bar, fill: color, "data-broker": r.brokerId, "data-value": v }));
    chart.append(svg("text", { x: Math.max(x(0), x(v)) + 4, y: y + bar - 5 }, `${fmt(v, 2)}${unit}`));
  });
  box.append(chart);
  return box;
}

async function refreshCharts() {
  const rows = await getJson("/console/api/quality");
  $("#charts").replaceChildren(
    barChart("Mean arrival cost (bps, execution reports)", rows, "meanCostBps", "", "#8c564b"),
    barChart("Executed notional (reports)", rows, "executedNotional", "", "#1f77b4"),
    barChart("Mean quality score (recent TCA)", rows, "meanQualityScore", "", "#2ca02c"),
    barChart("Mean slippage (bps, recent TCA)", rows, "meanSlippageBps", "", "#9467bd"),
    barChart("Fills since start", rows, "fills", "", "#17becf"),
    barChart("Rejects since start", rows, "rejects", "", "#d62728"),
  );
}

// --- start ---------------------------------------------------------------------------------

function report(error) { say(String(error.message || error)); }

function every(ms, refresh) {
  const run = () => refresh().catch(report);
  run();
  setInterval(run, ms);
}

$("#token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("#auth").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  say(token ? "Token set for this tab." : "Token cleared.");
});

followUpdates();
every(5000, refreshReadiness);
every(2000, refreshBrokers);
every(5000, refreshExecutions);
every(10000, refreshCharts);
