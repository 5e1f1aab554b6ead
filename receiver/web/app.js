// The live page of `edge-receiver serve`: the fleet table, one vehicle's charts (uPlot) and the alerts,
// from the JSON API, then kept current by the /api/live WebSocket (reconnected with backoff).
// Plain JS, no build step. Text from the fleet (vins, signal names) only ever goes in through
// textContent or attribute setters, never innerHTML. Times are seconds on the vehicle's clock.
"use strict";

const LIVE_SPAN_S = 600; // the default window: the last 10 minutes up to the last stored tick
const DAY_S = 86400;
const POINTS = 600;
const DEFAULT_SIGNALS = [/VehicleSpeed/i, /MotorTemp/i, /StateOfCharge|\bSoC\b|\.SoC/i];
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

const page = {
  vehicles: new Map(), // vin -> the vehicle's entry, as /api/vehicles answers
  alerts: new Map(), // id -> alert
  vin: null, // the vehicle shown
  span: LIVE_SPAN_S,
  charts: new Map(), // signal -> {plot, data, width}
  socket: null,
  connected: false,
  loads: 0, // bumped per history load: an older answer arriving late is dropped
  updates: 0, // live messages applied (for the tests)
};
window.edgePage = page;

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function getJSON(path) {
  const answer = await fetch(path, { headers: { Accept: "application/json" } });
  if (!answer.ok) {
    let detail = answer.statusText;
    try {
      detail = (await answer.json()).detail || detail;
    } catch (_) {
      /* not JSON: keep the status text */
    }
    throw new Error(`${path}: ${answer.status} ${detail}`);
  }
  return answer.json();
}

// ---- formatting ----

