// The charts of one experiment's page, drawn by Plotly (served by the service itself).
// Data: GET /v1/experiments/{id}/charts (`sweeps.reporting.charts`). While the experiment runs, every
// `result` event of its stream schedules a redraw (at most one a second), so the phase
// diagram and the learning curves fill in as trials report. `#charts` carries
// data-updates (redraws so far) and data-points (reports drawn) for tests and scripts.
"use strict";

const root = document.getElementById("charts");
const CONFIG = { responsive: true, displaylogo: false };
const short = (field) => field.split(".").pop();
const isNum = (vals) => vals.length > 0 && vals.every((v) => typeof v === "number");
const fmt = (v) => (typeof v === "number" ? String(+v.toPrecision(4)) : String(v ?? ""));

function xAxis(field, values) {
  const num = isNum(values);
  const pos = num && Math.min(...values) > 0;
  const wide = pos && Math.max(...values) / Math.min(...values) >= 10;
  return { title: { text: field }, type: wide ? "log" : num ? "linear" : "category" };
}

function groupBy(rows, key) {
  const groups = new Map();
  for (const r of rows) {
    const k = key(r);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  return groups;
}

function drawPhase(d) {
  const el = document.getElementById("phase");
  const x = d.phase.x;
  const rows = d.phase.rows;
  if (!x || rows.length === 0) {
    el.textContent = "No trial has reported yet.";
    return;
  }
  const others = d.axes.filter((a) => a !== x);
  const label = (r) => others.map((a) => `${short(a)}=${fmt(r[a])}`).join(", ");
  const traces = [];
  for (const [key, group] of groupBy(rows, label)) {
    group.sort((a, b) => (a[x] < b[x] ? -1 : a[x] > b[x] ? 1 : 0));
    const suffix = key ? ` (${key})` : "";
    const text = group.map((r) => `n=${r.n}`);
    traces.push({
      x: group.map((r) => r[x]), y: group.map((r) => r.metric_mean), text, name: d.metric + suffix,
      mode: "lines+markers", legendgroup: key,
      error_y: { type: "data", array: group.map((r) => r.metric_std || 0), visible: true },
    });
    if (d.train_metric) {
      traces.push({
        x: group.map((r) => r[x]), y: group.map((r) => r.train_mean), text,
        name: d.train_metric + suffix, mode: "lines+markers", legendgroup: key,
        line: { dash: "dot" },
        error_y: { type: "data", array: group.map((r) => r.train_std || 0), visible: true },
      });
    }
  }
  const layout = {
    margin: { t: 30 }, height: 380, xaxis: xAxis(x, rows.map((r) => r[x])),
    yaxis: { title: { text: "accuracy (mean ± std over seeds)" }, range: [0, 1.02] },
    shapes: [], legend: { orientation: "h", y: -0.25 },
  };
  const th = d.threshold;
  if (th || d.frontier) {
    const level = (th || d.frontier).level;
    layout.shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: level, y1: level,
                         line: { dash: "dash", color: "#888" } });
  }
  if (th) {
    const [lo, hi] = th.interval || [null, null];
    if (lo !== null && hi !== null) {  // the crossing's 95 % interval (bootstrap over seeds)
      layout.shapes.push({ type: "rect", yref: "paper", y0: 0, y1: 1, x0: lo, x1: hi,
                           fillcolor: "rgba(255,160,0,0.2)", line: { width: 0 } });
    }
  }
  Plotly.react(el, traces, layout, CONFIG);
}

