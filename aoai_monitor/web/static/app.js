// aoai-monitor UI: dashboards, Discover, document view and SQL page. No dependencies, no build step.
// Every value that comes from the store is untrusted (prompts, completions, field names): it is only ever
// written with textContent / createTextNode / SVG text nodes, never parsed as HTML.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b82f6", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16",
  "#f97316", "#6366f1", "#14b8a6", "#a855f7", "#eab308", "#0ea5e9", "#d946ef", "#22c55e", "#64748b", "#fb7185", "#2dd4bf", "#c084fc"];
const CONTROL_PARAMS = ["sub", "rg", "res", "dep"];
const SHARED_PARAMS = ["from", "to", "refresh", ...CONTROL_PARAMS];
const SECTIONS = {
  input_self_harm: "Prompt filtered results (input)",
  output_self_harm: "Completion filtered results (output)",
  cf_tokens_time: "Filtered requests by model",
};

let META = null;
let refreshTimer = null;
let renderSeq = 0;

// --- DOM helpers (text only) -------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
const $ = (id) => document.getElementById(id);

// --- URL state ---------------------------------------------------------------------------------------
function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?");
  return { path: path || "dash/overview", params: new URLSearchParams(query || "") };
}
function href(path, params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
  const s = p.toString();
  return "#/" + path + (s ? "?" + s : "");
}
function sharedParams(extra) {
  const { params } = route();
  const out = {};
  for (const k of SHARED_PARAMS) if (params.get(k)) out[k] = params.get(k);
  return Object.assign(out, extra || {});
}
function setParams(changes, path) {
  const r = route();
  const out = {};
  for (const [k, v] of r.params.entries()) out[k] = v;
  Object.assign(out, changes);
  location.hash = href(path || r.path, out);
}
function parseRel(v, now) {
  if (v === undefined || v === null || v === "" || v === "now") return now;
  const m = /^now-(\d+)([smhdw])$/.exec(v);
  if (m) return now - Number(m[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[m[2]];
  const n = Number(v);
  return Number.isFinite(n) ? n : now;
}
function timeRange() {
  const { params } = route();
  const now = Date.now();
  const end = parseRel(params.get("to") || "now", now);
  const start = parseRel(params.get("from") || "now-7d", now);
  return { start: Math.floor(start), end: Math.ceil(end) };
}
function apiQuery(extra) {
  const { params } = route();
  const { start, end } = timeRange();
  const q = new URLSearchParams({ start, end });
  for (const k of CONTROL_PARAMS) if (params.get(k)) q.set(k, params.get(k));
  for (const [k, v] of Object.entries(extra || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q;
}
async function api(path, opts) {
  const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  let body = null;
  try { body = await resp.json(); } catch (e) { body = { error: "bad response (" + resp.status + ")" }; }
  if (!resp.ok) { const err = new Error(body.error || resp.statusText); err.body = body; throw err; }
  return body;
}

// --- formatting ----------------------------------------------------------------------------------------
function fmtNumber(v, unit, exact) {
  if (v === null || v === undefined) return "–";
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  if (unit === "ms") return n >= 10000 ? (n / 1000).toFixed(1) + " s" : Math.round(n).toLocaleString() + " ms";
  if (unit === "percent") return n.toFixed(1) + "%";
  if (unit === "currency") return "$" + n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  if (exact) return Number.isInteger(n) ? n.toLocaleString() : n.toLocaleString(undefined, { maximumFractionDigits: 2 });
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(2) + "B";
  if (a >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? n.toLocaleString() : n.toFixed(2);
}
function fmtTime(ms, span) {
  const d = new Date(ms);
  if (span <= 2 * 864e5) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (span <= 14 * 864e5) return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}
function fmtFull(ms) { return new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC"); }
function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function niceStep(max, ticks) {
  const raw = max / ticks;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

// --- tooltip -----------------------------------------------------------------------------------------
function showTip(evt, lines) {
  const tip = $("tooltip");
  tip.replaceChildren(...lines.map((l) => {
    const row = el("div", { class: "tip-row" });
    if (l.color) row.append(el("span", { class: "swatch", "data-color": l.color }));
    row.append(el("span", { class: l.bold ? "tip-title" : "tip-label", text: l.label }));
    if (l.value !== undefined) row.append(el("span", { class: "tip-value", text: l.value }));
    return row;
  }));
  tip.querySelectorAll(".swatch").forEach((s) => { s.style.background = s.dataset.color; });
  tip.hidden = false;
  const x = Math.min(evt.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = Math.min(evt.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}
function hideTip() { $("tooltip").hidden = true; }

// --- charts ------------------------------------------------------------------------------------------
// Time chart: stacked bars or lines over [start, end]; hover shows a bucket's values; drag selects a range to zoom.
function timeChart(container, data, opts) {
  const names = Object.keys(data.series || {});
  const W = Math.max(container.clientWidth || 600, 280), H = opts.height || 220;
  const m = { l: 56, r: 12, t: 10, b: 26 };
  const iw = W - m.l - m.r, ih = H - m.t - m.b;
  const { start, end } = opts;
  const x = (t) => m.l + ((t - start) / (end - start)) * iw;
  const bars = opts.chart !== "line";
  let max = 0;
  data.t.forEach((_, i) => {
    if (bars) { let s = 0; names.forEach((n) => { s += Number(data.series[n][i] || 0); }); max = Math.max(max, s); }
    else names.forEach((n) => { max = Math.max(max, Number(data.series[n][i] || 0)); });
  });
  if (max <= 0) max = 1;
  const step = niceStep(max, 4);
  const top = Math.ceil(max / step) * step;
  const y = (v) => m.t + ih - (v / top) * ih;
  const root = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  for (let v = 0; v <= top + step / 2; v += step) {
    root.append(svg("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: m.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmtNumber(v, opts.unit === "ms" || opts.unit === "percent" ? "" : opts.unit)));
  }
  const span = end - start;
  const nx = Math.max(2, Math.floor(iw / 110));
  for (let k = 0; k <= nx; k++) {
    const t = start + (span * k) / nx;
    root.append(svg("text", { x: x(t), y: H - 6, class: "axis", "text-anchor": k === 0 ? "start" : k === nx ? "end" : "middle" }, fmtTime(t, span)));
  }
  const color = (n) => PALETTE[names.indexOf(n) % PALETTE.length];
  const bw = Math.max(1, (data.bucket / span) * iw - 1);
  const plot = svg("g", {});
  if (bars) {
    data.t.forEach((t, i) => {
      let acc = 0;
      names.forEach((n) => {
        const v = Number(data.series[n][i] || 0);
        if (v <= 0) return;
        plot.append(svg("rect", { x: x(t), y: y(acc + v), width: bw, height: Math.max(0.5, y(acc) - y(acc + v)), fill: color(n), "data-series": n }));
        acc += v;
      });
    });
  } else {
    names.forEach((n) => {
      let d = "", pen = false;
      data.t.forEach((t, i) => {
        const v = data.series[n][i];
        if (v === null || v === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + (x(t) + bw / 2).toFixed(1) + "," + y(Number(v)).toFixed(1);
        pen = true;
      });
      plot.append(svg("path", { d, fill: "none", stroke: color(n), "stroke-width": 2, "data-series": n }));
    });
  }
  root.append(plot);
  const cursor = svg("line", { y1: m.t, y2: m.t + ih, class: "cursor", visibility: "hidden" });
  const sel = svg("rect", { y: m.t, height: ih, class: "selection", visibility: "hidden" });
  const overlay = svg("rect", { x: m.l, y: m.t, width: iw, height: ih, class: "overlay" });
  root.append(cursor, sel, overlay);
  // Anomalies detected by the alerting component, as markers along the top edge (title = what and why),
  // above the drag overlay so hovering one shows its title.
  for (const a of opts.marks || []) {
    if (a.t < start || a.t > end) continue;
    const mx = x(a.t) + bw / 2;
    const mark = svg("polygon", { points: `${mx - 5},${m.t} ${mx + 5},${m.t} ${mx},${m.t + 8}`, class: "anomaly-mark" });
    mark.append(svg("title", {}, a.label));
    root.append(mark);
  }
  const toT = (px) => start + ((Math.min(Math.max(px, m.l), m.l + iw) - m.l) / iw) * span;
  const localX = (evt) => evt.clientX - root.getBoundingClientRect().left;
  let dragFrom = null;
  overlay.addEventListener("mousemove", (evt) => {
    const px = localX(evt);
    cursor.setAttribute("x1", px); cursor.setAttribute("x2", px); cursor.setAttribute("visibility", "visible");
    if (dragFrom !== null) {
      sel.setAttribute("x", Math.min(dragFrom, px)); sel.setAttribute("width", Math.abs(px - dragFrom)); sel.setAttribute("visibility", "visible");
    }
    const t = toT(px);
    let best = -1, dist = Infinity;
    data.t.forEach((bt, i) => { const d = Math.abs(bt + data.bucket / 2 - t); if (d < dist) { dist = d; best = i; } });
    if (best < 0 || dist > data.bucket) { showTip(evt, [{ label: fmtFull(t), bold: true }, { label: "no data" }]); return; }
    const lines = [{ label: fmtFull(data.t[best]), bold: true }];
    names.forEach((n) => { const v = data.series[n][best]; if (v !== null && v !== undefined) lines.push({ label: n, value: fmtNumber(v, opts.unit, true), color: color(n) }); });
    showTip(evt, lines);
  });
  overlay.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); hideTip(); });
  overlay.addEventListener("mousedown", (evt) => { evt.preventDefault(); dragFrom = localX(evt); });
  const finish = (evt) => {
    if (dragFrom === null) return;
    const px = localX(evt), a = dragFrom;
    dragFrom = null; sel.setAttribute("visibility", "hidden");
    if (Math.abs(px - a) < 5) return;
    const t0 = Math.floor(toT(Math.min(a, px))), t1 = Math.ceil(toT(Math.max(a, px)));
    if (opts.onZoom) opts.onZoom(t0, t1);
  };
  overlay.addEventListener("mouseup", finish);
  root.addEventListener("mouseleave", () => { dragFrom = null; sel.setAttribute("visibility", "hidden"); });
  container.replaceChildren(root);
  if (names.length > 1 || opts.legend) {
    const legend = el("div", { class: "legend" });
    names.forEach((n) => {
      const total = data.series[n].reduce((a, v) => a + Number(v || 0), 0);
      const item = el("span", { class: "legend-item", title: n }, el("span", { class: "swatch" }), el("span", { class: "legend-name", text: n }));
      if (bars) item.append(el("span", { class: "legend-value", text: fmtNumber(total, opts.unit) }));
      item.firstChild.style.background = color(n);
      item.addEventListener("mouseenter", () => root.classList.add("dim") || plot.querySelectorAll("[data-series]").forEach((s) => s.classList.toggle("hl", s.getAttribute("data-series") === n)));
      item.addEventListener("mouseleave", () => { root.classList.remove("dim"); plot.querySelectorAll(".hl").forEach((s) => s.classList.remove("hl")); });
      legend.append(item);
    });
    container.append(legend);
  }
  if (!data.t.length) container.append(el("div", { class: "empty", text: "No data in this range" }));
}

function donutChart(container, rows, unit) {
  const total = rows.reduce((a, r) => a + Number(r[1] || 0), 0);
  const S = 180, R = 80, r0 = 52, c = S / 2;
  const root = svg("svg", { width: S, height: S, viewBox: `0 0 ${S} ${S}`, class: "donut" });
  let a0 = -Math.PI / 2;
  rows.forEach((row, i) => {
    const frac = total ? Number(row[1]) / total : 0;
    if (frac <= 0) return;
    const a1 = a0 + frac * 2 * Math.PI - (frac === 1 ? 1e-4 : 0);
    const large = a1 - a0 > Math.PI ? 1 : 0;
    const p = (a, rad) => (c + rad * Math.cos(a)).toFixed(2) + "," + (c + rad * Math.sin(a)).toFixed(2);
    const path = svg("path", { d: `M${p(a0, R)}A${R},${R} 0 ${large} 1 ${p(a1, R)}L${p(a1, r0)}A${r0},${r0} 0 ${large} 0 ${p(a0, r0)}Z`, fill: PALETTE[i % PALETTE.length] });
    path.addEventListener("mousemove", (evt) => showTip(evt, [{ label: String(row[0]), bold: true }, { label: "value", value: fmtNumber(row[1], unit, true) }, { label: "share", value: (frac * 100).toFixed(1) + "%" }]));
    path.addEventListener("mouseleave", hideTip);
    root.append(path);
    a0 = a1;
  });
  root.append(svg("text", { x: c, y: c + 2, "text-anchor": "middle", class: "donut-total" }, fmtNumber(total, unit)));
  root.append(svg("text", { x: c, y: c + 18, "text-anchor": "middle", class: "axis" }, "total"));
  const legend = el("div", { class: "legend legend-col" });
  rows.forEach((row, i) => {
    const item = el("span", { class: "legend-item" }, el("span", { class: "swatch" }), el("span", { class: "legend-name", text: String(row[0]) }),
      el("span", { class: "legend-value", text: fmtNumber(row[1], unit) + " · " + (total ? ((row[1] / total) * 100).toFixed(0) : 0) + "%" }));
    item.firstChild.style.background = PALETTE[i % PALETTE.length];
    legend.append(item);
  });
  container.replaceChildren(el("div", { class: "donut-wrap" }, root, legend));
  if (!rows.length) container.append(el("div", { class: "empty", text: "No data in this range" }));
}

// --- controls ------------------------------------------------------------------------------------------
async function loadOptions() {
  try {
    const opts = await api("/api/options");
    for (const k of CONTROL_PARAMS) {
      const sel = $("ctl-" + k);
      const current = route().params.get(k) || "";
      sel.replaceChildren(el("option", { value: "", text: "All" }), ...(opts[k] || []).map((v) => el("option", { value: v, text: v })));
      if (current && ![...sel.options].some((o) => o.value === current)) sel.append(el("option", { value: current, text: current }));
      sel.value = current;
    }
  } catch (e) { /* controls stay at "All" */ }
}
function syncChrome() {
  const r = route();
  const from = r.params.get("from") || "now-7d", to = r.params.get("to") || "now";
  const rel = to === "now" && [...$("range").options].some((o) => o.value === from);
  $("range").value = rel ? from : "custom";
  const { start, end } = timeRange();
  $("range-label").textContent = rel ? "" : fmtFull(start) + " → " + fmtFull(end);
  $("refresh").value = r.params.get("refresh") || "";
  for (const k of CONTROL_PARAMS) { const s = $("ctl-" + k); if (s.value !== (r.params.get(k) || "")) s.value = r.params.get(k) || ""; }
  document.querySelectorAll("#nav a").forEach((a) => {
    a.href = href(a.dataset.view, sharedParams());
    a.classList.toggle("active", r.path === a.dataset.view || (a.dataset.view === "discover" && r.path.startsWith("doc/")) ||
      (a.dataset.view === "traces" && r.path.startsWith("span/")));
  });
  $("controls").hidden = r.path === "sql";
}
function setupChrome() {
  $("range").addEventListener("change", (e) => { if (e.target.value !== "custom") setParams({ from: e.target.value, to: "now" }); });
  $("zoom-out").addEventListener("click", () => { const { start, end } = timeRange(); const w = end - start; setParams({ from: Math.round(start - w / 2), to: Math.round(Math.min(end + w / 2, Date.now())) }); });
  $("refresh").addEventListener("change", (e) => setParams({ refresh: e.target.value }));
  $("reload").addEventListener("click", () => render());
  for (const k of CONTROL_PARAMS) $("ctl-" + k).addEventListener("change", (e) => setParams({ [k]: e.target.value }));
}
function scheduleRefresh() {
  clearInterval(refreshTimer);
  const secs = Number(route().params.get("refresh") || 0);
  if (secs > 0) refreshTimer = setInterval(() => render(true), secs * 1000);
}

// --- dashboards --------------------------------------------------------------------------------------
function zoomTo(t0, t1) { setParams({ from: t0, to: t1 }); }

// Overview panels that show a measure the anomaly detector scores (alerting/anomaly.py MEASURES).
const ANOMALY_MEASURE_OF_PANEL = { request_rate: "request_rate", token_usage: "tokens", latency: "latency_ms", error_rate: "error_rate" };

async function renderDashboard(id, seq, quiet) {
  const dash = META.dashboards.find((d) => d.id === id);
  if (!dash) { $("view").replaceChildren(el("p", { class: "error", text: "No such dashboard" })); return; }
  $("title").textContent = dash.title;
  const view = $("view");
  const { start, end } = timeRange();
  let grid = view.querySelector(".grid[data-dash='" + id + "']");
  if (!quiet || !grid) {
    const links = el("div", { class: "dash-links" }, ...META.dashboards.map((d) =>
      el("a", { href: href("dash/" + d.id, sharedParams()), class: d.id === id ? "active" : "", text: d.title })));
    grid = el("div", { class: "grid", "data-dash": id });
    for (const p of dash.panels) {
      if (SECTIONS[p.id]) grid.append(el("h2", { class: "section", text: SECTIONS[p.id] }));
      const actions = el("div", { class: "panel-actions" });
      if (p.discover) actions.append(el("a", { href: href("discover", sharedParams({ table: p.table, q: p.discover })), text: "Documents", title: "Open these documents in Discover" }));
      const sqlBox = el("details", { class: "panel-sql" }, el("summary", { text: "SQL" }), el("pre", { text: p.sql }));
      actions.append(sqlBox);
      grid.append(el("section", { class: "panel kind-" + p.kind + " w" + (p.kind === "timeseries" ? p.width : 1), "data-panel": p.id },
        el("div", { class: "panel-head" }, el("h3", { text: p.title, title: p.description }), actions),
        el("div", { class: "panel-desc", text: p.description }),
        el("div", { class: "panel-body" }, el("div", { class: "loading", text: "Loading…" }))));
    }
    view.replaceChildren(el("p", { class: "dash-desc", text: dash.description }), links, grid);
  }
  const costReport = id === "cost" ? renderCostReport(view, grid, seq) : null;  // runs beside the panels
  let data, anomalies = [];
  try {
    [data, anomalies] = await Promise.all([
      api("/api/dashboard/" + encodeURIComponent(id) + "?" + apiQuery()),
      id === "overview" ? api("/api/anomalies?" + apiQuery()).then((a) => a.rows).catch(() => []) : [],
    ]);
  }
  catch (e) { if (seq === renderSeq) grid.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  grid.dataset.loaded = String(Date.now());
  for (const p of dash.panels) {
    const section = grid.querySelector("[data-panel='" + p.id + "']");
    const body = section.querySelector(".panel-body");
    const d = data.panels[p.id];
    section.dataset.tookMs = d ? d.took_ms : "";
    if (!d || d.error) { body.replaceChildren(el("p", { class: "error", text: d ? d.error : "no data" })); continue; }
    if (p.kind === "stat") {
      body.replaceChildren(el("div", { class: "stat", "data-value": d.value === null ? "" : String(d.value), title: fmtNumber(d.value, p.unit, true), text: fmtNumber(d.value, p.unit) }));
    } else if (p.kind === "donut") {
      donutChart(body, d.rows, p.unit);
    } else {
      const measure = ANOMALY_MEASURE_OF_PANEL[p.id];
      const marks = anomalies.filter((a) => a.measure === measure).map((a) => ({
        t: a.t, label: `Anomaly: ${a.deployment} ${a.measure} ${fmtNumber(a.value, "")} (expected ${fmtNumber(a.expected, "")}, ${a.direction})` }));
      section.dataset.anomalies = String(marks.length);
      timeChart(body, d, { start: data.start, end: data.end, unit: p.unit, chart: p.chart, onZoom: zoomTo, marks });
    }
  }
  if (costReport) await costReport;
  if (seq !== renderSeq) return;
  grid.dataset.ready = "1";
}

// --- Discover ------------------------------------------------------------------------------------------
function kqlValue(v) {
  return '"' + String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
}
function addFilter(field, value, negate) {
  const r = route();
  const cur = (r.params.get("q") || "").trim();
  const clause = (negate ? "not " : "") + field + ":" + kqlValue(value);
  return cur ? "(" + cur + ") and " + clause : clause;
}

async function renderDiscover(seq) {
  $("title").textContent = "Discover";
  const r = route();
  const table = r.params.get("table") || "logs";
  const q = r.params.get("q") || "";
  const offset = Number(r.params.get("offset") || 0);
  const columns = r.params.get("columns") || "";
  const view = $("view");
  const input = el("input", { id: "kql", class: "kql", type: "search", spellcheck: "false", placeholder: 'KQL, e.g. aoai.deployment:gpt-4o and aoai.status_code >= 400', value: q });
  const tableSel = el("select", { id: "table", title: "Data" }, ...META.tables.map((t) => el("option", { value: t, text: t })));
  tableSel.value = table;
  tableSel.addEventListener("change", () => setParams({ table: tableSel.value, q: "", columns: "", offset: 0 }));
  const form = el("form", { class: "querybar" }, tableSel, input, el("button", { type: "submit", class: "primary", text: "Search" }));
  form.addEventListener("submit", (e) => { e.preventDefault(); setParams({ q: input.value, offset: 0 }); });
  const errBox = el("div", { class: "error", hidden: "" });
  const fieldsBox = el("div", { class: "fields" }, el("div", { class: "loading", text: "Loading fields…" }));
  const histBox = el("div", { class: "histogram" });
  const summary = el("div", { class: "hits-summary" });
  const tableBox = el("div", { class: "doc-table-wrap" });
  const fieldSearch = el("input", { type: "search", class: "field-search", placeholder: "Filter fields" });
  view.replaceChildren(form, errBox, el("div", { class: "discover" },
    el("aside", { class: "sidebar" }, fieldSearch, fieldsBox),
    el("div", { class: "results" }, summary, histBox, tableBox)));
  const base = { table, q, columns };
  let res;
  try {
    res = await api("/api/discover?" + apiQuery(Object.assign({}, base, { offset, limit: 50 })));
  } catch (e) {
    if (seq !== renderSeq) return;
    errBox.hidden = false;
    errBox.textContent = e.message;
    fieldsBox.replaceChildren();
    return;
  }
  if (seq !== renderSeq) return;
  summary.replaceChildren(el("strong", { id: "hit-count", "data-total": String(res.total), text: res.total.toLocaleString() }), " documents");
  const series = { t: res.histogram.map((h) => h[0]), series: { documents: res.histogram.map((h) => h[1]) }, bucket: res.bucket };
  timeChart(histBox, series, { start: res.start, end: res.end, unit: "count", chart: "bar", height: 130, onZoom: zoomTo });
  const chosen = res.columns.slice(2);
  const thead = el("tr", {}, el("th", { text: "@timestamp" }), ...chosen.map((c) => el("th", {}, el("span", { text: c }),
    el("button", { type: "button", class: "col-remove", title: "Remove column", text: "×", onclick: () => setParams({ columns: chosen.filter((x) => x !== c).join(",") || "-" }) }))));
  const tbody = el("tbody");
  for (const row of res.rows) {
    const link = href("doc/" + table + "/" + row[0], sharedParams({ ts: row[1] }));
    const tr = el("tr", { class: "doc-row", "data-id": row[0] }, el("td", { class: "ts" }, el("a", { href: link, text: fmtFull(row[1]) })),
      ...row.slice(2).map((v) => el("td", { text: fmtValue(v), title: fmtValue(v) })));
    tr.addEventListener("dblclick", () => { location.hash = link; });
    tbody.append(tr);
  }
  const pager = el("div", { class: "pager" },
    el("button", { type: "button", disabled: offset <= 0 ? "" : null, text: "‹ Newer", onclick: () => setParams({ offset: Math.max(0, offset - 50) }) }),
    el("span", { text: res.total ? `${offset + 1}–${Math.min(offset + 50, res.total)} of ${res.total.toLocaleString()}` : "No documents match" }),
    el("button", { type: "button", disabled: offset + 50 >= res.total ? "" : null, text: "Older ›", onclick: () => setParams({ offset: offset + 50 }) }));
  tableBox.replaceChildren(el("table", { class: "doc-table" }, el("thead", {}, thead), tbody), pager);
  // Field sidebar: fields present in a sample of the matches first; click for top values.
  try {
    const f = await api("/api/fields?" + apiQuery({ table, q }));
    if (seq !== renderSeq) return;
    const present = f.fields.filter((x) => x.sample_count > 0), empty = f.fields.filter((x) => x.sample_count === 0);
    const item = (x) => {
      const on = chosen.includes(x.name);
      const li = el("li", { class: "field" + (on ? " on" : ""), "data-field": x.name, title: x.description || x.name },
        el("span", { class: "ftype", text: typeBadge(x.type) }), el("span", { class: "fname", text: x.name }),
        el("button", { type: "button", class: "fadd", title: on ? "Remove column" : "Add column", text: on ? "−" : "+",
          onclick: (e) => { e.stopPropagation(); const cols = on ? chosen.filter((c) => c !== x.name) : [...chosen, x.name]; setParams({ columns: cols.join(",") || "-" }); } }));
      li.addEventListener("click", () => toggleTopValues(li, table, q, x.name));
      return li;
    };
    const list = el("ul", { class: "field-list" }, ...present.map(item));
    const emptyList = el("details", { class: "empty-fields" }, el("summary", { text: `Empty fields (${empty.length})` }), el("ul", { class: "field-list" }, ...empty.map(item)));
    fieldsBox.replaceChildren(el("div", { class: "fields-title", text: `Fields (${present.length})` }), list, emptyList);
    fieldSearch.addEventListener("input", () => {
      const s = fieldSearch.value.toLowerCase();
      fieldsBox.querySelectorAll("li.field").forEach((li) => { li.hidden = s && !li.dataset.field.toLowerCase().includes(s); });
    });
  } catch (e) { fieldsBox.replaceChildren(el("p", { class: "error", text: e.message })); }
  view.dataset.ready = "1";
}
function typeBadge(t) {
  t = String(t).toUpperCase();
  if (t.endsWith("[]")) return "[ ]";
  if (t.startsWith("TIMESTAMP")) return "⏱";
  if (t === "BOOLEAN") return "t/f";
  if (t === "JSON") return "{}";
  if (/INT|DOUBLE|FLOAT|DECIMAL/.test(t)) return "#";
  return "k";
}
async function toggleTopValues(li, table, q, field) {
  const open = li.nextSibling && li.nextSibling.classList && li.nextSibling.classList.contains("top-values");
  if (open) { li.nextSibling.remove(); return; }
  const box = el("li", { class: "top-values" }, el("div", { class: "loading", text: "…" }));
  li.after(box);
  try {
    const res = await api("/api/values?" + apiQuery({ table, q, field }));
    const rows = res.values.map(([v, n]) => {
      const pct = res.present ? (n / res.present) * 100 : 0;
      const bar = el("div", { class: "bar" }); bar.style.width = pct.toFixed(1) + "%";
      return el("div", { class: "tv" },
        el("div", { class: "tv-line" }, el("span", { class: "tv-value", text: v === null ? "(null)" : String(v), title: String(v) }), el("span", { class: "tv-pct", text: pct.toFixed(1) + "%" }),
          el("button", { type: "button", title: "Filter for value", text: "+", onclick: () => setParams({ q: addFilter(field, v, false), offset: 0 }) }),
          el("button", { type: "button", title: "Filter out value", text: "−", onclick: () => setParams({ q: addFilter(field, v, true), offset: 0 }) })),
        el("div", { class: "tv-bar" }, bar));
    });
    box.replaceChildren(el("div", { class: "tv-head", text: `${res.present.toLocaleString()} of ${res.total.toLocaleString()} documents have this field` }), ...rows);
  } catch (e) { box.replaceChildren(el("div", { class: "error", text: e.message })); }
}

// --- document view -----------------------------------------------------------------------------------
async function renderDocument(table, id, seq) {
  $("title").textContent = "Document";
  const { params } = route();
  const view = $("view");
  view.replaceChildren(el("div", { class: "loading", text: "Loading…" }));
  let doc;
  try { doc = await api("/api/doc/" + encodeURIComponent(table) + "/" + encodeURIComponent(id) + (params.get("ts") ? "?ts=" + encodeURIComponent(params.get("ts")) : "")); }
  catch (e) { view.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  const back = el("a", { href: href("discover", sharedParams({ table })), class: "back", text: "← Discover" });
  const filter = el("input", { type: "search", class: "field-search", placeholder: "Filter fields and values" });
  const tbody = el("tbody");
  const extra = new Set(doc.extra_keys);
  for (const [name, value] of doc.fields) {
    const isObj = value !== null && typeof value === "object";
    const text = isObj ? JSON.stringify(value, null, 2) : fmtValue(name === "@timestamp" || name === "event.ingested" ? fmtFull(value) : value);
    const kqlField = extra.has(name) ? "extra." + name : name;
    const filterVal = name === "@timestamp" || name === "event.ingested" ? new Date(value).toISOString() : (Array.isArray(value) ? value[0] : value);
    const canFilter = !isObj || Array.isArray(value) && value.length && typeof value[0] !== "object";
    const actions = el("td", { class: "doc-actions" });
    if (canFilter && name !== "id") {
      actions.append(
        el("a", { href: href("discover", sharedParams({ table, q: addFilterFor(kqlField, filterVal, false) })), title: "Filter for value", text: "+" }),
        el("a", { href: href("discover", sharedParams({ table, q: addFilterFor(kqlField, filterVal, true) })), title: "Filter out value", text: "−" }));
    }
    tbody.append(el("tr", { "data-field": name }, actions, el("th", { text: name }), el("td", {}, isObj ? el("pre", { text }) : el("span", { class: "doc-value", text }))));
  }
  filter.addEventListener("input", () => {
    const s = filter.value.toLowerCase();
    tbody.querySelectorAll("tr").forEach((tr) => { tr.hidden = s && !tr.textContent.toLowerCase().includes(s); });
  });
  let raw = doc.raw;
  try { if (raw) raw = JSON.stringify(JSON.parse(raw), null, 2); } catch (e) { /* show as stored */ }
  view.replaceChildren(back, el("h2", { class: "doc-id", text: `${table} / ${doc.id}` }),
    el("div", { class: "tabs" }, el("section", { class: "card" }, el("h3", { text: "Fields" }), filter, el("table", { class: "doc-fields" }, tbody)),
      el("section", { class: "card" }, el("h3", { text: "Raw record (event.original)" }), el("pre", { class: "raw", id: "raw", text: raw || "(none: this document was not built from a raw record)" }))));
  if (table === "logs") linkedSpans(view, doc.id, seq);
  if (table === "spans") back.after(" · ", el("a", { href: spanHref(doc.id), id: "span-detail-link", text: "Span detail: trace, linked log, latency" }));
  view.dataset.ready = "1";
}
function addFilterFor(field, value, negate) { return (negate ? "not " : "") + field + ":" + kqlValue(value); }

// --- SQL page ----------------------------------------------------------------------------------------
function renderSql() {
  $("title").textContent = "SQL";
  const { params } = route();
  const area = el("textarea", { id: "sql", class: "sql", spellcheck: "false" });
  area.value = params.get("sql") || META.sql_examples[0].sql;
  const out = el("div", { class: "sql-out" });
  const status = el("span", { class: "sql-status" });
  const run = async () => {
    status.textContent = "Running…";
    try {
      const res = await api("/api/sql", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: area.value }) });
      status.textContent = `${res.rows.length}${res.truncated ? "+" : ""} rows in ${res.took_ms} ms`;
      out.replaceChildren(el("div", { class: "doc-table-wrap" }, el("table", { class: "doc-table", id: "sql-result" },
        el("thead", {}, el("tr", {}, ...res.columns.map((c) => el("th", { text: c })))),
        el("tbody", {}, ...res.rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: fmtValue(v), title: fmtValue(v) }))))))));
    } catch (e) {
      status.textContent = "";
      out.replaceChildren(el("p", { class: "error", id: "sql-error", text: e.message }));
    }
  };
  area.addEventListener("keydown", (e) => { if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); run(); } });
  const examples = el("ul", { class: "examples" }, ...META.sql_examples.map((x) =>
    el("li", {}, el("button", { type: "button", class: "link", text: x.title, onclick: () => { area.value = x.sql; run(); } }))));
  $("view").replaceChildren(el("div", { class: "sql-page" },
    el("section", { class: "card" }, el("p", { class: "dash-desc", text: "Read-only SQL (DuckDB) over the tables logs, metrics and dead_letters. Columns are dotted field names in double quotes. Ctrl+Enter runs." }),
      area, el("div", { class: "sql-bar" }, el("button", { type: "button", class: "primary", id: "run-sql", text: "Run", onclick: run }), status), out),
    el("aside", { class: "card" }, el("h3", { text: "Examples (Kusto → SQL)" }), examples)));
}

// --- Alerts page (aoai_monitor/alerting/api.py) ------------------------------------------------------------
function table(headers, rows) {
  return el("table", { class: "doc-table" }, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c === null || c === undefined ? "–" : c))))));
}
async function postJson(path, body, method) {
  return api(path, { method: method || "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
}
function stateBadge(state, severity) {
  return el("span", { class: "badge state-" + state + (severity ? " sev-" + severity : ""), text: state + (severity ? " · " + severity : "") });
}
function ruleSummary(r) {
  if (r.kind === "slo") return "SLO burn rate (multiwindow)";
  if (r.kind === "budget") return "budget " + r.measure + " " + r.op + " " + [r.warning, r.critical].filter((v) => v !== null && v !== undefined).join(" / ") + " of " + r.monthly_budget;
  const what = r.sql ? "SQL" : (r.agg || "count") + (r.group_by && r.group_by.length ? " by " + r.group_by.join(", ") : "") + (r.filter ? " where " + r.filter : "");
  const limits = r.no_data === "alert" && r.warning == null && r.critical == null ? "no data → critical" : r.op + " " + [r.warning, r.critical].filter((v) => v !== null && v !== undefined).join(" / ");
  return r.source + ": " + what + " over " + r.window + (r.compare_to ? " vs " + r.compare_to + " baseline" : "") + ", " + limits;
}
async function renderAlerts(seq) {
  $("title").textContent = "Alerts";
  const view = $("view");
  const { start, end } = timeRange();
  let data, anomalies;
  try {
    [data, anomalies] = await Promise.all([api("/api/alerts"), api("/api/anomalies?" + apiQuery())]);
  } catch (e) { if (seq === renderSeq) view.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  const status = el("p", { class: "dash-desc", id: "alerts-status" });
  const act = async (fn) => { try { await fn(); render(true); } catch (e) { status.textContent = e.message; status.className = "error"; } };
  const mute = (rule, group, minutes) => act(() => postJson("/api/alerts/silence", { rule, group, minutes }));
  const parts = [];
  if (!data.configured) parts.push(el("p", { class: "dash-desc", text: "No [alerts] section is running: add one to the config of `aoai-monitor run` (`aoai-monitor alerts init` writes the built-in templates)." }));
  for (const e of data.errors) parts.push(el("p", { class: "error", text: e.message }));
  parts.push(status);
  parts.push(el("section", { class: "card" }, el("h3", { text: "Active (" + data.states.length + ")" }),
    data.states.length ? table(["Rule", "Group", "State", "Since", "Value", ""], data.states.map((s) => [
      s.rule, s.group || "(all)", stateBadge(s.state, s.severity), fmtFull(s.since_ms), fmtValue(s.value),
      el("button", { type: "button", text: "Mute 1 h", onclick: () => mute(s.rule, s.group, 60) })]))
      : el("p", { class: "empty", text: "Nothing pending or firing." })));
  const chartBox = el("div", { class: "panel-body" });
  parts.push(el("section", { class: "card" }, el("h3", { text: "Anomalies (seasonal baseline per deployment)" }), chartBox,
    anomalies.rows.length ? table(["Bucket", "Deployment", "Measure", "Value", "Expected", "Band", "Score"], anomalies.rows.slice(0, 50).map((a) => [
      fmtFull(a.t), a.deployment, a.measure, fmtValue(a.value), fmtValue(a.expected), fmtValue(a.lower) + " – " + fmtValue(a.upper), String(a.score)]))
      : el("p", { class: "empty", text: "No anomalies in this range." })));
  parts.push(el("section", { class: "card" }, el("h3", { text: "Rules (" + data.rules.length + ")" }),
    table(["Id", "Name", "Origin", "Condition", "Every", "Notify", ""], data.rules.map((r) => [
      r.id, r.name, r.origin + (r.enabled === false ? " (disabled)" : ""), ruleSummary(r), r.every || "",
      (r.notify || data.default_notify || []).join(", "),
      el("span", {}, el("button", { type: "button", text: "Mute 1 h", onclick: () => mute(r.id, "*", 60) }),
        r.origin === "ui" ? el("button", { type: "button", text: "Delete", onclick: () => act(() => postJson("/api/alerts/rules/" + encodeURIComponent(r.id), {}, "DELETE")) }) : null)]))));
  if (data.silences.length) parts.push(el("section", { class: "card" }, el("h3", { text: "Silences" }),
    table(["Rule", "Group", "Until", "Reason", ""], data.silences.map((x) => [x.rule, x.group, fmtFull(x.until), x.reason || "",
      el("button", { type: "button", text: "Unmute", onclick: () => act(() => postJson("/api/alerts/silence", { rule: x.rule, group: x.group, clear: true })) })]))));
  parts.push(ruleForm(data, act));
  parts.push(el("section", { class: "card" }, el("h3", { text: "History" }),
    table(["Time", "Rule", "Group", "Change", "Value", "Message", "Notification"], data.history.map((h) => [
      fmtFull(h["@timestamp"]), h["alert.rule.id"], h["alert.group"] || "(all)",
      el("span", {}, (h["alert.previous_state"] || "") + " → ", stateBadge(h["alert.state"], h["alert.severity"])),
      fmtValue(h["alert.value"]), h["alert.message"], h["alert.notify"]]))));
  view.replaceChildren(...parts);
  timeChart(chartBox, anomalies.chart, { start, end, unit: "", chart: "bars", legend: true, onZoom: zoomTo });
  view.dataset.ready = "1";
}
function ruleForm(data, act) {
  const f = {};
  const input = (name, attrs) => (f[name] = el("input", Object.assign({ name, type: "text" }, attrs || {})));
  const source = (f.source = el("select", { name: "source" }, ...["logs", "metrics", "spans", "anomalies"].map((s) => el("option", { value: s, text: s }))));
  const op = (f.op = el("select", { name: "op" }, ...[">=", ">", "<=", "<"].map((s) => el("option", { value: s, text: s }))));
  const num = (v) => (v === "" ? null : Number(v));
  const list = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);
  const submit = () => act(() => postJson("/api/alerts/rules", {
    id: f.id.value.trim(), name: f.name.value.trim() || null, source: source.value, filter: f.filter.value,
    agg: f.agg.value.trim() || "count", group_by: list(f.group_by.value), window: f.window.value.trim() || "10m",
    every: f.every.value.trim() || null, op: op.value, warning: num(f.warning.value), critical: num(f.critical.value),
    notify: f.notify.value.trim() ? list(f.notify.value) : null, runbook: f.runbook.value }));
  const row = (label, node) => el("label", { class: "form-row" }, el("span", { text: label }), node);
  return el("section", { class: "card rule-form" }, el("h3", { text: "New rule" }),
    el("p", { class: "dash-desc", text: "Stored in the store and evaluated by `aoai-monitor run` from its next tick. Aggregations: count, sum|avg|min|max(field), p95(field), count_distinct(field), ratio(KQL) = percent of the rows that match. Targets: " + (Object.keys(data.targets).join(", ") || "none configured") + "." }),
    row("Id", input("id", { placeholder: "gpt4o-slow" })), row("Name", input("name")), row("Source", source),
    row("Filter (KQL)", input("filter", { placeholder: "aoai.deployment:gpt-4o" })), row("Aggregation", input("agg", { placeholder: "p95(aoai.duration_ms)" })),
    row("Group by", input("group_by", { placeholder: "aoai.deployment" })), row("Window", input("window", { placeholder: "10m" })),
    row("Every", input("every", { placeholder: "1m" })), row("Operator", op), row("Warning", input("warning", { type: "number", step: "any" })),
    row("Critical", input("critical", { type: "number", step: "any" })), row("Notify", input("notify", { placeholder: (data.default_notify || []).join(", ") })),
    row("Runbook", input("runbook", { placeholder: "What to do when it fires" })),
    el("button", { type: "button", class: "primary", id: "save-rule", text: "Save rule", onclick: submit }));
}

// --- SLO page --------------------------------------------------------------------------------------------
async function renderSlo(seq) {
  $("title").textContent = "SLOs";
  const view = $("view");
  let data;
  try { data = await api("/api/slo"); }
  catch (e) { if (seq === renderSeq) view.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  if (!data.slos.length) {
    view.replaceChildren(el("p", { class: "dash-desc", text: "No SLOs: add [[alerts.slos]] to the config of `aoai-monitor run` (docs/alerts.md)." }));
    return;
  }
  const parts = [], charts = [];
  for (const slo of data.slos) {
    const days = Math.round(slo.period_ms / 86400000);
    parts.push(el("h2", { class: "section", text: slo.name + " — " + slo.type + (slo.threshold_ms ? " ≤ " + slo.threshold_ms + " ms" : "") + ", target " + slo.target + " % over " + days + " days" }));
    parts.push(el("p", { class: "dash-desc", text: "Burn-rate tiers: " + slo.tiers.map((t) => t.severity + " " + Math.round(t.long_ms / 3600000) + " h & " + Math.round(t.short_ms / 60000) + " min ≥ " + t.factor + "×").join(" · ") }));
    const grid = el("div", { class: "grid" });
    for (const g of slo.groups) {
      const body = el("div", { class: "panel-body" });
      const rates = Object.entries(g.burn_rates).map(([w, v]) => w + " " + (v === null ? "–" : v + "×")).join(" · ");
      grid.append(el("section", { class: "panel w2", "data-slo": slo.id + "|" + g.group },
        el("div", { class: "panel-head" }, el("h3", { text: g.group || "(all)" })),
        el("div", { class: "panel-desc", text: "SLI " + (g.sli === null ? "–" : g.sli + " %") + " · budget remaining " + (g.budget_remaining_pct === null ? "–" : g.budget_remaining_pct + " %") + " · " + fmtNumber(g.events) + " requests, " + fmtNumber(g.bad) + " bad" }),
        el("div", { class: "panel-desc", text: "Burn rates: " + rates }), body));
      const pts = g.burn_down.filter((p) => p[1] !== null);
      charts.push([body, { t: pts.map((p) => p[0]), series: { "budget remaining %": pts.map((p) => p[1]) }, bucket: slo.period_ms / 60 }, data.now - slo.period_ms, data.now]);
    }
    parts.push(grid);
  }
  view.replaceChildren(...parts);
  for (const [body, d, start, end] of charts) timeChart(body, d, { start, end, unit: "percent", chart: "line", legend: true });
  view.dataset.ready = "1";
}

// --- Traces page and span detail (aoai_monitor/query/traces.py) -------------------------------------------
const TRACE_FILTERS = ["service", "deployment", "outcome"];
const LINK_METHODS = {
  response_id: "linked by response id (gen_ai.response.id = backend response body id)",
  request_id: "linked by request id (apim-request-id / x-request-id = the log's correlation or request id)",
  approximate: "approximate: nearest request log of the same deployment within 5 s (no shared id)",
};
function spanHref(ref) { return href("span/" + ref, sharedParams()); }
function fmtMoney(v, currency) {
  if (v === null || v === undefined) return "–";
  const n = Number(v), digits = n !== 0 && Math.abs(n) < 1 ? 4 : 2;
  try { return n.toLocaleString(undefined, { style: "currency", currency: currency || "USD", minimumFractionDigits: 2, maximumFractionDigits: digits }); }
  catch (e) { return n.toFixed(digits) + " " + currency; }
}
// A table cell carrying the raw value in data-value (tests and copy-paste) and the formatted one as text.
function numCell(key, v, text) {
  return el("td", { "data-key": key, "data-value": v === null || v === undefined ? "" : String(v), text: text === undefined ? fmtNumber(v, "", true) : text });
}

async function renderTraces(seq) {
  $("title").textContent = "Traces";
  const r = route();
  const view = $("view");
  const q = r.params.get("q") || "", group = r.params.get("group") || "service.name";
  const offset = Number(r.params.get("offset") || 0);
  const filters = {};
  for (const k of TRACE_FILTERS) filters[k] = r.params.get(k) || "";
  const input = el("input", { id: "trace-kql", class: "kql", type: "search", spellcheck: "false", value: q,
    placeholder: "KQL over spans, e.g. aoai.duration_ms >= 1000 and not event.outcome:success" });
  const selects = {};
  for (const k of TRACE_FILTERS) selects[k] = el("select", { id: "trace-" + k, title: k }, el("option", { value: "", text: "Any " + k }));
  const form = el("form", { class: "querybar" }, input, ...TRACE_FILTERS.map((k) => selects[k]), el("button", { type: "submit", class: "primary", text: "Search" }));
  const apply = () => { const p = { q: input.value, offset: 0 }; for (const k of TRACE_FILTERS) p[k] = selects[k].value; setParams(p); };
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  const errBox = el("div", { class: "error", id: "traces-error", hidden: "" });
  const listBox = el("div", { class: "doc-table-wrap" }, el("div", { class: "loading", text: "Loading…" }));
  const summary = el("div", { class: "hits-summary" });
  const panelsBox = el("div", { id: "app-panels" }, el("div", { class: "loading", text: "Loading…" }));
  view.replaceChildren(el("p", { class: "dash-desc", text: "Spans sent by instrumented applications (OTLP). A GenAI span links to the service log of the same request, so app-side latency sits beside service-side duration." }),
    panelsBox, el("h2", { class: "section", text: "Spans" }), form, errBox, summary, listBox);
  const listing = api("/api/traces?" + apiQuery(Object.assign({ q, offset, limit: 50 }, filters)));
  const panels = api("/api/traces/panels?" + apiQuery({ group }));
  let list;
  try { list = await listing; }
  catch (e) { if (seq === renderSeq) { errBox.hidden = false; errBox.textContent = e.message; listBox.replaceChildren(); } }
  if (seq !== renderSeq) return;
  if (list) {
    for (const k of TRACE_FILTERS) {
      const values = list.facets[k].slice();
      if (filters[k] && !values.includes(filters[k])) values.push(filters[k]);
      selects[k].append(...values.map((v) => el("option", { value: v, text: v })));
      selects[k].value = filters[k];
      selects[k].addEventListener("change", apply);
    }
    summary.replaceChildren(el("strong", { id: "span-count", "data-total": String(list.total), text: list.total.toLocaleString() }), " spans · ",
      el("a", { href: href("discover", sharedParams({ table: "spans", q })), text: "Open in Discover" }));
    const heads = ["@timestamp", "service", "span", "deployment", "model", "status", "outcome", "duration", "TTFT", "tokens in / out", "cost", "trace"];
    const tbody = el("tbody", {}, ...list.rows.map((s) => el("tr", { class: "span-row", "data-span": s["span.id"] },
      el("td", { class: "ts" }, el("a", { href: spanHref(s["span.id"]), text: fmtFull(s["@timestamp"]) })),
      el("td", { text: fmtValue(s["service.name"]) }), el("td", { text: fmtValue(s["span.name"]) }),
      el("td", { text: fmtValue(s["aoai.deployment"]) }), el("td", { text: fmtValue(s["aoai.model"]) }),
      el("td", { text: fmtValue(s["aoai.status_code"]) }), el("td", { text: fmtValue(s["event.outcome"]) }),
      numCell("aoai.duration_ms", s["aoai.duration_ms"], fmtNumber(s["aoai.duration_ms"], "ms")),
      numCell("aoai.ttft_ms", s["aoai.ttft_ms"], fmtNumber(s["aoai.ttft_ms"], "ms")),
      el("td", { text: fmtNumber(s["aoai.tokens.input"], "", true) + " / " + fmtNumber(s["aoai.tokens.output"], "", true) }),
      numCell("aoai.cost", s["aoai.cost"], s["aoai.cost"] === null ? "unpriced" : fmtMoney(s["aoai.cost"], "USD")),
      el("td", {}, el("a", { href: href("traces", sharedParams({ q: "trace.id:" + kqlValue(s["trace.id"]) })), text: String(s["trace.id"]).slice(0, 12) + "…", title: s["trace.id"] })))));
    const pager = el("div", { class: "pager" },
      el("button", { type: "button", disabled: offset <= 0 ? "" : null, text: "‹ Newer", onclick: () => setParams({ offset: Math.max(0, offset - 50) }) }),
      el("span", { text: list.total ? `${offset + 1}–${Math.min(offset + 50, list.total)} of ${list.total.toLocaleString()}` : "No spans match" }),
      el("button", { type: "button", disabled: offset + 50 >= list.total ? "" : null, text: "Older ›", onclick: () => setParams({ offset: offset + 50 }) }));
    listBox.replaceChildren(el("table", { class: "doc-table", id: "span-table" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))), tbody), pager);
  }
  let p;
  try { p = await panels; }
  catch (e) { if (seq === renderSeq) panelsBox.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  renderAppPanels(panelsBox, p);
  view.dataset.ready = "1";
}

function renderAppPanels(box, p) {
  const groupSel = el("select", { id: "trace-group", title: "Group by" }, ...p.groups.map((g) => el("option", { value: g, text: g })));
  groupSel.value = p.group;
  groupSel.addEventListener("change", () => setParams({ group: groupSel.value }));
  const ms = (v) => fmtNumber(v, "ms");
  const heads = [p.group, "requests", "errors", "429", "p50", "p95", "p99", "TTFT p50", "TTFT p95", "input tokens", "output tokens", "cost", "unpriced"];
  const rows = p.rows.map((g) => el("tr", { "data-group": g.group === null ? "" : String(g.group) },
    el("td", { text: g.group === null ? "(none)" : String(g.group) }), numCell("requests", g.requests), numCell("errors", g.errors), numCell("throttled", g.throttled),
    numCell("p50_ms", g.p50_ms, ms(g.p50_ms)), numCell("p95_ms", g.p95_ms, ms(g.p95_ms)), numCell("p99_ms", g.p99_ms, ms(g.p99_ms)),
    numCell("ttft_p50_ms", g.ttft_p50_ms, ms(g.ttft_p50_ms)), numCell("ttft_p95_ms", g.ttft_p95_ms, ms(g.ttft_p95_ms)),
    numCell("input_tokens", g.input_tokens), numCell("output_tokens", g.output_tokens), numCell("cost", g.cost, fmtMoney(g.cost, "USD")),
    numCell("unpriced", g.unpriced)));
  const charts = [["p95_ms", "Latency p95", "ms", "line"], ["ttft_p95_ms", "Time to first token p95", "ms", "line"], ["tokens", "Tokens", "tokens", "bar"], ["cost", "Cost (USD)", "currency", "bar"]];
  const grid = el("div", { class: "grid" });
  const bodies = charts.map(([id, title]) => {
    const body = el("div", { class: "panel-body" });
    grid.append(el("section", { class: "panel w2", "data-app-chart": id }, el("div", { class: "panel-head" }, el("h3", { text: title + " by " + p.group })), body));
    return body;
  });
  const latency = p.latency.length
    ? table(["deployment", "linked spans", "app p50", "app p95", "service p50", "service p95", "gap p50 (app − service)"], p.latency.map((l) => [
      l.deployment, String(l.linked), ms(l.app_p50_ms), ms(l.app_p95_ms), ms(l.service_p50_ms), ms(l.service_p95_ms), ms(l.gap_p50_ms)]))
    : el("p", { class: "empty", text: "No span in this range shares an id with a service log (gateway body logging or request-id headers)." });
  latency.id = "app-vs-service";
  box.replaceChildren(
    el("section", { class: "card" }, el("div", { class: "panel-head" }, el("h3", { text: "App-side panels (spans with gen_ai.operation.name)" }), groupSel),
      p.rows.length ? el("div", { class: "doc-table-wrap" }, el("table", { class: "doc-table", id: "app-panel-table" }, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))), el("tbody", {}, ...rows)))
        : el("p", { class: "empty", text: "No GenAI spans in this range: send OTLP traces to `aoai-monitor otlp` (docs/instrumentation.md)." })),
    grid, el("section", { class: "card" }, el("h3", { text: "App-side vs service-side latency (spans linked to a service log by id)" }), latency));
  charts.forEach(([id, , unit, chart], i) => timeChart(bodies[i], p.charts[id], { start: p.start, end: p.end, unit, chart, legend: true, onZoom: zoomTo }));
}