function number(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const size = Math.abs(value);
  if (size >= 1000 || Number.isInteger(value)) return value.toFixed(0);
  return value.toFixed(size >= 100 ? 1 : digits);
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function ago(unix) {
  if (unix === null || unix === undefined) return "never";
  const seconds = Math.max(0, Date.now() / 1000 - unix);
  return seconds < 1 ? "just now" : `${duration(seconds)} ago`;
}

function clock(t) {
  if (t === null || t === undefined) return "–";
  return new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function status(vehicle) {
  if (vehicle.online === true) return ["online", "online"];
  if (vehicle.online === false) return ["offline", "offline"];
  return ["unknown", "unknown"];
}

// ---- the fleet table ----

function renderFleet() {
  const body = $("fleet").tBodies[0];
  const vins = [...page.vehicles.keys()].sort();
  $("fleet-empty").hidden = vins.length > 0;
  const rows = new Map([...body.rows].map((row) => [row.dataset.vin, row]));
  for (const [vin, row] of rows) if (!page.vehicles.has(vin)) row.remove();
  for (const vin of vins) {
    let row = rows.get(vin);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.vin = vin;
      for (let i = 0; i < 8; i++) row.appendChild(document.createElement("td"));
      row.addEventListener("click", () => selectVehicle(vin));
    }
    body.appendChild(row); // keeps the rows sorted
    fillRow(row, page.vehicles.get(vin));
  }
}

function fillRow(row, v) {
  const [word, kind] = status(v);
  const cells = row.cells;
  cells[0].textContent = v.vin;
  cells[1].replaceChildren(el("span", word, `state ${kind}`));
  if (v.state) cells[1].append(` (${v.state.toLowerCase()})`);
  cells[2].textContent = ago(v.last_seen);
  cells[2].dataset.lastSeen = v.last_seen ?? "";
  cells[3].textContent = v.backlog_chunks ? `${v.backlog_chunks} chunks, ${v.backlog_samples} samples` : "none";
  cells[4].textContent = v.backlog_chunks ? duration(v.drain_eta_s) : "–";
  cells[5].textContent = duration(v.latency_p95_s);
  cells[6].textContent = clock(v.stored_until);
  cells[7].textContent = v.dropped_chunks ? String(v.dropped_chunks) : "0";
  row.classList.toggle("selected", v.vin === page.vin);
}

function tickLastSeen() {
  for (const cell of document.querySelectorAll("#fleet tbody td:nth-child(3)")) {
    const seen = cell.dataset.lastSeen;
    cell.textContent = ago(seen === "" ? null : Number(seen));
  }
}

// ---- one vehicle ----

async function selectVehicle(vin) {
  page.vin = vin;
  $("vehicle").hidden = false;
  $("vehicle-vin").textContent = vin;
  renderFleet();
  renderPresent();
  const select = $("signals");
  select.replaceChildren();
  let names = [];
  try {
    names = (await getJSON(`/api/vehicles/${encodeURIComponent(vin)}/signals`)).signals;
  } catch (error) {
    note(`signals of ${vin}: ${error.message}`);
  }
  if (page.vin !== vin) return;
  const chosen = defaultSignals(names);
  for (const name of names) {
    const option = el("option", name);
    option.value = name;
    option.selected = chosen.includes(name);
    select.appendChild(option);
  }
  await loadHistory();
}

function defaultSignals(names) {
  const picked = [];
  for (const pattern of DEFAULT_SIGNALS) {
    const name = names.find((n) => pattern.test(n) && !picked.includes(n));
    if (name) picked.push(name);
  }
  for (const name of names) if (picked.length < 1 && !picked.includes(name)) picked.push(name);
  return picked.slice(0, 3);
}

function chosenSignals() {
  return [...$("signals").selectedOptions].map((option) => option.value);
}

async function loadHistory() {
  const vin = page.vin;
  const vehicle = page.vehicles.get(vin);
  const names = chosenSignals();
  const load = ++page.loads;
  if (!vin || names.length === 0) {
    drawCharts([], null);
    return;
  }
  const until = vehicle && vehicle.stored_until !== null ? vehicle.stored_until : null;
  const query = new URLSearchParams({ signals: names.join(","), points: String(POINTS) });
  if (until !== null) {
    query.set("from", String(until - page.span));
    query.set("to", String(until));
  }
  try {
    const history = await getJSON(`/api/vehicles/${encodeURIComponent(vin)}/history?${query}`);
    if (load !== page.loads) return; // a newer load is on its way
    drawCharts(names, history);
    $("range").textContent = `${clock(history.from)} – ${clock(history.to)}, buckets of ${duration(history.width)}`;
  } catch (error) {
    if (load === page.loads) note(`history of ${vin}: ${error.message}`);
  }
}

// Buckets -> uPlot columns [x, min, mean, max]; a missing bucket becomes a null, so the line breaks there.
function columns(buckets, width) {
  const xs = [], lows = [], means = [], highs = [];
  let previous = null;
  for (const bucket of buckets) {
    if (previous !== null && bucket.start - previous > width * 1.5) {
      xs.push(previous + width);
      lows.push(null);
      means.push(null);
      highs.push(null);
    }
    xs.push(bucket.start);
    lows.push(bucket.min);
    means.push(bucket.mean);
    highs.push(bucket.max);
    previous = bucket.start;
  }
  return [xs, lows, means, highs];
}

function drawCharts(names, history) {
  for (const chart of page.charts.values()) chart.plot.destroy();
  page.charts.clear();
  const box = $("charts");
  box.replaceChildren();
  if (!history) return;
  const width = Math.max(300, box.clientWidth || 600);
  for (const name of names) {
    const holder = el("div", null, "chart");
    holder.dataset.signal = name;
    holder.appendChild(el("h3", name));
    box.appendChild(holder);
    const data = columns(history.signals[name] || [], history.width);
    const options = {
      width,
      height: 180,
      scales: { x: { time: true } },
      series: [
        {},
        { label: "min", stroke: "#9bb7e0", spanGaps: false, value: (_u, v) => number(v) },
        { label: "mean", stroke: "#1d5fc2", width: 2, spanGaps: false, value: (_u, v) => number(v) },
        { label: "max", stroke: "#9bb7e0", spanGaps: false, value: (_u, v) => number(v) },
      ],
      bands: [{ series: [3, 1], fill: "#1d5fc214" }],
      legend: { live: true },
    };
    const plot = new uPlot(options, data, holder);
    page.charts.set(name, { plot, data, width: history.width });
  }
}

// New stored values of the shown vehicle, appended as points (min = mean = max = the value).
function appendValues(message) {
  if (message.vin !== page.vin) return;
  for (const [name, points] of Object.entries(message.signals)) {
    const chart = page.charts.get(name);
    if (!chart || points.length === 0) continue;
    const [xs, lows, means, highs] = chart.data;
    for (const [t, value] of points) {
      const last = xs.length ? xs[xs.length - 1] : null;
      if (last !== null && t <= last) continue; // already drawn (history answered after this commit)
      if (last !== null && means[means.length - 1] !== null && t - last > Math.max(chart.width, 1) * 1.5) {
        xs.push(last + chart.width);
        lows.push(null);
        means.push(null);
        highs.push(null);
      }
      xs.push(t);
      lows.push(value);
      means.push(value);
      highs.push(value);
    }
    if (page.span === LIVE_SPAN_S) {
      const first = xs[xs.length - 1] - page.span;
      let drop = 0;
      while (drop < xs.length - 1 && xs[drop] < first) drop++;
      if (drop) for (const column of chart.data) column.splice(0, drop);
    }
    chart.plot.setData(chart.data);
  }
}

// The agent's own latest values ("now"), shown while its backlog is still on its way.
function renderPresent() {
  const vehicle = page.vehicles.get(page.vin);
  const aside = $("present");
  const latest = vehicle && vehicle.latest ? Object.entries(vehicle.latest) : [];
  const draining = vehicle && (vehicle.backlog_chunks > 0 || vehicle.state === "DRAINING");
  aside.hidden = !(draining && latest.length);
  const list = $("present-values");
  list.replaceChildren();
  for (const [name, point] of latest.sort()) {
    list.appendChild(el("dt", name));
    const value = el("dd", number(point.value));
    value.title = clock(point.at);
    list.appendChild(value);
  }
}

// ---- alerts ----

async function loadAlerts() {
  try {
    const answer = await getJSON("/api/alerts");
    for (const alert of answer.alerts) page.alerts.set(alert.id, alert);
    renderAlerts();
  } catch (error) {
    $("alerts-note").textContent = `Alerts unavailable: ${error.message}`;
  }
}

function renderAlerts() {
  const list = $("alerts");
  const alerts = [...page.alerts.values()].sort((a, b) => b.start - a.start).slice(0, 200);
  $("alerts-note").hidden = alerts.length > 0;
  list.replaceChildren();
  for (const a of alerts) {
    const item = el("li");
    item.appendChild(el("span", a.severity, `severity ${String(a.severity).toLowerCase()}`));
    const ongoing = a.end === null || a.end === undefined;
    const lossy = a.lossy ? ` (lossy signal: within ±${number(a.bound)})` : "";
    item.append(
      ` ${a.vin} ${a.rule}: ${a.signal} peak ${number(a.peak)} vs ${number(a.threshold)}${lossy}, ` +
        `${clock(a.start)} – ${ongoing ? "ongoing" : clock(a.end)}`,
    );
    list.appendChild(item);
  }
}

// ---- the live feed ----

function setConnection(kind, text) {
  const badge = $("connection");
  badge.className = `connection ${kind}`;
  badge.textContent = text;
}

function note(text) {
  $("range").textContent = text;
}

let backoff = BACKOFF_MIN_MS;

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/api/live`);
  page.socket = socket;
  socket.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    receive(message);
  });
  socket.addEventListener("close", () => {
    if (page.socket !== socket) return;
    page.connected = false;
    setConnection("disconnected", "disconnected - reconnecting");
    const wait = backoff * (0.75 + Math.random() * 0.5);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, wait);
  });
}

function receive(message) {
  if (message.type === "hello") {
    // (re)connected: the fleet as it is now; what was missed while away is reloaded
    const reconnect = page.connected === false && page.updates > 0;
    page.connected = true;
    backoff = BACKOFF_MIN_MS;
    setConnection("live", "live");
    page.vehicles = new Map(message.vehicles.map((v) => [v.vin, v]));
    renderFleet();
    renderPresent();
    if (reconnect && page.vin) loadHistory();
  } else if (message.type === "status") {
    page.vehicles.set(message.vehicle.vin, message.vehicle);
    renderFleet();
    if (message.vehicle.vin === page.vin) renderPresent();
  } else if (message.type === "values") {
    const vehicle = page.vehicles.get(message.vin);
    if (vehicle) {
      vehicle.stored_until = message.until;
      renderFleet();
    }
    appendValues(message);
  } else if (message.type === "alert") {
    page.alerts.set(message.alert.id, message.alert);
    renderAlerts();
  } else {
    return;
  }
  page.updates++;
}

// ---- start ----

async function start() {
  $("signals").addEventListener("change", loadHistory);
  for (const [id, span] of [["zoom-live", LIVE_SPAN_S], ["zoom-day", DAY_S]]) {
    $(id).addEventListener("click", () => {
      page.span = span;
      $("zoom-live").classList.toggle("active", span === LIVE_SPAN_S);
      $("zoom-day").classList.toggle("active", span === DAY_S);
      loadHistory();
    });
  }
  window.addEventListener("resize", () => {
    const width = Math.max(300, $("charts").clientWidth || 600);
    for (const chart of page.charts.values()) chart.plot.setSize({ width, height: 180 });
  });
  setInterval(tickLastSeen, 1000);
  connect();
  try {
    const answer = await getJSON("/api/vehicles");
    for (const v of answer.vehicles) if (!page.vehicles.has(v.vin)) page.vehicles.set(v.vin, v);
    renderFleet();
  } catch (error) {
    note(`vehicles: ${error.message}`);
  }
  loadAlerts();
  const wanted = new URLSearchParams(location.search).get("vin");
  const first = wanted && page.vehicles.has(wanted) ? wanted : [...page.vehicles.keys()].sort()[0];
  if (first) selectVehicle(first);
}

start();