function drawThreshold(d) {
  const el = document.getElementById("threshold");
  const th = d.threshold;
  if (!th) return;
  el.hidden = false;
  const probes = th.probes.map((p) => `${fmt(p.value)}: ${fmt(p.mean)} (n=${p.n})`).join("; ");
  let answer;
  if (th.estimate === null) answer = `no finished probe reaches ${th.metric} ≥ ${th.level} yet`;
  else if (th.low === null) answer = `${short(th.axis)}* ≤ ${fmt(th.estimate)} (the lowest probe passes)`;
  else answer = `${short(th.axis)}* = ${fmt(th.estimate)} in (${fmt(th.low)}, ${fmt(th.high)}]`;
  const [lo, hi] = th.interval || [null, null];
  const crossing = th.crossing === null ? "" : `; the level is crossed at ${fmt(th.crossing)}` +
    ` (95 % interval ${lo === null ? "below the probes" : fmt(lo)}–${hi === null ? "above the probes" : fmt(hi)})`;
  el.textContent = `Threshold estimate: ${answer}${crossing}. Probes (${th.metric} mean): ${probes}.`;
}

// The phase boundary of a threshold search with `over` (sweeps/reporting/frontier.py): I* at
// each budget with its 95 % interval as error bars, on log-log axes, and the fitted power law
// with its slope and interval in the legend. A budget whose threshold lies outside its bracket
// is a triangle at the bracket end it passed (up: above, down: below).
function drawFrontier(d) {
  const fr = d.frontier;
  if (!fr) return;
  document.getElementById("frontier-section").hidden = false;
  const inside = fr.points.filter((p) => p.estimate !== null);
  const outside = fr.points.filter((p) => p.outside !== null);
  const traces = [{
    x: inside.map((p) => p.budget), y: inside.map((p) => p.estimate), mode: "markers",
    name: `${short(fr.axis)}* (crossing of ${fr.level}, 95 % interval)`,
    text: inside.map((p) => `trials ${p.trials}, search answer ${fmt(p.answer)}`),
    error_y: {
      type: "data", symmetric: false, visible: true,
      array: inside.map((p) => (p.high === null ? 0 : p.high - p.estimate)),
      arrayminus: inside.map((p) => (p.low === null ? 0 : p.estimate - p.low)),
    },
  }];
  if (outside.length) {
    traces.push({
      x: outside.map((p) => p.budget), y: outside.map((p) => (p.outside === "above" ? p.low : p.high)),
      mode: "markers", name: "outside the bracket",
      marker: { symbol: outside.map((p) => (p.outside === "above" ? "triangle-up" : "triangle-down")), size: 11 },
    });
  }
  const s = fr.slope;
  const slope = s.estimate === null ? "n/a"
    : `${fmt(s.estimate)}` + (s.low === null ? "" : ` [${fmt(s.low)}, ${fmt(s.high)}]`);
  if (fr.line) {
    traces.push({ x: fr.line.x, y: fr.line.y, mode: "lines", name: `fit: slope ${slope}`,
                  line: { dash: "dot" } });
  }
  Plotly.react("frontier", traces, {
    margin: { t: 40 }, height: 380, title: { text: `${short(fr.axis)}* against ${short(fr.over)}: slope ${slope}` },
    // the budgets themselves as the x ticks; plain numbers, not 2×10⁴
    xaxis: { title: { text: fr.over }, type: "log", tickvals: fr.points.map((p) => p.budget),
             ticktext: fr.points.map((p) => p.budget.toLocaleString("en")) },
    yaxis: { title: { text: `${short(fr.axis)}* (${short(fr.metric)} = ${fr.level})` }, type: "log",
             tickformat: "~g" },
    legend: { orientation: "h", y: -0.3 },
  }, CONFIG);
  const lines = fr.points.map((p) => {
    if (p.outside === "above") return `${fmt(p.budget)}: above the bracket (> ${fmt(p.low)})`;
    if (p.outside === "below") return `${fmt(p.budget)}: at or below ${fmt(p.high)}`;
    return `${fmt(p.budget)}: ${fmt(p.estimate)} [${p.low === null ? "open" : fmt(p.low)}, ` +
      `${p.high === null ? "open" : fmt(p.high)}] (${p.trials} trials)`;
  });
  const left = s.undefined ? `, ${s.undefined} of ${s.n_boot} resamples left out` : "";
  const cost = fr.grid_trials === null ? ""
    : ` Trials: ${fr.trials} against ${fr.grid_trials} for a grid at the same step at every budget.`;
  document.getElementById("frontier-text").textContent =
    `${short(fr.axis)}* by ${short(fr.over)}: ${lines.join("; ")}. Slope of log ${short(fr.axis)}* ` +
    `on log ${short(fr.over)}: ${slope}${left}.${cost}`;
}