async function renderSpan(ref, seq) {
  $("title").textContent = "Span";
  const view = $("view");
  view.replaceChildren(el("div", { class: "loading", text: "Loading…" }));
  let d;
  try { d = await api("/api/span/" + encodeURIComponent(ref)); }
  catch (e) { if (seq === renderSeq) view.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  const s = d.span, ms = (v) => fmtNumber(v, "ms");
  const row = (label, key, v, text) => el("tr", {}, el("th", { text: label }), numCell(key, v, text));
  const latency = el("table", { class: "doc-fields", id: "latency-compare" }, el("tbody", {},
    row("App-side (span duration)", "app_ms", d.app_ms, ms(d.app_ms)),
    row("Service-side (log duration)", "service_ms", d.service_ms, d.log ? ms(d.service_ms) : "no linked log"),
    row("Gap (network, queueing, client)", "gap_ms", d.gap_ms, ms(d.gap_ms)),
    row("Time to first token", "ttft_ms", s["aoai.ttft_ms"], ms(s["aoai.ttft_ms"]))));
  let logCard;
  if (d.log) {
    const l = d.log;
    const keys = ["azure.open_ai.category", "aoai.deployment", "aoai.model", "aoai.status_code", "aoai.duration_ms", "aoai.tokens.input", "aoai.tokens.output", "aoai.cost.total", "azure.open_ai.correlation_id"];
    logCard = el("section", { class: "card", id: "linked-log", "data-log": l.id },
      el("h3", { text: "Service log of this request" }),
      el("p", { class: "dash-desc", "data-link": d.link, text: LINK_METHODS[d.link] || d.link }),
      el("a", { href: href("doc/logs/" + l.id, sharedParams({ ts: l["@timestamp"] })), id: "linked-log-link", text: "Open log document (" + fmtFull(l["@timestamp"]) + ")" }),
      el("table", { class: "doc-fields" }, el("tbody", {}, ...keys.filter((k) => l[k] !== null && l[k] !== undefined).map((k) => el("tr", {}, el("th", { text: k }), el("td", { text: fmtValue(l[k]) }))))));
  } else {
    logCard = el("section", { class: "card", id: "linked-log" }, el("h3", { text: "Service log of this request" }),
      el("p", { class: "empty", text: "No service log found: no log shares this span's response or request id, and none of the same deployment is within 5 s." }));
  }
  const t0 = Math.min(...d.trace.map((x) => x["@timestamp"]));
  const t1 = Math.max(...d.trace.map((x) => x["@timestamp"] + Number(x["aoai.duration_ms"] || 0)));
  const span = Math.max(t1 - t0, 1);
  const waterfall = el("tbody", {}, ...d.trace.map((x) => {
    const bar = el("div", { class: "wf-bar" + (x["span.id"] === s["span.id"] ? " current" : "") });
    bar.style.left = (((x["@timestamp"] - t0) / span) * 100).toFixed(2) + "%";
    bar.style.width = Math.max((Number(x["aoai.duration_ms"] || 0) / span) * 100, 0.5).toFixed(2) + "%";
    return el("tr", { "data-span": x["span.id"] }, el("td", { text: fmtValue(x["service.name"]) }),
      el("td", {}, el("a", { href: spanHref(x["span.id"]), text: fmtValue(x["span.name"]) })),
      el("td", { text: "+" + ms(x["@timestamp"] - t0) }), el("td", { text: ms(x["aoai.duration_ms"]) }), el("td", { class: "wf-cell" }, el("div", { class: "wf-track" }, bar)));
  }));
  const fields = el("tbody", {}, ...Object.entries(s).filter(([, v]) => v !== null && v !== undefined).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => {
    const isObj = typeof v === "object";
    const text = isObj ? JSON.stringify(v, null, 2) : k === "@timestamp" || k === "event.ingested" ? fmtFull(v) : fmtValue(v);
    return el("tr", { "data-field": k }, el("th", { text: k }), el("td", {}, isObj ? el("pre", { text }) : el("span", { class: "doc-value", text })));
  }));
  view.replaceChildren(el("a", { href: href("traces", sharedParams()), class: "back", text: "← Traces" }),
    el("h2", { class: "doc-id", text: fmtValue(s["service.name"]) + " / " + fmtValue(s["span.name"]) + " / " + s["span.id"] }),
    el("div", { class: "tabs" },
      el("div", {}, el("section", { class: "card" }, el("h3", { text: "Latency: app against service" }), latency),
        el("section", { class: "card" }, el("h3", { text: "Trace " + s["trace.id"] + " (" + d.trace.length + " spans)" }),
          el("table", { class: "doc-table waterfall" }, el("thead", {}, el("tr", {}, ...["service", "span", "start", "duration", ""].map((h) => el("th", { text: h })))), waterfall)),
        el("section", { class: "card" }, el("h3", {}, "Span fields · ", el("a", { href: href("doc/spans/" + s.id, sharedParams({ ts: s["@timestamp"] })), text: "open as document" })),
          el("table", { class: "doc-fields", id: "span-fields" }, fields))),
      logCard));
  view.dataset.ready = "1";
}