function drawHeatmap(d) {
  const el = document.getElementById("heatmap");
  const hm = d.heatmap;
  if (!hm) return;
  el.hidden = false;
  Plotly.react(el, [{
    type: "heatmap", x: hm.x.map(String), y: hm.y.map(String), z: hm.z, zmin: 0, zmax: 1,
    colorscale: "Viridis", colorbar: { title: { text: d.metric } },
  }], {
    margin: { t: 30 }, height: 320, title: { text: `${d.metric} (mean over seeds)` },
    xaxis: { title: { text: hm.x_axis }, type: "category" },
    yaxis: { title: { text: hm.y_axis }, type: "category" },
  }, CONFIG);
}

function drawCurves(d) {
  const acc = [];
  const loss = [];
  for (const c of d.curves) {
    const name = `${c.label} [${c.trial_id}]`;
    acc.push({ x: c.step, y: c.metric, name, legendgroup: c.trial_id, mode: "lines+markers" });
    if (c.train) {
      acc.push({ x: c.step, y: c.train, name: name + " train", legendgroup: c.trial_id,
                 mode: "lines", line: { dash: "dot" }, showlegend: false });
    }
    loss.push({ x: c.step, y: c.loss, name, legendgroup: c.trial_id, mode: "lines+markers" });
  }
  const base = { margin: { t: 30 }, height: 340, xaxis: { title: { text: "step" } },
                 showlegend: d.curves.length <= 24, legend: { font: { size: 10 } } };
  Plotly.react("curves", acc, { ...base, title: { text: `${d.metric} (dotted: ${d.train_metric || "no training-rule twin"})` },
                                yaxis: { range: [0, 1.02] } }, CONFIG);
  Plotly.react("loss", loss, { ...base, title: { text: "train_loss" },
                               yaxis: { type: "log" } }, CONFIG);
  return d.curves.reduce((n, c) => n + c.step.length, 0);
}

function drawTrials(d) {
  const body = document.querySelector("#trials tbody");
  body.replaceChildren(...d.trials.map((t) => {
    const tr = document.createElement("tr");
    tr.className = "trial state-" + t.state;
    tr.dataset.trial = t.trial_id;
    const params = Object.entries(t.params).map(([k, v]) => `${short(k)}=${fmt(v)}`).join(", ");
    const note = t.error ? t.error : t.reused_from ? `reused from ${t.reused_from}` : "";
    for (const text of [t.trial_id, t.state, params, note]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    if (t.error) tr.lastChild.className = "error";
    if (t.reused_from) tr.lastChild.className = "reused";
    return tr;
  }));
}

async function refresh() {
  const r = await fetch(`/v1/experiments/${root.dataset.id}/charts`);
  if (!r.ok) return;
  const d = await r.json();
  drawPhase(d);
  drawThreshold(d);
  drawFrontier(d);
  drawHeatmap(d);
  const points = drawCurves(d);
  drawTrials(d);
  root.dataset.points = String(points);
  root.dataset.updates = String(Number(root.dataset.updates || "0") + 1);
}

async function follow() {
  // the final statuses come from the API (GET /v1/lifecycle), not from a list kept here
  const lc = await (await fetch("/v1/lifecycle")).json();
  if (lc.experiment.terminal.includes(root.dataset.status)) return;
  const es = new EventSource(`/v1/experiments/${root.dataset.id}/events`);
  let timer = null;
  es.addEventListener("result", () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; refresh(); }, 1000);
  });
  es.addEventListener("status", () => { es.close(); refresh(); });
}

if (root) {
  refresh();
  follow();
}