// The log document view's "linked spans": the app spans of the same request (either direction of the link).
async function linkedSpans(view, id, seq) {
  const card = el("section", { class: "card", id: "linked-spans" }, el("h3", { text: "Linked app spans" }), el("div", { class: "loading", text: "Loading…" }));
  const tabs = view.querySelector(".tabs");
  if (tabs) tabs.before(card); else view.append(card);
  let res;
  try { res = await api("/api/doc/logs/" + encodeURIComponent(id) + "/spans"); }
  catch (e) { card.replaceChildren(el("h3", { text: "Linked app spans" }), el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  card.replaceChildren(el("h3", { text: "Linked app spans (" + res.spans.length + ")" }), res.spans.length
    ? table(["@timestamp", "service", "span", "app-side duration", "TTFT", "link"], res.spans.map((s) => [
      el("a", { href: spanHref(s["span.id"]), class: "linked-span", "data-span": s["span.id"], text: fmtFull(s["@timestamp"]) }),
      fmtValue(s["service.name"]), fmtValue(s["span.name"]), fmtNumber(s["aoai.duration_ms"], "ms"), fmtNumber(s["aoai.ttft_ms"], "ms"), LINK_METHODS[s.link] || s.link]))
    : el("p", { class: "empty", text: "No app span shares this request's ids (or, failing that, its deployment within 5 s)." }));
  card.dataset.ready = "1";
}

// --- Cost report on the Cost dashboard (aoai_monitor/pricing/reports.py) -----------------------------------
async function renderCostReport(view, grid, seq) {
  let box = view.querySelector("#cost-report");
  if (!box) { box = el("div", { id: "cost-report" }, el("div", { class: "loading", text: "Loading cost…" })); grid.before(box); }
  let c;
  try { c = await api("/api/cost?" + apiQuery()); }
  catch (e) { if (seq === renderSeq) box.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (seq !== renderSeq) return;
  const cur = c.currency, money = (v) => fmtMoney(v, cur);
  const tbl = (heads, rows) => el("div", { class: "doc-table-wrap" }, table(heads, rows));
  const stat = (id, title, desc, value, text, extra) => el("section", { class: "panel kind-stat" + (extra || ""), "data-cost": id },
    el("div", { class: "panel-head" }, el("h3", { text: title })), el("div", { class: "panel-desc", text: desc }),
    el("div", { class: "panel-body" }, el("div", { class: "stat", "data-value": value === null || value === undefined ? "" : String(value), text })));
  const f = c.forecast;
  const unpriced = c.unpriced_requests + c.unpriced_deployment_hours;
  const stats = el("div", { class: "grid" },
    stat("total", "Total cost (" + cur + ")", "Tokens (each request once, best token source) + PTU hours in the range.", c.total, money(c.total)),
    stat("token_cost", "Token cost", Object.entries(c.by_source).map(([k, v]) => k + " " + money(v)).join(" · ") || "no priced tokens", c.token_cost, money(c.token_cost)),
    stat("ptu_cost", "PTU cost", "Provisioned deployments: PTUs × hourly rate × hours.", c.ptu_cost, money(c.ptu_cost)),
    stat("unpriced", "Unpriced", c.unpriced_requests.toLocaleString() + " requests with tokens but no price, " + c.unpriced_deployment_hours.toLocaleString() + " metric deployment-hours (reasons below)",
      unpriced, unpriced.toLocaleString(), unpriced ? " warn" : ""),
    stat("forecast", "Forecast " + f.month, "Month to date " + money(f.spent) + "; tokens at " + money(f.daily_token_run_rate) + "/day (last 7 days) plus PTU hours to come.", f.forecast, money(f.forecast)));
  const chartUnit = cur === "USD" ? "currency" : "";
  const charts = el("div", { class: "grid" });
  const chartBodies = ["deployment", "model"].map((k) => {
    const body = el("div", { class: "panel-body" });
    charts.append(el("section", { class: "panel w2", "data-cost-chart": k }, el("div", { class: "panel-head" }, el("h3", { text: "Daily cost by " + k + " (" + cur + ", UTC days)" })), body));
    return body;
  });
  const parts = [stats];
  if (c.not_filtered.length) parts.push(el("p", { class: "dash-desc", id: "cost-filter-note", text: "Not filtered by: " + c.not_filtered.join("; ") + " (cost reports carry no such field)." }));
  parts.push(el("section", { class: "card", id: "unpriced-reasons" }, el("h3", { text: "Unpriced (" + unpriced.toLocaleString() + ")" }),
    c.unpriced_reasons.length ? tbl(["reason", "requests", "metric deployment-hours", "source"], c.unpriced_reasons.map((u) => [u.reason, String(u.requests), String(u.deployment_hours || 0), u.source]))
      : el("p", { class: "empty", text: "Every request with tokens in this range is priced." })));
  parts.push(charts);
  const cards = el("div", { class: "grid" });
  cards.append(el("section", { class: "panel w2", id: "top-callers" }, el("h3", { text: "Top callers (APIM subscription, user or product)" }),
    c.top_callers.length ? tbl(["caller", "requests", "tokens", "cost", "unpriced"], c.top_callers.map((t) => [t.caller, String(t.requests), fmtNumber(t.tokens, "", true), money(t.cost), String(t.unpriced)]))
      : el("p", { class: "empty", text: "No gateway log in this range names a subscription, user or product." })));
  cards.append(el("section", { class: "panel w2", id: "cost-by-model" }, el("h3", { text: "Cost by model" }),
    tbl(["model", "requests", "input tokens", "output tokens", "cost", "pay-as-you-go"], c.by_model.map((m) => [m.model, String(m.requests), fmtNumber(m.input_tokens, "", true), fmtNumber(m.output_tokens, "", true), money(m.cost), money(m.payg)]))));
  parts.push(cards);
  parts.push(el("section", { class: "card", id: "ptu-vs-payg" }, el("h3", { text: "PTU vs pay-as-you-go" }),
    ...c.break_even.map((b) => el("p", { class: "break-even", "data-deployment": b.deployment, text: b.statement })),
    c.ptu_vs_payg.length ? tbl(["day", "deployment", "SKU", "PTUs", "hours", "PTU cost", "pay-as-you-go equivalent", "PTU % of PAYG", "utilization avg / max"], c.ptu_vs_payg.map((p) => [
      p.day, p.deployment, p.sku, fmtValue(p.ptus), fmtNumber(p.hours, "", true), p.ptu_cost === null ? p.unpriced_reason : money(p.ptu_cost), money(p.payg_equivalent),
      p.ptu_pct_of_payg === null ? "–" : p.ptu_pct_of_payg.toFixed(0) + " %", fmtNumber(p.utilization_avg, "percent") + " / " + fmtNumber(p.utilization_max, "percent")]))
      : el("p", { class: "empty", text: "No provisioned (PTU) deployment is known: set sku and ptus in [[pricing.deployments]] or record the ARM deployments (docs/cost.md)." })));
  if (c.budgets.length) parts.push(el("section", { class: "card", id: "budgets" }, el("h3", { text: "Budgets (alert rules of kind budget)" }),
    tbl(["rule", "month", "budget", "spent", "forecast", "state"], c.budgets.map((b) => [b.name || b.rule, b.month, money(b.budget),
      money(b.spent) + " (" + fmtNumber(b.spent_pct, "percent") + ")", money(b.forecast) + " (" + fmtNumber(b.forecast_pct, "percent") + ")", b.state]))));
  box.replaceChildren(...parts);
  const day = 864e5, s0 = Math.floor(c.start / day) * day, e0 = Math.ceil(c.end / day) * day;
  chartBodies.forEach((body, i) => timeChart(body, c.charts[["deployment", "model"][i]], { start: s0, end: e0, unit: chartUnit, chart: "bar", legend: true, onZoom: zoomTo }));
  box.dataset.ready = "1";
}

// --- router ------------------------------------------------------------------------------------------
async function render(quiet) {
  const seq = ++renderSeq;
  syncChrome();
  scheduleRefresh();
  const { path } = route();
  hideTip();
  // "ready" belongs to the route being drawn: cleared here, set by that route's render once it is on screen.
  const view = $("view");
  view.dataset.ready = "";
  view.dataset.route = path;
  const parts = path.split("/");
  if (parts[0] === "dash") return renderDashboard(parts[1], seq, quiet);
  if (parts[0] === "discover") return renderDiscover(seq);
  if (parts[0] === "doc") return renderDocument(parts[1], parts.slice(2).join("/"), seq);
  if (parts[0] === "sql") return renderSql();
  if (parts[0] === "alerts") return renderAlerts(seq);
  if (parts[0] === "slo") return renderSlo(seq);
  if (parts[0] === "traces") return renderTraces(seq);
  if (parts[0] === "span") return renderSpan(parts.slice(1).join("/"), seq);
  location.hash = href("dash/overview", sharedParams());
}

async function start() {
  setupChrome();
  try { META = await api("/api/dashboards"); }
  catch (e) { $("view").replaceChildren(el("p", { class: "error", text: e.message })); return; }
  window.addEventListener("hashchange", () => render());
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => render(true), 200); });
  await loadOptions();
  render();
}
document.addEventListener("DOMContentLoaded", start);
